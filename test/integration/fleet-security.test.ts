import { randomBytes } from 'node:crypto';
import test from 'ava';
import { connectAsync } from 'mqtt';
import { loadFleetPrivateKey } from '../../src/fleet/keys.js';
import { encodeFrame, FrameType } from '../../src/transport/frames.js';
import type { SignedTarget } from '../../src/transport/messages.js';
import { generateFleetKey, loadPrivateKey } from '../../src/transport/signing.js';
import { signTarget } from '../../src/transport/targets.js';
import { deviceTopic, fanoutTopic, groupTargetTopic, prefix } from '../../src/transport/topics.js';
import { FLEET, memoryLog, startAgent, startFleet, waitFor } from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';
import { Mosquitto } from '../helpers/mosquitto.js';

const MiB = 1024 * 1024;

test('unsigned, wrongly signed, tampered, misplaced and replayed targets are rejected', async (t) => {
  const fleet = await startFleet(t);
  const mem = memoryLog();
  const dev = await startAgent(t, fleet, { deviceId: 'dev-sec', groups: ['grp'], log: mem.log });
  const accepted: SignedTarget[] = [];
  const rejected: string[] = [];
  dev.agent.on('target', (s) => accepted.push(s));
  dev.agent.on('rejected', (r) => rejected.push(r));
  const key = await loadFleetPrivateKey(fleet.dir);
  const conn = fleet.server.conn!;
  const mk = (version: number, apps: unknown = { v: version }) =>
    signTarget(
      {
        v: 1,
        fleet: FLEET,
        scope: { kind: 'device', id: 'dev-sec' },
        version,
        issuedAt: new Date().toISOString(),
        images: [],
        apps: apps as SignedTarget['target']['apps'],
      },
      key,
    );
  const topic = deviceTopic(FLEET, 'dev-sec', 'target');
  const send = (payload: unknown) =>
    conn.publish(topic, Buffer.from(JSON.stringify(payload)), { qos: 1, retain: true });

  // v2 accepted first.
  const v2 = mk(2);
  await send(v2);
  await waitFor(() => accepted.length === 1, 5000, 'v2');
  const rejections = async (n: number, what: string) => waitFor(() => rejected.length >= n, 5000, what);

  const { signature: _s, ...unsigned } = mk(3);
  await send(unsigned);
  await rejections(1, 'unsigned');
  const other = loadPrivateKey(generateFleetKey().privateKeyPem);
  await send(signTarget(mk(4).target, other));
  await rejections(2, 'wrong key');
  const tampered = mk(5);
  (tampered.target.apps as Record<string, unknown>).v = 666;
  await send(tampered);
  await rejections(3, 'tampered');
  const forgedKeyId = signTarget(mk(6).target, other);
  forgedKeyId.signature.keyId = v2.signature.keyId;
  await send(forgedKeyId);
  await rejections(4, 'forged key id');
  await send(mk(1)); // older
  await rejections(5, 'older');
  await send(mk(2, { other: true })); // equal version, different body
  await rejections(6, 'equal');
  // A correctly signed target for another device, published on this device's topic.
  const foreign = signTarget({ ...mk(7).target, scope: { kind: 'device', id: 'dev-other' } }, key);
  await send(foreign);
  await rejections(7, 'misplaced');
  // A group target the device does not follow never even arrives; one it follows does.
  await fleet.deploy({ kind: 'group', id: 'grp' }, { apps: {}, images: [] });
  await waitFor(() => accepted.length === 2, 5000, 'group target');

  t.is(accepted.length, 2);
  t.is(rejected.length, 7, rejected.join('\n'));
  t.regex(rejected[0]!, /signature/);
  t.regex(rejected[1]!, /signed with key/);
  t.regex(rejected[2]!, /does not verify/);
  t.regex(rejected[3]!, /does not verify/);
  t.regex(rejected[4]!, /replay/);
  t.regex(rejected[5]!, /replay/);
  t.regex(rejected[6]!, /wrong topic/);
  const rows = dev.db
    .prepare('SELECT scope_kind, scope_id, version FROM transport_targets ORDER BY scope_kind')
    .all();
  t.deepEqual(rows, [
    { scope_kind: 'device', scope_id: 'dev-sec', version: 2 },
    { scope_kind: 'group', scope_id: 'grp', version: 1 },
  ]);
  t.is(mem.lines().filter((l) => l.msg === 'rejected target').length, 7);
  // The retained v2 coming back on reconnect is not a replay.
  await send(v2);
  await new Promise((r) => setTimeout(r, 300));
  t.is(rejected.length, 7);
});

