/**
 * The device simulator's cost and the fleet server's ingest at scale. Prints figures and ratios; asserts
 * nothing. The machine may be shared: every figure has a reference measured in the same run.
 *
 *   node --expose-gc --import tsx bench/fleet-sim.ts [--per-device 1000] [--devices 10000] [--links 8]
 *
 * (a) connections: `--per-device` simulated devices each on its own MQTT connection (client id, last will:
 *     what a real device has) against the same number carried by `--links` shared connections; RSS growth
 *     of this process and of Mosquitto per device, and the time until every device's status, info and state
 *     are acknowledged. Why the simulator runs 10,000 devices over shared links.
 * (b) ingest: `--devices` simulated devices (shared links) announce themselves to a fleet server (this
 *     process, fleet.db on /dev/shm) through Mosquitto; time until the fleet stored every device online with
 *     its reported state, against the reference: a bare MQTT subscriber receiving the same messages.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { connectAsync } from 'mqtt';
import { ContentStore } from '../src/content/store.js';
import { openDatabase } from '../src/db/database.js';
import { keygen, loadFleetPrivateKey } from '../src/fleet/keys.js';
import { FleetServer } from '../src/fleet/server.js';
import { FLEET_DB_FILE, openFleetStores } from '../src/fleet/store/index.js';
import { silentLogger } from '../src/lib/logger.js';
import { startSimulator } from '../test/helpers/device-sim.js';
import { Mosquitto } from '../test/helpers/mosquitto.js';

const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : def;
};
const PER_DEVICE = Number(arg('per-device', '1000'));
const DEVICES = Number(arg('devices', '10000'));
const LINKS = Number(arg('links', '8'));
const FLEET = 'bench';
const log = silentLogger();
const MiB = 1024 * 1024;
const gc = () => (globalThis as { gc?: () => void }).gc?.();
const rssOf = (pid: number | undefined) => {
  if (!pid) return 0;
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
};
const settle = () => new Promise((r) => setTimeout(r, 500));
const { publicKey } = generateKeyPairSync('ed25519');

if (arg('child', '')) {
  // one mode of (a), in its own process: announce PER_DEVICE devices, report time and RSS growth as JSON
  const mode = arg('child', '');
  gc();
  const self0 = process.memoryUsage().rss;
  const t0 = performance.now();
  const sim = await startSimulator({
    url: arg('url', ''),
    fleet: FLEET,
    count: PER_DEVICE,
    idPrefix: mode,
    publicKey,
    ...(mode === 'per-device' ? { perDevice: async () => ({}) } : { connections: LINKS }),
  });
  await sim.ready();
  const ms = performance.now() - t0;
  gc();
  await settle();
  const brokerAt = Number(arg('broker-pid', '0'));
  console.log(
    JSON.stringify({ ms, self: process.memoryUsage().rss - self0, brokerAt: rssOf(brokerAt || undefined) }),
  );
  await sim.stop();
  process.exit(0);
}

const m = await Mosquitto.start([
  'max_connections -1',
  'max_queued_messages 1000000',
  'max_inflight_messages 0',
]);
try {
  // ---- (a) a connection per device, or shared links: each in a fresh process, so RSS is its own ----
  const rows: Array<{ mode: string; ms: number; self: number; broker: number }> = [];
  for (const mode of ['shared', 'per-device'] as const) {
    const broker0 = rssOf(m.pid);
    const out = execFileSync(
      process.execPath,
      [
        '--expose-gc',
        '--import',
        'tsx',
        import.meta.filename,
        '--child',
        mode,
        '--url',
        m.url,
        '--per-device',
        String(PER_DEVICE),
        '--links',
        String(LINKS),
        '--broker-pid',
        String(m.pid ?? 0),
      ],
      { encoding: 'utf8' },
    );
    const r = JSON.parse(out.trim().split('\n').pop()!) as { ms: number; self: number; brokerAt: number };
    rows.push({ mode, ms: r.ms, self: r.self, broker: r.brokerAt - broker0 });
  }
  const [shared, per] = rows as [(typeof rows)[0], (typeof rows)[0]];
  console.log(`(a) ${PER_DEVICE} simulated devices, announced (status + info + state acknowledged):`);
  for (const r of rows)
    console.log(
      `    ${r.mode.padEnd(10)} ${r.ms.toFixed(0).padStart(6)} ms; this process +${(r.self / MiB).toFixed(1)} MiB (${(r.self / PER_DEVICE / 1024).toFixed(1)} KiB/device), mosquitto +${(r.broker / MiB).toFixed(1)} MiB (${(r.broker / PER_DEVICE / 1024).toFixed(1)} KiB/device)`,
    );
  console.log(
    `    per-device/shared: time ${(per.ms / shared.ms).toFixed(1)}x, memory here ${(per.self / Math.max(1, shared.self)).toFixed(1)}x; at 10,000 devices a connection each ≈ ${(((per.self / PER_DEVICE) * 10_000) / MiB).toFixed(0)} MiB here + ${(((per.broker / PER_DEVICE) * 10_000) / MiB).toFixed(0)} MiB in the broker`,
  );

  // ---- (b) ingest of DEVICES announcing themselves ------------------------------------------------
  // reference: a bare subscriber that only counts what the broker delivers
  const counter = await connectAsync(m.url, { clientId: 'bench-count', protocolVersion: 5 });
  let got = 0;
  counter.on('message', () => got++);
  await counter.subscribeAsync(`berth/v1/${FLEET}/devices/+/+`, { qos: 1 });
  let t0 = performance.now();
  const ref = await startSimulator({
    url: m.url,
    fleet: FLEET,
    count: DEVICES,
    idPrefix: 'ref',
    publicKey,
    connections: LINKS,
  });
  await ref.ready();
  while (got < DEVICES * 3) await new Promise((r) => setTimeout(r, 20));
  const refMs = performance.now() - t0;
  await ref.stop();
  await counter.endAsync();

  const dir = await fsp.mkdtemp('/dev/shm/berth-bench-sim-');
  const k = await keygen(dir);
  void k;
  const db = openDatabase(path.join(dir, 'berth.db'));
  const stores = openFleetStores(path.join(dir, FLEET_DB_FILE));
  const server = new FleetServer({
    fleet: FLEET,
    db,
    store: new ContentStore(path.join(dir, 'content')),
    stores,
    privateKey: await loadFleetPrivateKey(dir),
    log,
    mqtt: { url: m.url, protocolVersion: 5 },
  });
  await server.start();
  gc();
  const serverRss0 = process.memoryUsage().rss;
  t0 = performance.now();
  const sim = await startSimulator({
    url: m.url,
    fleet: FLEET,
    count: DEVICES,
    idPrefix: 'dev',
    publicKey,
    connections: LINKS,
  });
  await sim.ready();
  const stored = () =>
    stores.devices.list({ online: true, idPrefix: 'dev-', limit: 1 }).total === DEVICES &&
    (
      stores.db.prepare("SELECT COUNT(*) AS n FROM device_state WHERE device_id LIKE 'dev-%'").get() as {
        n: number;
      }
    ).n === DEVICES;
  while (!stored()) await new Promise((r) => setTimeout(r, 50));
  const ingestMs = performance.now() - t0;
  console.log(
    `(b) ${DEVICES} devices over ${LINKS} links: fleet stored every status + state in ${(ingestMs / 1000).toFixed(2)} s (aim ≤ 30 s); a bare subscriber got the same ${DEVICES * 3} messages in ${(refMs / 1000).toFixed(2)} s: ratio ${(ingestMs / refMs).toFixed(2)}; ${server.ingest.stats.flushes} flushes; this process +${((process.memoryUsage().rss - serverRss0) / MiB).toFixed(0)} MiB (simulator included)`,
  );
  await sim.stop();
  await server.stop();
  stores.close();
  db.close();
  await fsp.rm(dir, { recursive: true, force: true });
} finally {
  await m.stop();
}
