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
import { buildTarget, publishTarget } from '../src/fleet/deploy.js';
import { keygen, loadFleetPrivateKey, resolvePublicKey } from '../src/fleet/keys.js';
import { FleetServer } from '../src/fleet/server.js';
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
const server = new FleetServer({
  fleet: 'bench',
  db: fleetDb,
  store: fleetStore,
  privateKey: await loadFleetPrivateKey(fleetDir),
  log,
  listen: { port: 0 },
});
await server.start();
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
  server.registry.addImage(fleetStore, res.images[0]!.name, res.images[0]!.digest, res.images[0]!.mediaType);
}

const db = openDatabase(path.join(stateDir, 'berth.db'));
const store = new ContentStore(path.join(stateDir, 'content'));
const connection = new AgentConnection({
  fleet: 'bench',
  deviceId: 'bench-dev',
  groups: [],
  platform: hostPlatform(),
  agentVersion: 'bench',
  mqtt: { url: server.brokerUrl, protocolVersion: 4 },
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
const key = await loadFleetPrivateKey(fleetDir);
const rows: Array<Record<string, string | number>> = [];
try {
  for (const tag of tags) {
    const before = { ...device.images.counters };
    const signed = buildTarget(
      server.registry,
      'bench',
      { kind: 'device', id: 'bench-dev' },
      {
        apps: {
          app: { services: { web: { image: `sample:${tag}`, networkMode: 'none', stopTimeoutMs: 100 } } },
        },
        images: [`sample:${tag}`],
      },
      key,
    );
    const t0 = performance.now();
    await publishTarget(server.conn!, signed);
    server.registry.recordDeployment(signed);
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
