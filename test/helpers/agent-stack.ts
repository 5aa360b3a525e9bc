/**
 * The whole agent stack, real, in this process: a fleet server with its embedded MQTT broker, sample
 * images (scripts/sample-image.sh, busybox) pushed to it, and one device agent as `berth agent` builds it
 * (startDeviceAgent: overlay snapshots, berth-runtime + berth-monitor, reconciler, reporter, outbox),
 * plus a watcher on the broker that keeps the device's events and its retained reported state.
 *
 *   const work = await tempDir(t, 'x');
 *   await pushSampleImages(fleet, await buildSampleImages(work, ['v1', 'v2']));   // sample:v1, sample:v2
 *   const stack = await startAgentStack(t, fleet, { deviceId, agent: {...} });
 *   await stack.deploy({ app: { services: { web: { image: 'sample:v1' } } } }, ['sample:v1']);
 *
 * Teardown (even on failure): the agent stops, every container it made is removed (rootfs unmounted).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import {
  type DeviceAgent,
  type DeviceAgentOptions,
  startDeviceAgent,
} from '../../src/agent/adapters/device-agent.js';
import { AgentConnection } from '../../src/agent/connection.js';
import { loadConfig } from '../../src/config/load.js';
import { importImage } from '../../src/content/import.js';
import { ContentStore } from '../../src/content/store.js';
import type { ReportedState } from '../../src/core/report.js';
import type { TargetInput } from '../../src/core/target.js';
import { openDatabase } from '../../src/db/database.js';
import { resolvePublicKey } from '../../src/fleet/keys.js';
import { exec } from '../../src/lib/exec.js';
import { hostPlatform } from '../../src/oci/platform.js';
import { HostClaims } from '../../src/runtime/network/host-claims.js';
import { recordedNetwork } from '../../src/runtime/network/resolve.js';
import { MqttConnection } from '../../src/transport/connection.js';
import { deviceTopic } from '../../src/transport/topics.js';
import { FLEET, type FleetSide, tempDir, testLog } from './fleet-harness.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

/**
 * Sample images, one OCI layout per tag (tag `<tag>` in `<dir>/<tag>`), all on one busybox base layer.
 * `padBytes` adds a layer of that many random bytes per tag, so each version has a distinct blob that
 * takes measurable time to fetch.
 */
export async function buildSampleImages(
  dir: string,
  tags: readonly string[],
  opts: { padBytes?: number } = {},
): Promise<Record<string, string>> {
  const all = path.join(dir, 'all');
  const out: Record<string, string> = {};
  for (const tag of tags) {
    await exec('bash', [path.join(ROOT, 'scripts/sample-image.sh'), all, tag, `hello ${tag}`]);
    if (opts.padBytes) {
      const bundle = path.join(dir, `bundle-${tag}`);
      await exec('umoci', ['unpack', '--image', `${all}:${tag}`, bundle]);
      await fsp.writeFile(path.join(bundle, 'rootfs', `pad-${tag}`), randomBytes(opts.padBytes));
      await exec('umoci', ['repack', '--image', `${all}:${tag}`, bundle]);
      await fsp.rm(bundle, { recursive: true, force: true });
    }
    out[tag] = path.join(dir, tag);
    await exec('skopeo', ['--insecure-policy', 'copy', '-q', `oci:${all}:${tag}`, `oci:${out[tag]}:${tag}`]);
  }
  return out;
}

/** Manifest, config and layers of a single-image layout, as descriptors. */
export async function layoutBlobs(layout: string): Promise<Array<{ digest: string; size: number }>> {
  const index = JSON.parse(await fsp.readFile(path.join(layout, 'index.json'), 'utf8'));
  const m = index.manifests[0];
  const manifest = JSON.parse(
    await fsp.readFile(path.join(layout, 'blobs/sha256', m.digest.slice(7)), 'utf8'),
  );
  return [{ digest: m.digest, size: m.size }, manifest.config, ...manifest.layers];
}

/** Import each layout into the fleet's store and list it in the fleet's images as `sample:<tag>`. */
export async function pushSampleImages(fleet: FleetSide, layouts: Record<string, string>): Promise<void> {
  for (const [tag, layout] of Object.entries(layouts)) {
    const res = await importImage(
      layout,
      { store: fleet.store, db: fleet.db },
      { platform: hostPlatform(), allPlatforms: true, tag: `sample:${tag}` },
    );
    const img = res.images[0]!;
    await fleet.addImage(img.name, img.digest, img.mediaType);
  }
}

