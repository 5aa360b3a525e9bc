/**
 * The fleet's blob authorisation (src/transport/blob-access.ts) for agent releases: a target naming an
 * agent release opens the release's signed manifest and the executables it lists to that device, and
 * nothing else; a device whose targets name no release gets none of it.
 */
import { promises as fsp, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { ContentStore } from '../../src/content/store.js';
import type { Digest } from '../../src/oci/digest.js';
import { MediaTypes } from '../../src/oci/media-types.js';
import { targetsAuthorizer } from '../../src/transport/blob-access.js';
import type { Target } from '../../src/transport/messages.js';
import { signRelease } from '../../src/transport/releases.js';
import { generateFleetKey, loadPrivateKey } from '../../src/transport/signing.js';

test('a target naming an agent release opens its manifest and executables to the device, and nothing else', async (t) => {
  const store = new ContentStore(mkdtempSync(path.join(tmpdir(), 'berth-blob-access-')));
  const exeAmd64 = await store.put('an x64 executable');
  const exeArm64 = await store.put('an arm64 executable');
  const unrelated = await store.put('some other blob');
  const priv = loadPrivateKey(generateFleetKey().privateKeyPem);
  const signed = signRelease(
    {
      v: 1,
      fleet: 'prod',
      version: '0.2.0',
      createdAt: '2026-01-01T00:00:00.000Z',
      database: { schema: 11, minSchema: 0 },
      config: { format: 1, minFormat: 1 },
      artifacts: {
        'linux/amd64': { digest: exeAmd64.digest, size: exeAmd64.size },
        'linux/arm64': { digest: exeArm64.digest, size: exeArm64.size },
      },
    },
    priv,
  );
  const manifest = await store.put(JSON.stringify(signed));
  const target = (agent: boolean): Target => ({
    v: 1,
    fleet: 'prod',
    scope: { kind: 'device', id: 'dev-a' },
    version: 1,
    issuedAt: '2026-01-01T00:00:00.000Z',
    images: [],
    apps: {},
    ...(agent
      ? { agent: { version: '0.2.0', release: { digest: manifest.digest, size: manifest.size } } }
      : {}),
  });
  const targets: Record<string, Target[]> = { 'dev-a': [target(true)], 'dev-b': [target(false)] };
  const allowed = targetsAuthorizer({ store, targetsFor: (id) => targets[id] ?? [] });
  const blob = (digest: Digest) => ({ kind: 'blob' as const, digest });

  t.true(await allowed('dev-a', blob(manifest.digest)), 'the release manifest');
  t.true(await allowed('dev-a', blob(exeAmd64.digest)), 'an executable it lists');
  t.true(await allowed('dev-a', blob(exeArm64.digest)), 'another arch it lists');
  t.false(await allowed('dev-a', blob(unrelated.digest)), 'a blob the release does not list');
  for (const d of [manifest.digest, exeAmd64.digest, unrelated.digest])
    t.false(await allowed('dev-b', blob(d)), 'no release in dev-b’s targets');
  t.false(await allowed('dev-c', blob(exeAmd64.digest)), 'a device without targets');
});

test('a layer the fleet lost is still named by the target: the device hears NotFound, not "not yours"', async (t) => {
  const store = new ContentStore(mkdtempSync(path.join(tmpdir(), 'berth-blob-access-')));
  const config = await store.put(
    '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}',
  );
  const kept = await store.put('a layer the fleet has');
  const lost = await store.put('a layer the fleet loses');
  const manifest = await store.put(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.OciManifest,
      config: { mediaType: MediaTypes.OciConfig, digest: config.digest, size: config.size },
      layers: [kept, lost].map((l) => ({
        mediaType: MediaTypes.OciLayerGzip,
        digest: l.digest,
        size: l.size,
      })),
    }),
  );
  await fsp.rm(path.join(store.blobsDir, lost.digest.slice('sha256:'.length)));
  const target: Target = {
    v: 1,
    fleet: 'prod',
    scope: { kind: 'device', id: 'dev-a' },
    version: 1,
    issuedAt: '2026-01-01T00:00:00.000Z',
    images: [{ name: 'app:1', digest: manifest.digest }],
    apps: {},
  };
  const allowed = targetsAuthorizer({ store, targetsFor: (id) => (id === 'dev-a' ? [target] : []) });
  const blob = (digest: Digest) => ({ kind: 'blob' as const, digest });
  t.true(await allowed('dev-a', blob(kept.digest)));
  t.true(await allowed('dev-a', blob(lost.digest)), 'named by the manifest, though missing');
  t.false(await allowed('dev-b', blob(lost.digest)), 'still nobody else’s');
  t.false(await allowed('dev-a', blob(`sha256:${'0'.repeat(64)}` as Digest)), 'a digest nothing names');
});
