/**
 * End to end, all real: fleet server with its embedded MQTT broker, signed targets, blob transfer over
 * MQTT, overlay snapshots, berth-runtime (config runtime.name) + berth-monitor, the full agent
 * (reconciler, health, rollback, reporter, outbox) as `berth agent` builds it (startDeviceAgent).
 *
 *   v1 deployed → running; v2 changes the app layer only → only that layer (plus manifest and config)
 *   crosses the wire, measured by the transfer counters; v3 crashes inside its health window → the agent
 *   rolls back to v2 by itself and reports it (event + retained state, read from the broker).
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { type DeviceAgent, startDeviceAgent } from '../../src/agent/adapters/device-agent.js';
import { AgentConnection } from '../../src/agent/connection.js';
import { loadConfig } from '../../src/config/load.js';
import { importImage } from '../../src/content/import.js';
import { ContentStore } from '../../src/content/store.js';
import { openDatabase } from '../../src/db/database.js';
import { buildTarget, publishTarget } from '../../src/fleet/deploy.js';
import { loadFleetPrivateKey, resolvePublicKey } from '../../src/fleet/keys.js';
import { exec } from '../../src/lib/exec.js';
import { hostPlatform } from '../../src/oci/platform.js';
import { MqttConnection } from '../../src/transport/connection.js';
import { deviceTopic } from '../../src/transport/topics.js';
import { FLEET, startFleet, tempDir, testLog, waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

async function buildSampleImages(dir: string, tags: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const tag of tags) {
    await exec('bash', [
      path.join(ROOT, 'scripts/sample-image.sh'),
      path.join(dir, 'all'),
      tag,
      `hello ${tag}`,
    ]);
    out[tag] = path.join(dir, tag);
    await exec('skopeo', [
      '--insecure-policy',
      'copy',
      '-q',
      `oci:${dir}/all:${tag}`,
      `oci:${out[tag]}:${tag}`,
    ]);
  }
  return out;
}

function blobSizes(layout: string): Promise<Array<{ digest: string; size: number }>> {
  return (async () => {
    const index = JSON.parse(await fsp.readFile(path.join(layout, 'index.json'), 'utf8'));
    const m = index.manifests[0];
    const manifest = JSON.parse(
      await fsp.readFile(path.join(layout, 'blobs/sha256', m.digest.slice(7)), 'utf8'),
    );
    return [{ digest: m.digest, size: m.size }, manifest.config, ...manifest.layers];
  })();
}

test('deploy v1 → running; v2 moves one layer only; v3 crashes in its health window → rolled back to v2, reported', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(180_000);
  const fleet = await startFleet(t);
  const work = await tempDir(t, 'e2e-images');
  const layouts = await buildSampleImages(work, ['v1', 'v2', 'v3']);
  for (const [tag, layout] of Object.entries(layouts)) {
    const res = await importImage(
      layout,
      { store: fleet.store, db: fleet.db },
      { platform: hostPlatform(), allPlatforms: true, tag: `sample:${tag}` },
    );
    const img = res.images[0]!;
    fleet.server.registry.addImage(fleet.store, img.name, img.digest, img.mediaType);
  }

  const deviceId = `e2e-${process.pid}`;
  const stateDir = await tempDir(t, 'e2e-device');
  const db = openDatabase(path.join(stateDir, 'berth.db'));
  const store = new ContentStore(path.join(stateDir, 'content'));
  const config = loadConfig({ env: {}, flags: { stateDir } });
  const log = testLog();
  const connection = new AgentConnection({
    fleet: FLEET,
    deviceId,
    groups: [],
    platform: hostPlatform(),
    agentVersion: 'test',
    mqtt: { url: fleet.server.brokerUrl, protocolVersion: 4, backoff: { initialMs: 50, maxMs: 500 } },
    store,
    db,
    publicKey: await resolvePublicKey(fleet.publicKeyFile),
    log,
  });
  let device: DeviceAgent | undefined;
  t.teardown(async () => {
    await device?.stop().catch(() => undefined);
    if (device)
      for (const c of await device.manager.list({ all: true }))
        await device.manager.remove(c.id, { force: true }).catch(() => undefined);
    db.close();
  });

  // the fleet's view: events and the retained state the device reports
  const watcher = new MqttConnection({
    url: fleet.server.brokerUrl,
    protocolVersion: 4,
    clientId: `e2e-watch-${process.pid}`,
    log,
  });
  const events: Array<{ type: string; [k: string]: unknown }> = [];
  let reported: { target?: { version: number }; apps?: Record<string, unknown> } | undefined;
  watcher.on('message', (topic: string, payload: Buffer) => {
    if (payload.length === 0) return;
    const j = JSON.parse(payload.toString());
    if (topic.endsWith('/event')) events.push(...(Array.isArray(j) ? j : [j]));
    if (topic.endsWith('/state')) reported = j;
  });
  await watcher.start();
  t.teardown(() => watcher.close(true));
  await watcher.subscribe(deviceTopic(FLEET, deviceId, 'event'), 1);
  await watcher.subscribe(deviceTopic(FLEET, deviceId, 'state'), 1);

  device = await startDeviceAgent({
    db,
    store,
    config,
    stateDir,
    log,
    connection,
    fleet: FLEET,
    deviceId,
    agent: {
      reconciler: { healthWindowMs: 5000, minDelayMs: 100, maxDelayMs: 1000, idleIntervalMs: 300 },
      metricsIntervalMs: 60_000,
    },
  });
  const key = await loadFleetPrivateKey(fleet.dir);
  const deploy = async (tag: string, command?: string[]) => {
    const signed = buildTarget(
      fleet.server.registry,
      FLEET,
      { kind: 'device', id: deviceId },
      {
        apps: {
          hello: {
            services: {
              web: {
                image: `sample:${tag}`,
                networkMode: 'none',
                stopTimeoutMs: 500,
                ...(command ? { command } : {}),
              },
            },
          },
        },
        images: [`sample:${tag}`],
      },
      key,
    );
    await publishTarget(fleet.server.conn!, signed);
    fleet.server.registry.recordDeployment(signed);
  };
  const running = async (image: string) =>
    (await device!.engine.list()).some((c) => c.image === image && c.status === 'running');

  await deploy('v1');
  await waitFor(() => running('sample:v1'), 60_000, 'sample:v1 running');
  const v1Fetched = device.images.counters.fetchedBytes;
  t.true(v1Fetched > 1_000_000, `v1 moved the busybox layer (${v1Fetched} B)`);
  await waitFor(
    async () =>
      (await device!.engine.logs((await device!.engine.list())[0]!.id, {})).join('').includes('hello v1'),
    10_000,
    'v1 output',
  );

  await deploy('v2');
  await waitFor(
    async () => (await running('sample:v2')) && !(await running('sample:v1')),
    60_000,
    'v2',
  ).catch(async (err) => {
    t.log(JSON.stringify(await device!.agent.reporter.currentState()), await device!.engine.list(), events);
    throw err;
  });
  const v2 = device.images.counters.pulls.find((p) => p.image === 'sample:v2')!;
  const v1Blobs = new Set((await blobSizes(layouts.v1!)).map((b) => b.digest));
  const newBlobs = (await blobSizes(layouts.v2!)).filter((b) => !v1Blobs.has(b.digest));
  const newBytes = newBlobs.reduce((n, b) => n + b.size, 0);
  t.is(newBlobs.length, 3, 'manifest, config and the app layer are new; the base layer is shared');
  t.is(
    v2.fetchedBytes,
    newBytes,
    `v2 moved only its new blobs (${v2.fetchedBytes} B of ${v1Fetched} B for v1)`,
  );
  t.log(`v1 fetched ${v1Fetched} B; v2 fetched ${v2.fetchedBytes} B`);

  // only a target that passed its health window is a rollback point
  await waitFor(
    () => events.some((e) => e.type === 'rollout-healthy' && e.version === 2_000_000),
    30_000,
    'v2 healthy',
  );
  await deploy('v3', ['/bin/sh', '-c', 'echo v3 starting; sleep 1; exit 3']);
  await waitFor(() => events.some((e) => e.type === 'rollback'), 60_000, 'rollback event').catch(
    async (err) => {
      t.log(JSON.stringify(await device!.agent.reporter.currentState()), JSON.stringify(events));
      throw err;
    },
  );
  const rb = events.find((e) => e.type === 'rollback')!;
  t.is(rb.from, 3_000_000);
  t.is(rb.to, 2_000_000);
  t.regex(String(rb.reason), /health window/);
  await waitFor(async () => running('sample:v2'), 30_000, 'v2 back');
  t.false(await running('sample:v3'));
  await waitFor(() => reported?.target?.version === 2_000_000, 20_000, 'reported state after rollback');
  t.is(reported?.target?.version, 2_000_000);
});
