import { randomBytes } from 'node:crypto';
import test from 'ava';
import { backoffDelay } from '../../src/lib/backoff.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { decodeFrame, encodeFrame, FRAME_HEADER_SIZE, FrameType } from '../../src/transport/frames.js';
import {
  decodeJson,
  ReplySchema,
  RequestSchema,
  SignedTargetSchema,
  StatusSchema,
} from '../../src/transport/messages.js';
import {
  Bitmap,
  chunkCount,
  chunkRange,
  chunkSizeFor,
  MAX_CHUNK,
  MIN_CHUNK,
  planIsWellFormed,
  planSigningBytes,
} from '../../src/transport/plan.js';
import {
  canonicalJson,
  generateFleetKey,
  keyId,
  loadPrivateKey,
  loadPublicKey,
  signBytes,
  verifyBytes,
} from '../../src/transport/signing.js';
import { signTarget, verifyTarget } from '../../src/transport/targets.js';
import {
  deviceTopic,
  fanoutTopic,
  groupTargetTopic,
  parseTopic,
  serverRequestFilter,
  serverStatusFilter,
} from '../../src/transport/topics.js';

const D = sha256Digest('x');

test('topics: build and parse round-trip', (t) => {
  const dt = deviceTopic('prod', 'dev-1', 'target');
  t.is(dt, 'berth/v1/prod/devices/dev-1/target');
  t.deepEqual(parseTopic(dt), { kind: 'device', fleet: 'prod', deviceId: 'dev-1', channel: 'target' });
  t.deepEqual(parseTopic(groupTargetTopic('prod', 'eu.west')), {
    kind: 'group-target',
    fleet: 'prod',
    group: 'eu.west',
  });
  t.deepEqual(parseTopic(fanoutTopic('prod', D)), { kind: 'fanout', fleet: 'prod', digest: D });
  t.is(serverRequestFilter('prod', true), '$share/berth-fleet/berth/v1/prod/devices/+/req');
  t.is(serverRequestFilter('prod', false), 'berth/v1/prod/devices/+/req');
  t.is(serverStatusFilter('prod'), 'berth/v1/prod/devices/+/status');
});

test('topics: levels that could escape a subtree are refused, foreign topics parse to undefined', (t) => {
  for (const bad of ['a/b', '+', '#', '', '..', '.hidden', '-x', 'a'.repeat(129), 'é'])
    t.throws(() => deviceTopic('prod', bad, 'status'), { instanceOf: TypeError }, bad);
  t.throws(() => groupTargetTopic('pr/od', 'g'));
  t.throws(() => fanoutTopic('prod', 'sha256:abc' as never));
  for (const s of [
    'berth/v2/prod/devices/d/status',
    'berth/v1/prod/devices/d/unknown',
    'berth/v1/prod/devices/d/status/extra',
    'berth/v1/prod/groups/g/status',
    'berth/v1/prod/fanout/xyz',
    'berth/v1/pr+od/devices/d/status',
    'other/v1/prod/devices/d/status',
    'berth/v1/prod/devices/+/status',
    '',
  ])
    t.is(parseTopic(s), undefined, s);
});

