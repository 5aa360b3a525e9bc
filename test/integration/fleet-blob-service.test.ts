/**
 * The fleet's blob service against the attacks of the security round (issue 15), all real: Mosquitto,
 * a FleetServer, devices' AgentConnections, rogue MQTT clients.
 *
 *   - a rogue answers `resolve` first (unsigned, wrongly signed, or the fleet's own signed answer to
 *     another device replayed): `berth pull big-a:a` must store big-a:a or nothing — never another image
 *   - 4 devices pulling 64 MiB at 3 MB/s die mid-way: the fleet stops sending to them and a fresh 1 MiB
 *     pull is served at once, at its fair share (with and without a last will)
 *   - a device gets only what a target of its own or of its groups names
 */
import { randomBytes } from 'node:crypto';
import test, { type ExecutionContext } from 'ava';
import { connectAsync } from 'mqtt';
import type { Digest } from '../../src/oci/digest.js';
import { encodeJson } from '../../src/transport/messages.js';
import { deviceTopic, prefix } from '../../src/transport/topics.js';
import {
  type AgentSide,
  FLEET,
  memoryLog,
  startAgent,
  startFleet,
  waitFor,
} from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';
import { Mosquitto } from '../helpers/mosquitto.js';

const MiB = 1024 * 1024;
const CHUNK = 256 * 1024;

test('berth pull stores what the fleet means by the name: resolved replies not signed by the fleet for this request are refused', async (t) => {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const fleet = await startFleet(t, { mqtt: { url: m.url, protocolVersion: 5 } });
  const a = await putTestImage(fleet.store, { layerSizes: [2 * MiB] });
  const b = await putTestImage(fleet.store, { layerSizes: [3 * MiB] });
  await fleet.addImage('big-a:a', a.digest, a.mediaType);
  await fleet.addImage('sample:v1', b.digest, b.mediaType);
  const bDesc = { mediaType: b.mediaType, digest: b.digest, size: b.blobs[0]!.size };

  // A rogue that reads replies (no ACLs here) keeps the fleet's signed answer to another device's pull.
  const rogue = await connectAsync(m.url, { protocolVersion: 5, clientId: 'rogue-resolver' });
  t.teardown(() => rogue.endAsync());
  let captured: Record<string, unknown> | undefined;
  await rogue.subscribeAsync(`${prefix(FLEET)}/devices/+/reply`);
  rogue.on('message', (_t, payload) => {
    const r = JSON.parse(payload.toString()) as Record<string, unknown>;
    if (r.kind === 'resolved' && r.v === 2 && r.name === 'sample:v1') captured = r;
  });
  const other = await startAgent(t, fleet, { deviceId: 'dev-other', url: m.url, protocolVersion: 5 });
  await other.agent.pullImage('sample:v1');
  await waitFor(() => captured !== undefined, 5000, 'the fleet answer to dev-other');

  const mem = memoryLog();
  const dev = await startAgent(t, fleet, {
    deviceId: 'dev-victim',
    url: m.url,
    protocolVersion: 5,
    log: mem.log,
  });
  const replyTopic = deviceTopic(FLEET, 'dev-victim', 'reply');
  // Rogue answers reach the device before the fleet's: injected the moment the request goes out.
  let forged = 0;
  const conn = dev.agent.conn;
  const publish = conn.publish.bind(conn);
  conn.publish = (topic, payload, opts) => {
    const sent = publish(topic, payload, opts);
    const req = JSON.parse(payload.toString()) as { kind?: string; reqId?: string; name?: string };
    if (topic.endsWith('/req') && req.kind === 'resolve') {
      const forgeries = [
        { v: 1, kind: 'resolved', reqId: req.reqId, name: req.name, descriptor: bDesc },
        { ...captured, reqId: req.reqId, name: req.name }, // the fleet's signature, bound to another request
        { ...captured, reqId: req.reqId }, // ... and to another name
        {
          v: 2,
          kind: 'resolved',
          reqId: req.reqId,
          name: req.name,
          descriptor: bDesc,
          keyId: String(captured?.keyId),
          sig: randomBytes(64).toString('base64'),
        },
      ];
      setImmediate(() => {
        for (const f of forgeries) {
          forged++;
          dev.agent.fetcher.route(replyTopic, encodeJson(f));
          void rogue.publishAsync(replyTopic, encodeJson(f));
        }
      });
    }
    return sent;
  };
  const r = await dev.agent.pullImage('big-a:a');
  t.true(forged >= 4);
  t.is(r.indexDigest ?? r.digest, a.digest, 'big-a:a is big-a:a');
  const aLayer = a.blobs.find((x) => x.size === 2 * MiB)!;
  const bLayer = b.blobs.find((x) => x.size === 3 * MiB)!;
  t.true(await dev.store.has(aLayer.digest));
  t.false(await dev.store.has(bLayer.digest), 'nothing of the other image was fetched');
  const rejections = mem.lines().filter((l) => l.msg === 'rejected reply that does not answer its request');
  t.true(rejections.length >= 4, JSON.stringify(rejections));
  t.log(`forged ${forged} resolved replies; the device refused ${rejections.length}`);
});