test('a rogue client publishing corrupt chunks, foreign chunks and bogus replies cannot get bytes committed', async (t) => {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const fleet = await startFleet(t, { mqtt: { url: m.url, protocolVersion: 5 } });
  const img = await putTestImage(fleet.store, { layerSizes: [8 * MiB] });
  await fleet.addImage('rogue:1', img.digest, img.mediaType);
  const dev = await startAgent(t, fleet, {
    deviceId: 'dev-r',
    url: m.url,
    protocolVersion: 5,
    transfer: { fanout: false },
  });
  const layer = img.blobs.find((b) => b.size === 8 * MiB)!;

  const rogue = await connectAsync(m.url, { protocolVersion: 5, clientId: 'rogue' });
  t.teardown(() => rogue.endAsync());
  let forged = 0;
  await rogue.subscribeAsync(`${prefix(FLEET)}/devices/+/req`);
  rogue.on('message', (_topic, payload) => {
    const req = JSON.parse(payload.toString());
    const reply = deviceTopic(FLEET, 'dev-r', 'reply');
    const chunks = deviceTopic(FLEET, 'dev-r', 'chunks');
    if (req.kind === 'plan') {
      // A plan that would make rogue chunks look right, with a signature that cannot verify.
      const hashes = randomBytes(32 * Math.ceil(layer.size / 262144)).toString('base64');
      rogue.publish(
        reply,
        JSON.stringify({
          v: 1,
          kind: 'plan',
          reqId: req.reqId,
          digest: req.digest,
          size: layer.size,
          chunkSize: 262144,
          hashes,
          keyId: 'x',
          sig: randomBytes(64).toString('base64'),
        }),
      );
      rogue.publish(
        reply,
        JSON.stringify({
          v: 1,
          kind: 'plan',
          reqId: req.reqId,
          digest: req.digest,
          size: 1,
          chunkSize: 262144,
          hashes: '',
          keyId: 'x',
          sig: '',
        }),
      );
      rogue.publish(reply, 'not json');
      forged += 3;
    }
    // v1 agents asked with index lists (`chunks`), v2 agents grant ranges (`credit`): forge for both.
    const asked: number[] =
      req.kind === 'chunks'
        ? req.indexes
        : req.kind === 'credit'
          ? (req.ranges as Array<[number, number]>).flatMap(([first, n]) =>
              Array.from({ length: n }, (_, k) => first + k),
            )
          : [];
    if (asked.length > 0 && req.digest === layer.digest) {
      for (const index of asked) {
        const length = Math.min(req.chunkSize, layer.size - index * req.chunkSize);
        const good = encodeFrame({
          type: FrameType.Chunk,
          digest: layer.digest,
          offset: index * req.chunkSize,
          index,
          chunkSize: req.chunkSize,
          payload: randomBytes(length),
        });
        const damaged = Buffer.from(good);
        damaged[damaged.length - 1]! ^= 0xff; // breaks the frame hash
        const misplaced = encodeFrame({
          type: FrameType.Chunk,
          digest: layer.digest,
          offset: 0,
          index,
          chunkSize: req.chunkSize,
          payload: randomBytes(length),
        });
        rogue.publish(chunks, good); // well-formed, foreign bytes: caught by the signed plan
        rogue.publish(chunks, damaged);
        rogue.publish(chunks, misplaced);
        rogue.publish(chunks, randomBytes(50));
        forged += 4;
      }
    }
  });
  const r = await dev.agent.pullImage('rogue:1');
  t.is(
    r.size,
    img.blobs.reduce((n, b) => n + b.size, 0),
  );
  await t.notThrowsAsync(dev.store.verify(layer.digest));
  const st = dev.agent.fetcher.stats;
  t.true(forged > 0);
  t.true(st.rejectedFrames > 0, `rejected ${st.rejectedFrames}`);
  t.log(
    `rogue published ${forged} forged messages; device rejected ${st.rejectedFrames} frames; blob verified`,
  );
});