test('frames: encode/decode round-trip and every corruption is caught', (t) => {
  const payload = randomBytes(1000);
  const f = encodeFrame({
    type: FrameType.Chunk,
    digest: D,
    offset: 3 * 65536,
    index: 3,
    chunkSize: 65536,
    payload,
  });
  t.is(f.length, FRAME_HEADER_SIZE + 1000);
  const d = decodeFrame(f);
  t.true(d.ok);
  if (d.ok) {
    t.is(d.frame.digest, D);
    t.is(d.frame.offset, 3 * 65536);
    t.is(d.frame.index, 3);
    t.is(d.frame.chunkSize, 65536);
    t.true(d.frame.payload.equals(payload));
  }
  const flip = (i: number) => {
    const b = Buffer.from(f);
    b[i]! ^= 1;
    return decodeFrame(b);
  };
  t.false(flip(0).ok); // magic
  t.false(flip(4).ok); // version
  t.false(flip(5).ok); // type
  t.false(flip(50).ok); // length
  t.false(flip(70).ok); // chunk hash
  t.false(flip(FRAME_HEADER_SIZE + 10).ok); // payload
  t.false(decodeFrame(f.subarray(0, 50)).ok);
  t.false(decodeFrame(f.subarray(0, f.length - 1)).ok);
  t.false(decodeFrame(Buffer.alloc(0)).ok);
  // A precomputed hash is used as given (the server takes it from the plan).
  const wrong = encodeFrame(
    { type: FrameType.Chunk, digest: D, offset: 0, index: 0, chunkSize: 65536, payload },
    Buffer.alloc(32),
  );
  t.false(decodeFrame(wrong).ok);
});

test('chunk plan geometry and bitmaps', (t) => {
  t.is(chunkCount(0, MIN_CHUNK), 0);
  t.is(chunkCount(1, MIN_CHUNK), 1);
  t.is(chunkCount(MIN_CHUNK, MIN_CHUNK), 1);
  t.is(chunkCount(MIN_CHUNK + 1, MIN_CHUNK), 2);
  t.deepEqual(chunkRange(MIN_CHUNK + 5, MIN_CHUNK, 1), { offset: MIN_CHUNK, length: 5 });
  t.is(chunkSizeFor(256 * 1024 * 1024), MAX_CHUNK);
  t.is(chunkSizeFor(256 * 1024 + 1024), 256 * 1024);
  t.is(chunkSizeFor(256 * 1024), 128 * 1024);
  t.is(chunkSizeFor(100), MIN_CHUNK);
  const b = new Bitmap(20);
  t.false(b.complete());
  for (const i of [0, 7, 8, 19]) b.set(i);
  t.is(b.cardinality(), 4);
  t.true(b.has(19));
  b.clear(19);
  t.false(b.has(19));
  t.is([...b.missing()].length, 17);
  const copy = new Bitmap(20, b.bits);
  t.true(copy.has(8));
  t.is(new Bitmap(20, Buffer.alloc(1)).cardinality(), 0, 'a bitmap of the wrong length is ignored');
  const p = { digest: D, size: 3 * MIN_CHUNK, chunkSize: MIN_CHUNK, hashes: Buffer.alloc(96) };
  t.true(planIsWellFormed(p));
  t.false(planIsWellFormed({ ...p, hashes: Buffer.alloc(64) }));
  t.false(planIsWellFormed({ ...p, chunkSize: MIN_CHUNK + 1 }));
  t.notDeepEqual(planSigningBytes(p), planSigningBytes({ ...p, size: p.size - 1 }));
});

test('canonical JSON is key-order independent and rejects what JSON cannot carry', (t) => {
  t.is(
    canonicalJson({ b: 1, a: [true, null, 'x'], c: { z: 1, y: 2 } }),
    '{"a":[true,null,"x"],"b":1,"c":{"y":2,"z":1}}',
  );
  t.is(canonicalJson({ a: 1, b: undefined }), '{"a":1}');
  t.throws(() => canonicalJson({ a: Number.NaN }));
  t.throws(() => canonicalJson({ a: () => 1 }));
});