/** Bytes the fleet published on each device's chunks topic, in order, as a broker client sees them. */
async function watchChunks(t: ExecutionContext, url: string) {
  const w = await connectAsync(url, {
    protocolVersion: 5,
    clientId: `watch-${randomBytes(3).toString('hex')}`,
  });
  t.teardown(() => w.endAsync());
  const log: Array<{ device: string; bytes: number }> = [];
  await w.subscribeAsync(`${prefix(FLEET)}/devices/+/chunks`, { qos: 0 });
  w.on('message', (topic, payload) => log.push({ device: topic.split('/')[4]!, bytes: payload.length }));
  return {
    log,
    mark: () => log.length,
    bytes: (from: number, to: number, who: (device: string) => boolean) =>
      log.slice(from, to).reduce((n, e) => n + (who(e.device) ? e.bytes : 0), 0),
  };
}

for (const presence of [false, true]) {
  test(`4 devices pulling 64 MiB at 3 MB/s die mid-way (${presence ? 'agents: their last will says offline' : 'no last will, like berth pull'}): a fresh 1 MiB pull is served at once at its fair share, and the dead stop costing bandwidth`, async (t) => {
    t.timeout(180_000);
    const m = await Mosquitto.start();
    t.teardown(() => m.stop());
    const fleet = await startFleet(t, {
      mqtt: { url: m.url, protocolVersion: 5 },
      blob: { rateLimit: 3_000_000 },
    });
    const big = await putTestImage(fleet.store, { layerSizes: [64 * MiB] });
    const small = await putTestImage(fleet.store, { layerSizes: [1 * MiB] });
    await fleet.addImage('big:1', big.digest, big.mediaType);
    await fleet.addImage('small:1', small.digest, small.mediaType);
    const watch = await watchChunks(t, m.url);
    const transfer = { fanout: false }; // each device its own unicast queue; the default window (32)
    const dying: AgentSide[] = [];
    for (let i = 0; i < 4; i++)
      dying.push(
        await startAgent(t, fleet, {
          deviceId: `dying-${i}`,
          url: m.url,
          protocolVersion: 5,
          transfer,
          presence,
        }),
      );
    for (const d of dying) d.agent.pullImage('big:1').catch(() => undefined);
    // Long enough for grants to time out and be granted again (5 s) while the fleet is behind: what
    // piled up duplicates in a FIFO before.
    await waitFor(
      () =>
        dying.every((d) => d.agent.fetcher.stats.receivedBytes >= 2 * MiB) &&
        dying.some((d) => d.agent.fetcher.stats.rerequests > 0),
      120_000,
      'the dying devices under way and re-granting',
    );
    const queuedAtKill = fleet.server.blobs!.queuedChunks;
    for (const d of dying) {
      d.agent.fetcher.stop();
      await d.agent.conn.close(false); // the socket drops: kill -9, power cut
    }
    const killedAt = watch.mark();
    const fresh = await startAgent(t, fleet, {
      deviceId: 'fresh',
      url: m.url,
      protocolVersion: 5,
      transfer,
      presence,
    });
    const freshStart = watch.mark();
    const r = await fresh.agent.pullImage('small:1');
    const freshDone = watch.mark();
    await t.notThrowsAsync(fresh.store.verify(small.blobs.find((b) => b.size === MiB)!.digest));
    const isDead = (dev: string) => dev.startsWith('dying-');
    const toDeadDuringFresh = watch.bytes(freshStart, freshDone, isDead);
    const toFresh = watch.bytes(freshStart, freshDone, (d) => d === 'fresh');
    t.true(toFresh >= r.size, `fresh got ${toFresh} B`);
    // Round robin between 5 queues: while the fresh device has chunks queued, the others get at most
    // their 4 shares; between its requests (resolve, plans: a round trip each) the others go on. Not
    // the whole backlog first (a FIFO sent every queued chunk of the dead before the fresh one's).
    const frame = CHUNK + 92;
    t.true(
      toDeadDuringFresh <= 4 * toFresh + 16 * frame,
      `while the fresh device pulled ${toFresh} B the dead got ${toDeadDuringFresh} B (backlog at kill: ${queuedAtKill} chunks)`,
    );
    // And the dead stop costing anything: what they had granted goes out or goes stale (10 s), never more.
    await waitFor(() => fleet.server.blobs!.queuedChunks === 0, 60_000, 'the dead queues gone');
    await new Promise((res) => setTimeout(res, 1000)); // frames already on their way land
    const settle = watch.mark();
    await new Promise((res) => setTimeout(res, 1000));
    t.is(watch.bytes(settle, watch.mark(), isDead), 0, 'nothing more for the dead');
    const toDeadAfterKill = watch.bytes(killedAt, watch.mark(), isDead);
    const st = fleet.server.blobs!.stats;
    // at most what each had granted (its credit window) plus the frames already in flight
    t.true(
      toDeadAfterKill <= (4 * 32 + 32) * frame,
      `sent to the dead after they died: ${toDeadAfterKill} B`,
    );
    if (presence) t.true(st.dropped.gone > 0, 'their last will emptied their queues');
    t.log(
      `backlog at kill ${queuedAtKill} chunks; to the dead after kill ${(toDeadAfterKill / MiB).toFixed(1)} MiB, ` +
        `${(toDeadDuringFresh / MiB).toFixed(1)} MiB of it while the fresh device got ${(toFresh / MiB).toFixed(1)} MiB; ` +
        `dropped ${JSON.stringify(st.dropped)}`,
    );
  });
}

