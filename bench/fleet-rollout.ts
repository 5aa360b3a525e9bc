/**
 * A staged rollout at scale. Prints figures and ratios; asserts nothing.
 *
 *   node --import tsx bench/fleet-rollout.ts [--devices 10000] [--connections 8] [--fail 0.005]
 *
 * One real Mosquitto, one `berth fleet serve --broker …` process (the built dist/berth.mjs), the device
 * simulator (test/helpers/device-sim.ts, shared connections) in this process, every device in group g1, a
 * share of them (`--fail`, default 0.5 %) crashing any new version in its health window. Measured:
 *
 *   reference: `berth fleet deploy v1 --group g1` — one group target — from the command until every device
 *              runs it healthy (read from the server's fleet.db), with the server's CPU time and RSS over it;
 *   rollout:   `berth fleet rollout create v2 --group g1 --phases 1%,10%,100% --success-threshold 98
 *              --error-threshold 2` from the command until the rollout succeeded and its phase overrides were
 *              cleared; the server's CPU time (utime+stime from /proc) and RSS over it; and, counted by an
 *              observer subscribed to every target topic (live deliveries only), the content publishes per
 *              device for the devices that end on v2 (aim: exactly 1 — their override, or the group target).
 * State dirs live on /dev/shm.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { connectAsync } from 'mqtt';
import { openDatabase } from '../src/db/database.js';
import { keygen, resolvePublicKey } from '../src/fleet/keys.js';
import { exec } from '../src/lib/exec.js';
import { parseTopic, prefix } from '../src/transport/topics.js';
import { startSimulator } from '../test/helpers/device-sim.js';
import { buildMultiArchImage } from '../test/helpers/images.js';
import { Mosquitto } from '../test/helpers/mosquitto.js';

const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : def;
};
const DEVICES = Number(arg('devices', '10000'));
const CONNECTIONS = Number(arg('connections', '8'));
const FAIL = Number(arg('fail', '0.005'));
const FLEET = 'bench';
const BIN = path.resolve(import.meta.dirname, '..', 'dist', 'berth.mjs');
const TICK = 100; // clock ticks per second of /proc/<pid>/stat (Linux USER_HZ)

const root = await fsp.mkdtemp('/dev/shm/berth-fleet-rollout-');
const fleetDir = path.join(root, 'fleet');
const procs: ChildProcess[] = [];
let mosquitto: Mosquitto | undefined;

function rssMiB(pid: number): { rss: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICK; // utime, stime
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main(): Promise<void> {
  mosquitto = await Mosquitto.start(['max_queued_messages 100000']);
  const key = await keygen(fleetDir);
  const cli = async (a: string[]) => {
    const r = await exec(process.execPath, [BIN, '--state-dir', fleetDir, '--log-level', 'warn', ...a], {
      timeoutMs: 600_000,
    });
    return r;
  };
  for (const tag of ['app:1', 'app:2']) {
    const img = buildMultiArchImage(
      path.join(root, tag.replace(':', '-')),
      [{ architecture: 'amd64' }],
      tag.replace(':', ''),
    );
    await cli(['fleet', 'push', img.layout, '--tag', tag]);
  }
  const target = (tag: string) =>
    JSON.stringify({ apps: { web: { services: { main: { image: tag } } } }, images: [tag] });
  await fsp.writeFile(path.join(root, 'v1.json'), target('app:1'));
  await fsp.writeFile(path.join(root, 'v2.json'), target('app:2'));

  let out = '';
  const serve = spawn(
    process.execPath,
    [
      ...[BIN, '--state-dir', fleetDir, '--log-level', 'warn', 'fleet', 'serve', '--fleet', FLEET],
      ...['--broker', mosquitto.url, '--http', 'off'],
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  procs.push(serve);
  serve.stdout!.on('data', (d) => (out += d));
  serve.stderr!.on('data', (d) => (out += d));
  const pid = serve.pid!;
  const db = openDatabase(path.join(fleetDir, 'fleet.db'), { readonly: true, integrityCheck: false });
  const one = <T>(sql: string, ...p: unknown[]) => db.prepare(sql).get(...p) as T;

  const sim = await startSimulator({
    url: mosquitto.url,
    fleet: FLEET,
    count: DEVICES,
    connections: CONNECTIONS,
    groups: () => ['g1'],
    publicKey: await resolvePublicKey(key.publicFile),
    failShare: FAIL,
    applyMs: 50,
    windowMs: 200,
  });
  await sim.ready();
  await until(
    () => one<{ n: number }>('SELECT COUNT(*) AS n FROM devices WHERE online = 1').n >= DEVICES,
    300_000,
    `ingest\n${out}`,
  );

  // the reference: one group target to everyone
  const healthyOn = (version: number) =>
    one<{ n: number }>(
      `SELECT COUNT(*) AS n FROM devices WHERE target_status = 'healthy' AND target_kind = 'group' AND target_version = ?`,
      version,
    ).n;
  let cpu0 = cpuSeconds(pid);
  let t0 = performance.now();
  await cli(['fleet', 'deploy', path.join(root, 'v1.json'), '--group', 'g1']);
  await until(() => healthyOn(1) >= DEVICES, 600_000, 'v1 everywhere');
  const ref = { s: (performance.now() - t0) / 1000, cpu: cpuSeconds(pid) - cpu0, rss: rssMiB(pid) };

  // the observer, from now on
  const link = await connectAsync(mosquitto.url, {
    clientId: `bench-observer-${process.pid}`,
    reconnectPeriod: 0,
  });
  const content = new Map<string, number>();
  const clears = new Map<string, number>();
  link.on('message', (topic, payload, packet) => {
    if (packet.retain || payload.length === 0) return;
    const p = parseTopic(topic);
    const k =
      p?.kind === 'device' && p.channel === 'target'
        ? p.deviceId
        : p?.kind === 'group-target'
          ? `group ${p.group}`
          : undefined;
    if (!k || k.startsWith('group berth-sync-')) return;
    const body = JSON.parse(payload.toString()) as { target: { clear?: true } };
    const m = body.target.clear ? clears : content;
    m.set(k, (m.get(k) ?? 0) + 1);
  });
  await link.subscribeAsync([`${prefix(FLEET)}/devices/+/target`, `${prefix(FLEET)}/groups/+/target`], {
    qos: 0,
  });

  cpu0 = cpuSeconds(pid);
  t0 = performance.now();
  const created = await cli([
    ...['fleet', 'rollout', 'create', path.join(root, 'v2.json'), '--group', 'g1'],
    ...['--phases', '1%,10%,100%', '--success-threshold', '98', '--error-threshold', '2', '--json'],
  ]);
  const id = (JSON.parse(created.stdout) as { id: number }).id;
  await until(
    () => {
      const r = one<{ state: string; settle: string }>('SELECT state, settle FROM rollouts WHERE id = ?', id);
      if (r.state === 'aborted') throw new Error(`rollout aborted:\n${out}`);
      return r.state === 'succeeded' && r.settle === 'done';
    },
    900_000,
    'rollout succeeded',
  );
  const roll = { s: (performance.now() - t0) / 1000, cpu: cpuSeconds(pid) - cpu0, rss: rssMiB(pid) };
  await new Promise((r) => setTimeout(r, 1000)); // the observer's last copies

  const rows = db
    .prepare('SELECT device_id, phase, via_group, outcome FROM rollout_devices WHERE rollout_id = ?')
    .all(id) as Array<{ device_id: string; phase: number; via_group: number; outcome: string }>;
  const groupContent = content.get('group g1') ?? 0;
  const perDevice: number[] = [];
  for (const r of rows) {
    if (r.outcome !== 'converged') continue;
    perDevice.push((content.get(r.device_id) ?? 0) + (r.via_group ? groupContent : 0));
  }
  const hist = new Map<number, number>();
  for (const n of perDevice) hist.set(n, (hist.get(n) ?? 0) + 1);
  const phases = [1, 2, 3].map((p) => rows.filter((r) => r.phase === p).length);
  const failed = rows.filter((r) => r.outcome === 'failed').length;
  await link.endAsync();
  await sim.stop();
  db.close();

  const f = (n: number) => n.toFixed(2);
  console.log(
    `devices ${DEVICES} (${CONNECTIONS} simulator connections), ${FAIL * 100} % failing; machine shared with other engineers`,
  );
  console.log(
    `reference: deploy --group (one group target): ${f(ref.s)} s to all healthy, server CPU ${f(ref.cpu)} s, RSS ${f(ref.rss.rss)} MiB`,
  );
  console.log(
    `rollout 1%,10%,100% (phases of ${phases.join(', ')}): create → succeeded and settled ${f(roll.s)} s = ${f(roll.s / ref.s)}× the reference; ` +
      `server CPU ${f(roll.cpu)} s = ${f(roll.cpu / Math.max(ref.cpu, 0.01))}×; RSS ${f(roll.rss.rss)} MiB (peak ${f(roll.rss.hwm)} MiB)`,
  );
  console.log(
    `targets published per device ending on v2 (${perDevice.length} devices, ${failed} failed): ` +
      [...hist]
        .sort((a, b) => a[0] - b[0])
        .map(([n, c]) => `${n}: ${c}`)
        .join(', ') +
      `; group target publishes ${groupContent}; overrides cleared at success ${[...clears.values()].reduce((a, b) => a + b, 0)} (no content)`,
  );
  console.log(
    `RESULT fleet-rollout devices=${DEVICES} rollout_s=${f(roll.s)} reference_s=${f(ref.s)} cpu_s=${f(roll.cpu)} ` +
      `rss_peak_mib=${f(roll.rss.hwm)} per_device_1=${hist.get(1) ?? 0} per_device_other=${perDevice.length - (hist.get(1) ?? 0)}`,
  );
}

try {
  await main();
} finally {
  for (const p of procs) {
    if (p.exitCode === null) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
      if (p.exitCode === null) p.kill('SIGKILL');
    }
  }
  await mosquitto?.stop();
  await fsp.rm(root, { recursive: true, force: true });
}
