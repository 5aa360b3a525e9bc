import { randomBytes } from 'node:crypto';
import type { ExecutionContext, TestFn } from 'ava';
import { connectAsync } from 'mqtt';
import { AgentConnection } from '../../src/agent/connection.js';
import { resolvePublicKey } from '../../src/fleet/keys.js';
import { encodeFrame, FrameType } from '../../src/transport/frames.js';
import { encodeJson } from '../../src/transport/messages.js';
import { deviceTopic, prefix } from '../../src/transport/topics.js';
import {
  type AgentSide,
  FLEET,
  type FleetSide,
  memoryLog,
  startAgent,
  startFleet,
  testLog,
  waitFor,
} from '../helpers/fleet-harness.js';
import { putTestImage, type TestImage } from '../helpers/fleet-images.js';

/**
 * The transport conformance suite: what blob transfer must do through every broker berth supports, the
 * way test/conformance/snapshotter-suite.ts holds every snapshotter to one contract. A broker's test file
 * calls
 *
 *     transportSuite(test, 'mosquitto', async (t) => ({ url, mqtt5, restart, ... }));
 *
 * Every case runs a real FleetServer and real AgentConnections against the broker, with the default
 * `--mqtt-version auto`.
 */
export interface BrokerFixture {
  url: string;
  /** Whether the broker speaks MQTT 5 (what `auto` must settle on). */
  mqtt5: boolean;
  /** Kill the broker (no clean shutdown) and start it again on the same address. */
  restart(downMs?: number): Promise<void>;
}

export type BrokerFactory = (t: ExecutionContext) => Promise<BrokerFixture>;

const MiB = 1024 * 1024;
const FRAME_HEADER = 92;
const bytesOf = (img: TestImage) => img.blobs.reduce((n, b) => n + b.size, 0);