test('a device is served only what the targets of the device and its groups name', async (t) => {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const fleet = await startFleet(t, { mqtt: { url: m.url, protocolVersion: 5 }, pullPolicy: 'targets' });
  const imgs: Record<string, Awaited<ReturnType<typeof putTestImage>>> = {};
  for (const [name, size] of [
    ['app:1', MiB],
    ['grp:1', MiB + 1],
    ['other:1', MiB + 2],
  ] as const) {
    imgs[name] = await putTestImage(fleet.store, { layerSizes: [size] });
    await fleet.addImage(name, imgs[name]!.digest, imgs[name]!.mediaType);
  }
  const deploy = async (scope: { kind: 'device' | 'group'; id: string }, image: string) => {
    await fleet.deploy(scope, { apps: {}, images: [image] });
  };
  await deploy({ kind: 'device', id: 'dev-a' }, 'app:1');
  await deploy({ kind: 'group', id: 'g1' }, 'grp:1');
  const a = await startAgent(t, fleet, { deviceId: 'dev-a', groups: ['g1'], url: m.url, protocolVersion: 5 });
  const b = await startAgent(t, fleet, { deviceId: 'dev-b', url: m.url, protocolVersion: 5 });
  await waitFor(() => fleet.stores.devices.list().items.length === 2, 5000, 'both devices known');

  await t.notThrowsAsync(a.agent.pullImage('app:1'), 'its own target');
  await t.notThrowsAsync(a.agent.pullImage('grp:1'), 'its group target');
  const denied = await t.throwsAsync(a.agent.pullImage('other:1'));
  t.regex(denied!.message, /PermissionDenied|not named by any target of device dev-a/);
  t.is((denied as { code?: string }).code, 'PermissionDenied');
  await t.throwsAsync(b.agent.pullImage('app:1'), { message: /not named by any target of device dev-b/ });

  // Asking for a blob by digest is no way around it: a credit grant for other:1's layer is dropped.
  const layer = imgs['other:1']!.blobs.find((x) => x.size === MiB + 2)!;
  const before = fleet.server.blobs!.stats.dropped.unauthorized;
  const sneak = await connectAsync(m.url, { protocolVersion: 5, clientId: 'sneak' });
  t.teardown(() => sneak.endAsync());
  let frames = 0;
  await sneak.subscribeAsync(deviceTopic(FLEET, 'dev-b', 'chunks'));
  sneak.on('message', () => frames++);
  await sneak.publishAsync(
    deviceTopic(FLEET, 'dev-b', 'req'),
    encodeJson({
      v: 2,
      kind: 'credit',
      reqId: 'sneak',
      digest: layer.digest as Digest,
      chunkSize: CHUNK,
      ranges: [[0, 4]],
    }),
    { qos: 1 },
  );
  await waitFor(() => fleet.server.blobs!.stats.dropped.unauthorized > before, 5000, 'the grant dropped');
  await new Promise((r) => setTimeout(r, 300));
  t.is(frames, 0, 'not one chunk of it');
  t.false(await b.store.has(layer.digest));
});