test('ed25519 signatures: sign, verify, key ids; targets fail on any change', (t) => {
  const k = generateFleetKey();
  const priv = loadPrivateKey(k.privateKeyPem);
  const pub = loadPublicKey(k.publicKeyPem);
  t.is(keyId(priv), keyId(pub));
  const sig = signBytes(priv, Buffer.from('hello'));
  t.true(verifyBytes(pub, Buffer.from('hello'), sig));
  t.false(verifyBytes(pub, Buffer.from('hellp'), sig));
  t.false(verifyBytes(pub, Buffer.from('hello'), sig.subarray(1)));
  t.throws(() => loadPublicKey('not a key'));
  const target = {
    v: 1 as const,
    fleet: 'f',
    scope: { kind: 'device' as const, id: 'd' },
    version: 3,
    issuedAt: new Date().toISOString(),
    images: [{ name: 'a:1', digest: D }],
    apps: { x: [1, 2] },
  };
  const signed = signTarget(target, priv);
  t.true(verifyTarget(signed, pub).ok);
  t.true(SignedTargetSchema.safeParse(JSON.parse(JSON.stringify(signed))).success);
  // Re-ordering keys does not matter (canonical encoding), changing a value does.
  const { apps, ...rest } = target;
  const reordered = JSON.parse(JSON.stringify({ ...signed, target: { apps, ...rest } }));
  t.true(verifyTarget(reordered, pub).ok);
  t.false(verifyTarget({ ...signed, target: { ...signed.target, version: 4 } }, pub).ok);
  t.false(
    verifyTarget({ ...signed, target: { ...signed.target, scope: { kind: 'group', id: 'd' } } }, pub).ok,
  );
  const other = loadPublicKey(generateFleetKey().publicKeyPem);
  t.false(verifyTarget(signed, other).ok);
});

test('message schemas: size cap, JSON, schema and version checked, extra keys refused', (t) => {
  const ok = decodeJson(
    RequestSchema,
    Buffer.from(JSON.stringify({ v: 1, kind: 'resolve', reqId: 'r1', name: 'app:1' })),
    1000,
  );
  t.true(ok.ok);
  t.false(
    decodeJson(
      RequestSchema,
      Buffer.from(JSON.stringify({ v: 1, kind: 'resolve', reqId: 'r1', name: 'app:1' })),
      10,
    ).ok,
  );
  t.false(decodeJson(RequestSchema, Buffer.from('{'), 1000).ok);
  t.false(
    decodeJson(
      RequestSchema,
      Buffer.from(JSON.stringify({ v: 3, kind: 'resolve', reqId: 'r1', name: 'app:1' })),
      1000,
    ).ok,
  );
  t.false(
    decodeJson(
      RequestSchema,
      Buffer.from(JSON.stringify({ v: 1, kind: 'resolve', reqId: 'r1', name: 'app:1', x: 1 })),
      1000,
    ).ok,
  );
  t.false(
    decodeJson(
      RequestSchema,
      Buffer.from(
        JSON.stringify({
          v: 1,
          kind: 'chunks',
          reqId: 'r',
          digest: D,
          chunkSize: 1,
          indexes: Array(65).fill(0),
        }),
      ),
      10000,
    ).ok,
  );
  t.false(
    decodeJson(
      ReplySchema,
      Buffer.from(
        JSON.stringify({
          v: 1,
          kind: 'resolved',
          reqId: 'r/../',
          name: 'a:1',
          descriptor: { mediaType: 'x', digest: D, size: 1 },
        }),
      ),
      10000,
    ).ok,
  );
  t.false(
    decodeJson(
      StatusSchema,
      Buffer.from(JSON.stringify({ v: 1, deviceId: 'a/b', state: 'online', at: 'x' })),
      10000,
    ).ok,
  );
  t.true(
    decodeJson(
      StatusSchema,
      Buffer.from(JSON.stringify({ v: 1, deviceId: 'ab', state: 'online', at: 'x' })),
      10000,
    ).ok,
  );
});

test('backoff: exponential, capped, jittered between half and all of the step', (t) => {
  const o = { initialMs: 100, maxMs: 10_000 };
  t.is(backoffDelay(0, { ...o, random: () => 0 }), 50);
  t.is(backoffDelay(0, { ...o, random: () => 1 }), 100);
  t.is(backoffDelay(3, { ...o, random: () => 1 }), 800);
  t.is(backoffDelay(50, { ...o, random: () => 1 }), 10_000);
  t.is(backoffDelay(50, { ...o, random: () => 0 }), 5_000);
});