export interface StackEvent {
  type: string;
  at?: number;
  [k: string]: unknown;
}

export interface AgentStack {
  device: DeviceAgent;
  deviceId: string;
  stateDir: string;
  store: ContentStore;
  /** events the device published, in order (read from the broker) */
  events: StackEvent[];
  /** the device's latest retained reported state (read from the broker) */
  reported(): ReportedState | undefined;
  /** sign and publish a target for this device, as `berth fleet deploy` does; resolves with its version */
  deploy(apps: TargetInput['apps'], images: string[]): Promise<number>;
  /** whether a container of `image` is running */
  running(image: string): Promise<boolean>;
}

export async function startAgentStack(
  t: ExecutionContext,
  fleet: FleetSide,
  opts: {
    deviceId: string;
    agent?: DeviceAgentOptions['agent'];
    /** config on top of the defaults (e.g. a private bridge and subnet for bridge-mode services) */
    config?: Record<string, unknown>;
    /** the fleet key the device trusts (default: this fleet's); another fleet's makes it refuse every target */
    publicKeyFile?: string;
  },
): Promise<AgentStack> {
  const { deviceId } = opts;
  const stateDir = await tempDir(t, `device-${deviceId}`);
  const config = loadConfig({ env: {}, flags: { ...opts.config, stateDir } });
  const db = openDatabase(path.join(stateDir, 'berth.db'));
  const store = new ContentStore(path.join(stateDir, 'content'));
  const log = testLog();
  const connection = new AgentConnection({
    fleet: FLEET,
    deviceId,
    groups: [],
    platform: hostPlatform(),
    agentVersion: 'test',
    mqtt: {
      url: fleet.server.brokerUrl,
      protocolVersion: 4,
      backoff: { initialMs: 50, maxMs: 500 },
      ...(await fleet.credentials(deviceId)),
    },
    store,
    db,
    publicKey: await resolvePublicKey(opts.publicKeyFile ?? fleet.publicKeyFile),
    log,
  });
  let device: DeviceAgent | undefined;
  // registered before the temp dir's removal runs (ava runs teardowns last-in first-out)
  t.teardown(async () => {
    await device?.stop().catch(() => undefined);
    if (device)
      for (const c of await device.manager.list({ all: true }))
        await device.manager.remove(c.id, { force: true }).catch(() => undefined);
    // the host-wide subnet claim goes with the state dir (src/runtime/network/host-claims.ts)
    const net = await recordedNetwork(stateDir);
    if (net) await new HostClaims(config.runDir).releaseSubnet(net.subnet, stateDir);
    db.close();
  });

  const watch = await watchDeviceOn<ReportedState>(
    t,
    fleet.server.brokerUrl,
    deviceId,
    fleet.server.fleetAccount,
  );

  device = await startDeviceAgent({
    db,
    store,
    config,
    stateDir,
    log,
    connection,
    fleet: FLEET,
    deviceId,
    agent: { metricsIntervalMs: 60_000, ...opts.agent },
  });
  const started = device;
  return {
    device: started,
    deviceId,
    stateDir,
    store,
    events: watch.events,
    reported: watch.state,
    deploy: async (apps, images) =>
      (await fleet.deploy({ kind: 'device', id: deviceId }, { apps, images })).version,
    running: async (image) =>
      (await started.engine.list()).some((c) => c.image === image && c.status === 'running'),
  };
}

/** What the fleet sees of one device: its events in order and its latest retained state. */
export interface DeviceWatch<S> {
  events: StackEvent[];
  state(): S | undefined;
}

/**
 * Subscribe to a device's event and state topics on the broker at `url` (closed at teardown); `account`:
 * the fleet's own (the embedded broker lets no one in without credentials).
 */
export async function watchDeviceOn<S>(
  t: ExecutionContext,
  url: string,
  deviceId: string,
  account?: { username: string; password: string },
): Promise<DeviceWatch<S>> {
  const watcher = new MqttConnection({
    url,
    protocolVersion: 4,
    ...account,
    clientId: `watch-${deviceId}`,
    log: testLog(),
    backoff: { initialMs: 50, maxMs: 500 },
  });
  const events: StackEvent[] = [];
  let reported: S | undefined;
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
  return { events, state: () => reported };
}
