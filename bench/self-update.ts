/**
 * Self-update of the x64 executable (docs/self-update.md): a packaged 0.1.0 agent is told to run 0.2.0 and
 * the time is split into download (deploy → staged) and switch + trial + commit (staged → committed and
 * running 0.2.0); the bytes the fleet sent are set against the executable's size (aim: one executable).
 * References measured in the same run, so machine load hits both sides:
 *   - download: the same executable fetched by a bare blob transfer (AgentConnection.fetcher) from the
 *     same fleet over the same broker;
 *   - switch + trial + commit: a plain restart of the committed 0.2.0 agent (SIGTERM, start, until it
 *     reports its state again).
 * Prints figures; asserts nothing. Run as root (the agent sets up its runtime):
 *
 *   node --import tsx bench/self-update.ts [--runs N]
 *
 * Builds come from test/helpers/agent-builds.ts (cached under the packaging cache). State on /dev/shm.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { AgentConnection } from '../src/agent/connection.js';
import { ContentStore } from '../src/content/store.js';
import { openDatabase } from '../src/db/database.js';
import { keygen, loadFleetPrivateKey, resolvePublicKey } from '../src/fleet/keys.js';
import { FleetServer } from '../src/fleet/server.js';
import { FLEET_DB_FILE, openFleetStores } from '../src/fleet/store/index.js';
import { silentLogger } from '../src/lib/logger.js';
import { MqttConnection } from '../src/transport/connection.js';
import { deviceTopic } from '../src/transport/topics.js';
import { agentBuild } from '../test/helpers/agent-builds.js';
import { AgentExe } from '../test/helpers/agent-exe.js';
import { Mosquitto } from '../test/helpers/mosquitto.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '1' } } });
const runs = Math.max(1, Number(values.runs) || 1);
const FLEET = 'bench';
const log = silentLogger();
const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

const [b1, b2] = await Promise.all([agentBuild('0.1.0'), agentBuild('0.2.0')]);
const mosquitto = await Mosquitto.start();
const root = await fsp.mkdtemp('/dev/shm/berth-bench-su-');
const fleetDir = path.join(root, 'fleet');
await fsp.mkdir(fleetDir);
const k = await keygen(fleetDir);
const fleetDb = openDatabase(path.join(fleetDir, 'berth.db'));
const stores = openFleetStores(path.join(fleetDir, FLEET_DB_FILE), { legacy: fleetDb });
const fleetStore = new ContentStore(path.join(fleetDir, 'content'));
const server = new FleetServer({
  fleet: FLEET,
  db: fleetDb,
  store: fleetStore,
  stores,
  privateKey: await loadFleetPrivateKey(fleetDir),
  log,
  mqtt: { url: mosquitto.url, protocolVersion: 4 },
  listen: { port: 0 },
});
await server.start();
await server.services.releases.push(b2.dir, '0.2.0');
const exeDigest = stores.releases.get('0.2.0')!.artifacts['linux/amd64']!;

interface AgentReport {
  agent?: { version: string; update?: { version: string; phase: string } };
}
/** The device's retained state, as the fleet would read it. */
async function watch(deviceId: string) {
  const conn = new MqttConnection({ url: mosquitto.url, protocolVersion: 4, clientId: `w-${deviceId}`, log });
  let state: AgentReport | undefined;
  conn.on('message', (_t, p) => {
    if (p.length) state = JSON.parse(p.toString()) as AgentReport;
  });
  await conn.start();
  await conn.subscribe(deviceTopic(FLEET, deviceId, 'state'), 1);
  return { state: () => state, close: () => conn.close(true) };
}

async function until(cond: () => boolean, ms: number, what: string): Promise<number> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now();
}

try {
  for (let run = 1; run <= runs; run++) {
    const dir = path.join(root, `device-${run}`);
    await fsp.mkdir(dir);
    const deviceId = `bench-${process.pid}-${run}`;
    const config = path.join(dir, 'config.yaml');
    await fsp.writeFile(config, 'agent:\n  healthWindowMs: 1000\n  idleIntervalMs: 1000\n');
    const agent = new AgentExe({
      exe: b1.exe,
      stateDir: path.join(dir, 'state'),
      deviceId,
      fleet: FLEET,
      broker: mosquitto.url,
      fleetKeyFile: k.publicFile,
      config,
      log: path.join(dir, 'agent.log'),
      restartAlways: false,
    });
    const w = await watch(deviceId);
    agent.start();
    await until(() => w.state()?.agent?.version === '0.1.0', 120_000, 'agent 0.1.0 reports');

    // reference 1: the executable by a bare blob transfer
    const refDir = path.join(dir, 'ref');
    const refDb = openDatabase(path.join(refDir, 'berth.db'));
    const ref = new AgentConnection({
      fleet: FLEET,
      deviceId: `${deviceId}-ref`,
      groups: [],
      platform: { os: 'linux', architecture: 'amd64' },
      agentVersion: 'ref',
      mqtt: { url: mosquitto.url, protocolVersion: 4 },
      store: new ContentStore(path.join(refDir, 'content')),
      db: refDb,
      publicKey: await resolvePublicKey(k.publicFile),
      log,
      presence: false,
    });
    await ref.start(true);
    const r0 = Date.now();
    await ref.fetcher.fetchBlob(exeDigest);
    const rawFetch = Date.now() - r0;
    await ref.stop();
    refDb.close();

    // the self-update
    const egress0 = server.blobs!.egressBytes;
    const t0 = Date.now();
    await server.services.deploy.deploy(
      { apps: {}, images: [], agent: { version: '0.2.0' } },
      { kind: 'device', id: deviceId },
      { allowUnknown: true },
    );
    const staged = await until(
      () => ['staged', 'trial', 'committed'].includes(w.state()?.agent?.update?.phase ?? ''),
      600_000,
      'staged',
    );
    const committed = await until(
      () => w.state()?.agent?.version === '0.2.0' && w.state()?.agent?.update?.phase === 'committed',
      600_000,
      'committed',
    );
    const sent = server.blobs!.egressBytes - egress0;

    // reference 2: a plain restart of the committed agent, until it reports again
    await agent.stop();
    const seen = w.state();
    const p0 = Date.now();
    agent.restart();
    await until(
      () => w.state() !== seen && w.state()?.agent?.version === '0.2.0',
      120_000,
      'restart reports',
    );
    const restart = Date.now() - p0;
    await agent.stop();
    await w.close();

    const download = staged - t0;
    const switched = committed - staged;
    console.log(
      `run ${run}: executable ${(exeDigest.size / 1048576).toFixed(1)} MiB\n` +
        `  download ${s(download)} vs bare blob transfer ${s(rawFetch)}: ${(download / rawFetch).toFixed(2)}×\n` +
        `  switch + trial + commit ${s(switched)} vs a plain agent restart ${s(restart)}: ${(switched / restart).toFixed(2)}×\n` +
        `  deploy → committed ${s(committed - t0)}; fleet sent ${sent} B = ${(sent / exeDigest.size).toFixed(3)}× the executable`,
    );
  }
} finally {
  await server.stop();
  stores.close();
  fleetDb.close();
  mosquitto.stop();
  await fsp.rm(root, { recursive: true, force: true });
}