test('malformed, oversized and wrong-schema messages on every subscribed topic are rejected without a crash or a state change', async (t) => {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const fmem = memoryLog();
  const fleet = await startFleet(t, { mqtt: { url: m.url, protocolVersion: 5 }, log: fmem.log });
  const img = await putTestImage(fleet.store, { layerSizes: [2 * MiB] });
  await fleet.addImage('ok:1', img.digest, img.mediaType);
  const amem = memoryLog();
  const dev = await startAgent(t, fleet, {
    deviceId: 'dev-m',
    groups: ['gm'],
    url: m.url,
    protocolVersion: 5,
    log: amem.log,
  });
  const devices = () =>
    JSON.stringify(
      fleet.stores.devices.list({ limit: 500 }).items.map((d) => ({ ...d, lastSeen: 0, stateAt: 0 })),
    );
  await waitFor(() => fleet.stores.devices.get('dev-m')?.online === true, 5000, 'device known to the fleet');
  fleet.server.ingest.flush();
  const devicesBefore = devices();

  const evil = await connectAsync(m.url, { protocolVersion: 5, clientId: 'evil' });
  t.teardown(() => evil.endAsync());
  const topics = [
    deviceTopic(FLEET, 'dev-m', 'target'),
    groupTargetTopic(FLEET, 'gm'),
    deviceTopic(FLEET, 'dev-m', 'reply'),
    deviceTopic(FLEET, 'dev-m', 'chunks'),
    fanoutTopic(FLEET, img.blobs[1]!.digest),
    deviceTopic(FLEET, 'dev-m', 'req'),
    deviceTopic(FLEET, 'dev-m', 'status'),
    deviceTopic(FLEET, 'dev-x', 'status'),
    // what the fleet server ingests besides status
    deviceTopic(FLEET, 'dev-m', 'state'),
    deviceTopic(FLEET, 'dev-m', 'info'),
    deviceTopic(FLEET, 'dev-m', 'event'),
    deviceTopic(FLEET, 'dev-m', 'metrics'),
    deviceTopic(FLEET, 'dev-m', 'result'),
  ];
  const payloads: Array<[string, Buffer]> = [
    ['not json', Buffer.from('{"v":1,')],
    ['binary', randomBytes(300)],
    [
      'wrong schema',
      Buffer.from(JSON.stringify({ v: 1, kind: 'chunks', reqId: 'a', digest: 'sha256:zz', indexes: [-1] })),
    ],
    ['wrong version', Buffer.from(JSON.stringify({ v: 9, deviceId: 'dev-m', state: 'online', at: 'x' }))],
    [
      'status for another device',
      Buffer.from(JSON.stringify({ v: 1, deviceId: 'dev-m', state: 'offline', at: 'x' })),
    ],
    ['huge', Buffer.alloc(5 * MiB, 0x7b)],
    ['deep', Buffer.from('['.repeat(5000) + ']'.repeat(5000))],
    ['prototype', Buffer.from('{"__proto__":{"polluted":true},"v":1}')],
  ];
  for (const topic of topics) {
    for (const [, p] of payloads) {
      if (topic.endsWith('/status') && topic.includes('dev-m') && p.toString().includes('"offline"'))
        continue;
      await evil.publishAsync(topic, p, { qos: 1 });
    }
  }
  // Let everything be delivered, then check: still alive, nothing recorded, and it still works.
  await new Promise((r) => setTimeout(r, 1000));
  t.is(({} as Record<string, unknown>).polluted, undefined);
  t.is((dev.db.prepare('SELECT COUNT(*) AS n FROM transport_targets').get() as { n: number }).n, 0);
  t.is((dev.db.prepare('SELECT COUNT(*) AS n FROM transport_transfers').get() as { n: number }).n, 0);
  fleet.server.ingest.flush();
  t.is(devices(), devicesBefore);
  t.is(fleet.stores.events.count(), 0, 'no event stored from garbage');
  t.deepEqual(fleet.stores.metrics.seriesOf('dev-m'), [], 'no metrics stored from garbage');
  const r = await dev.agent.pullImage('ok:1');
  t.is(r.name, 'ok:1');
  const aRejected = amem.lines().filter((l) => /^rejected/.test(l.msg));
  const fRejected = fmem.lines().filter((l) => /^rejected/.test(l.msg));
  t.true(aRejected.some((l) => l.msg === 'rejected target'));
  t.true(aRejected.some((l) => l.msg === 'rejected reply'));
  t.true(aRejected.some((l) => l.msg === 'rejected chunk frame'));
  t.true(fRejected.some((l) => l.msg === 'rejected blob request'));
  t.true(fRejected.some((l) => l.msg === 'rejected status'));
  for (const ch of ['state', 'info', 'event', 'metrics', 'result'])
    t.true(
      fRejected.some((l) => l.msg === `rejected ${ch}`),
      `fleet rejected garbage on ${ch}`,
    );
  t.log(`agent logged ${aRejected.length} rejections, fleet server ${fRejected.length}`);
});
