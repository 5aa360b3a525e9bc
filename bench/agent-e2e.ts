/**
 * Agent end to end: time from a target published to its container running, split into fetch (blob
 * transfer over MQTT), unpack (layers → overlay snapshots) and the rest (plan, stop old, create, start).
 * Prints figures; asserts nothing. Run as root (real runtime, mounts):
 *
 *   node --import tsx bench/agent-e2e.ts
 *
 * Fleet server with its embedded broker and one agent in this process, state dirs on /dev/shm (the root
 * FS here is erratic for benchmarks). v1 is a cold deploy (busybox base + app layer), v2 an update that
 * changes the app layer only.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { startDeviceAgent } from '../src/agent/adapters/device-agent.js';
import { AgentConnection } from '../src/agent/connection.js';
import { loadConfig } from '../src/config/load.js';
import { importImage } from '../src/content/import.js';
import { ContentStore } from '../src/content/store.js';
import { openDatabase } from '../src/db/database.js';
import { describeFleetImage } from '../src/fleet/image-record.js';
import { keygen, loadFleetPrivateKey, resolvePublicKey } from '../src/fleet/keys.js';
import { FleetServer } from '../src/fleet/server.js';
import { FLEET_DB_FILE, openFleetStores } from '../src/fleet/store/index.js';
import { exec } from '../src/lib/exec.js';
import { silentLogger } from '../src/lib/logger.js';
import { hostPlatform } from '../src/oci/platform.js';

const root = await fsp.mkdtemp('/dev/shm/berth-bench-e2e-');
const fleetDir = path.join(root, 'fleet');
const stateDir = path.join(root, 'device');
await fsp.mkdir(fleetDir);
await fsp.mkdir(stateDir);
const log = silentLogger();
const fleetDb = openDatabase(path.join(fleetDir, 'berth.db'));
const fleetStore = new ContentStore(path.join(fleetDir, 'content'));
const k = await keygen(fleetDir);
const stores = openFleetStores(path.join(fleetDir, FLEET_DB_FILE));
const server = new FleetServer({
  fleet: 'bench',
  db: fleetDb,
  stores,
  store: fleetStore,
  privateKey: await loadFleetPrivateKey(fleetDir),
  log,
  listen: { port: 0 },
});
await server.start();
/** The device's broker credentials, through an enrollment token as a real device gets them. */
async function enrolled(deviceId: string): Promise<{ username?: string; password?: string }> {
  const { token } = server.services.enrollment.create({ expiresInMs: 60_000, maxUses: 1 });
  const e = await server.services.enrollment.exchange({ token, deviceId });
  return { username: e.username, password: e.password };
}
const tags = ['v1', 'v2'];
for (const tag of tags) {
  await exec('bash', ['scripts/sample-image.sh', path.join(root, 'all'), tag, `bench ${tag}`]);
  const layout = path.join(root, tag);
  await exec('skopeo', ['--insecure-policy', 'copy', '-q', `oci:${root}/all:${tag}`, `oci:${layout}:${tag}`]);
  const res = await importImage(
    layout,
    { store: fleetStore, db: fleetDb },
    { platform: hostPlatform(), allPlatforms: true, tag: `sample:${tag}` },
  );
  const img = res.images[0]!;
  stores.images.put(await describeFleetImage(fleetStore, img.name, img.digest, img.mediaType));
}

const db = openDatabase(path.join(stateDir, 'berth.db'));
const store = new ContentStore(path.join(stateDir, 'content'));
const connection = new AgentConnection({
  fleet: 'bench',
  deviceId: 'bench-dev',
  groups: [],
  platform: hostPlatform(),
  agentVersion: 'bench',
  mqtt: { url: server.brokerUrl, protocolVersion: 4, ...(await enrolled('bench-dev')) },
  store,
  db,
  publicKey: await resolvePublicKey(k.publicFile),
  log,
});
const device = await startDeviceAgent({
  db,
  store,
  config: loadConfig({ env: {}, flags: { stateDir } }),
  stateDir,
  log,
  connection,
  fleet: 'bench',
  deviceId: 'bench-dev',
  agent: { api: false, reconciler: { minDelayMs: 20, idleIntervalMs: 200, healthWindowMs: 1000 } },
});
const rows: Array<Record<string, string | number>> = [];
try {
  for (const tag of tags) {
    const before = { ...device.images.counters };
    const t0 = performance.now();
    await server.services.deploy.deploy(
      {
        apps: {
          app: { services: { web: { image: `sample:${tag}`, networkMode: 'none', stopTimeoutMs: 100 } } },
        },
        images: [`sample:${tag}`],
      },
      { kind: 'device', id: 'bench-dev' },
      { allowUnknown: true },
    );
    for (;;) {
      const list = await device.engine.list();
      if (list.some((c) => c.image === `sample:${tag}` && c.status === 'running')) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const total = performance.now() - t0;
    const fetch = device.images.counters.fetchMs - before.fetchMs;
    const unpack = device.images.counters.unpackMs - before.unpackMs;
    rows.push({
      deploy: tag === 'v1' ? 'v1 (cold)' : `${tag} (update, one layer)`,
      'bytes fetched': device.images.counters.fetchedBytes - before.fetchedBytes,
      'total ms': Math.round(total),
      'fetch ms': Math.round(fetch),
      'unpack ms': Math.round(unpack),
      'plan+stop+create+start ms': Math.round(total - fetch - unpack),
    });
    await new Promise((r) => setTimeout(r, 1500)); // let the health window close
  }
  console.table(rows);
} finally {
  await device.stop();
  for (const c of await device.manager.list({ all: true }))
    await device.manager.remove(c.id, { force: true });
  await device.snapshotter.close().catch(() => undefined);
  db.close();
  await server.stop();
  fleetDb.close();
  await fsp.rm(root, { recursive: true, force: true });
}