export function transportSuite(test: TestFn, name: string, factory: BrokerFactory): void {
  const fleetOn = (t: ExecutionContext, b: BrokerFixture, o: Parameters<typeof startFleet>[1] = {}) =>
    startFleet(t, {
      mqtt: { url: b.url, protocolVersion: 'auto', backoff: { initialMs: 50, maxMs: 500 } },
      ...o,
    });
  const agentOn = (
    t: ExecutionContext,
    f: FleetSide,
    b: BrokerFixture,
    o: Partial<Parameters<typeof startAgent>[2]> & { deviceId: string },
  ) => startAgent(t, f, { url: b.url, protocolVersion: 'auto', ...o });
  const image = async (f: FleetSide, ref: string, layerSizes: number[]) => {
    const img = await putTestImage(f.store, { layerSizes });
    await f.addImage(ref, img.digest, img.mediaType);
    return img;
  };

  test(`${name}: a pull verifies every blob, records the image and costs the fleet each byte once`, async (t) => {
    const b = await factory(t);
    const f = await fleetOn(t, b);
    const img = await image(f, 'one:1', [5 * MiB + 123, 7000]);
    const d = await agentOn(t, f, b, { deviceId: 'conf-one' });
    const r = await d.agent.pullImage('one:1');
    t.is(r.size, bytesOf(img));
    for (const blob of img.blobs) await t.notThrowsAsync(d.store.verify(blob.digest));
    t.is(
      (d.db.prepare('SELECT digest FROM images WHERE name = ?').get('one:1') as { digest: string }).digest,
      r.digest,
    );
    t.is((d.db.prepare('SELECT COUNT(*) AS n FROM transport_transfers').get() as { n: number }).n, 0);
    const st = f.server.blobs!.stats;
    t.is(st.unicastBytes - st.chunksServed * FRAME_HEADER, bytesOf(img), 'each byte sent once');
    t.is(d.agent.fetcher.stats.duplicateBytes, 0);
  });

  test(`${name}: --mqtt-version auto settles on what the broker speaks, without a warning`, async (t) => {
    const b = await factory(t);
    const flog = memoryLog();
    const f = await fleetOn(t, b, { log: flog.log });
    const alog = memoryLog();
    const d = await agentOn(t, f, b, { deviceId: 'conf-auto', log: alog.log });
    t.is(d.agent.conn.protocolVersion, b.mqtt5 ? 5 : 4);
    t.is(f.server.conn!.protocolVersion, b.mqtt5 ? 5 : 4);
    await image(f, 'auto:1', [MiB]);
    await d.agent.pullImage('auto:1');
    const warnings = [...flog.lines(), ...alog.lines()].filter((l) => Number(l.level) >= 40);
    t.deepEqual(warnings, []);
  });

  test(`${name}: the broker killed and restarted mid-pull: the pull completes, no byte written twice`, async (t) => {
    const b = await factory(t);
    const f = await fleetOn(t, b, { blob: { rateLimit: 8 * MiB } });
    const img = await image(f, 'restart:1', [12 * MiB]);
    const d = await agentOn(t, f, b, { deviceId: 'conf-restart', transfer: { requestTimeoutMs: 2000 } });
    const st = d.agent.fetcher.stats;
    const pull = d.agent.pullImage('restart:1');
    await waitFor(() => st.receivedBytes >= 4 * MiB, 60_000, 'a third of the layer');
    await b.restart(100);
    const r = await pull;
    t.is(r.size, bytesOf(img));
    await t.notThrowsAsync(d.store.verify(img.blobs.find((x) => x.size === 12 * MiB)!.digest));
    t.true(d.agent.conn.connects >= 2, `reconnected (${d.agent.conn.connects} connects)`);
    t.is(st.receivedBytes, bytesOf(img), 'what was written before the restart was kept');
  });

  test(`${name}: a device that dies mid-pull resumes from its recorded progress, fetching at most a window again`, async (t) => {
    const b = await factory(t);
    const f = await fleetOn(t, b, { blob: { rateLimit: 16 * MiB } });
    const img = await image(f, 'resume:1', [16 * MiB]);
    const window = 8;
    const first = await agentOn(t, f, b, { deviceId: 'conf-resume', transfer: { window, fanout: false } });
    const pull = first.agent.pullImage('resume:1');
    pull.catch(() => undefined);
    await waitFor(() => first.agent.fetcher.stats.receivedBytes >= 6 * MiB, 60_000, 'part of the layer');
    first.agent.fetcher.stop();
    await first.agent.conn.close(false);
    const second = await startAgentOnDir(t, f, b, first, window);
    const r = await second.pullImage('resume:1');
    t.is(r.size, bytesOf(img));
    await t.notThrowsAsync(first.store.verify(img.blobs.find((x) => x.size === 16 * MiB)!.digest));
    t.true(second.fetcher.stats.resumedBytes >= MiB, `resumed ${second.fetcher.stats.resumedBytes}`);
    const st = f.server.blobs!.stats;
    const twice = st.unicastBytes - st.chunksServed * FRAME_HEADER - bytesOf(img);
    t.true(twice <= window * 256 * 1024, `bytes sent twice ${twice}`);
  });

  test(`${name}: fan-out: 4 devices pulling at once cost the fleet about one copy`, async (t) => {
    const b = await factory(t);
    // Egress capped at 4 MiB/s, as on a real uplink: the first device is answered unicast at once, and
    // unless its 6 MiB take longer than the gathering of the others (≤ 5 × 150 ms), it has the whole blob
    // before the stream starts — on a fast, idle machine that made every run cost two copies, not one.
    const f = await fleetOn(t, b, { blob: { rateLimit: 4 * MiB } });
    const img = await image(f, 'fan:1', [6 * MiB]);
    const devs: AgentSide[] = [];
    for (let i = 0; i < 4; i++) devs.push(await agentOn(t, f, b, { deviceId: `conf-fan-${i}` }));
    await Promise.all(devs.map((d) => d.agent.pullImage('fan:1')));
    for (const d of devs)
      await t.notThrowsAsync(d.store.verify(img.blobs.find((x) => x.size === 6 * MiB)!.digest));
    const st = f.server.blobs!.stats;
    const ratio = (st.unicastBytes + st.streamBytes) / bytesOf(img);
    t.true(st.streamBytes > 0, 'a stream ran');
    t.true(ratio < 1.5, `egress ${ratio.toFixed(2)}x the image`);
  });

  test(`${name}: rogue chunks and rogue answers on a device's topics get nothing committed`, async (t) => {
    const b = await factory(t);
    const f = await fleetOn(t, b);
    const img = await image(f, 'rogue:1', [3 * MiB]);
    const other = await image(f, 'other:1', [2 * MiB]);
    const layer = img.blobs.find((x) => x.size === 3 * MiB)!;
    const d = await agentOn(t, f, b, { deviceId: 'conf-rogue', transfer: { fanout: false } });
    const rogue = await connectAsync(b.url, {
      protocolVersion: 4,
      clientId: `rogue-${randomBytes(3).toString('hex')}`,
    });
    t.teardown(() => rogue.endAsync());
    await rogue.subscribeAsync(`${prefix(FLEET)}/devices/+/req`);
    let forged = 0;
    rogue.on('message', (_topic, payload) => {
      const req = JSON.parse(payload.toString()) as {
        kind: string;
        reqId: string;
        name?: string;
        ranges?: Array<[number, number]>;
      };
      if (req.kind === 'resolve')
        rogue.publish(
          deviceTopic(FLEET, 'conf-rogue', 'reply'),
          encodeJson({
            v: 1,
            kind: 'resolved',
            reqId: req.reqId,
            name: req.name,
            descriptor: { mediaType: other.mediaType, digest: other.digest, size: other.blobs[0]!.size },
          }),
        );
      for (const [first, n] of req.ranges ?? [])
        for (let index = first; index < first + n; index++) {
          const payload = randomBytes(256 * 1024);
          const frame = encodeFrame({
            type: FrameType.Chunk,
            digest: layer.digest,
            offset: index * 256 * 1024,
            index,
            chunkSize: 256 * 1024,
            payload,
          });
          rogue.publish(deviceTopic(FLEET, 'conf-rogue', 'chunks'), frame);
          forged++;
        }
    });
    const r = await d.agent.pullImage('rogue:1');
    t.is(r.indexDigest ?? r.digest, img.digest);
    await t.notThrowsAsync(d.store.verify(layer.digest));
    t.false(await d.store.has(other.blobs.find((x) => x.size === 2 * MiB)!.digest));
    t.true(forged > 0);
    t.true(d.agent.fetcher.stats.rejectedFrames > 0, 'forged frames refused');
  });

  test(`${name}: with --pull-policy targets a device gets what its targets name and nothing else`, async (t) => {
    const b = await factory(t);
    const f = await fleetOn(t, b, { pullPolicy: 'targets' });
    await image(f, 'mine:1', [MiB]);
    await image(f, 'theirs:1', [MiB]);
    const d = await agentOn(t, f, b, { deviceId: 'conf-acl' });
    await f.deploy({ kind: 'device', id: 'conf-acl' }, { apps: {}, images: ['mine:1'] });
    await t.notThrowsAsync(d.agent.pullImage('mine:1'));
    const err = await t.throwsAsync(d.agent.pullImage('theirs:1'));
    t.is((err as { code?: string }).code, 'PermissionDenied');
  });
}

/** A second AgentConnection on the state of `dead` (the same device after a restart). */
async function startAgentOnDir(
  t: ExecutionContext,
  f: FleetSide,
  b: BrokerFixture,
  dead: AgentSide,
  window: number,
) {
  const agent = new AgentConnection({
    fleet: FLEET,
    deviceId: 'conf-resume',
    groups: [],
    platform: { os: 'linux', architecture: 'amd64' },
    agentVersion: 'test',
    mqtt: { url: b.url, protocolVersion: 'auto' },
    store: dead.store,
    db: dead.db,
    publicKey: await resolvePublicKey(f.publicKeyFile),
    log: testLog(),
    clientId: 'berth-agent-conf-resume-2',
    transfer: { window, fanout: false },
  });
  await agent.start();
  t.teardown(() => agent.stop());
  return agent;
}
