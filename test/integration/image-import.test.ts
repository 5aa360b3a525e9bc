import { createHash } from 'node:crypto';
import {
  appendFileSync,
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import tarStream from 'tar-stream';
import { ImageRepo } from '../../src/content/images.js';
import { importImage } from '../../src/content/import.js';
import { ContentStore } from '../../src/content/store.js';
import { openDatabase } from '../../src/db/database.js';
import type { Digest } from '../../src/oci/digest.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { berth, berthSpawn, tempDir } from '../helpers/cli.js';
import {
  blobPath,
  buildBusyboxImage,
  buildMultiArchImage,
  manifestOf,
  putBlob,
  readIndex,
  tarDir,
  toDockerArchive,
  toOciArchive,
  writeIndex,
} from '../helpers/images.js';

const amd64 = parsePlatform('linux/amd64');

function newState() {
  const dir = tempDir('state');
  const db = openDatabase(path.join(dir, 'berth.db'));
  const store = new ContentStore(path.join(dir, 'content'));
  return { dir, db, store, images: new ImageRepo(db, store) };
}

async function blobCount(store: ContentStore): Promise<number> {
  let n = 0;
  for await (const _ of store.walk()) n++;
  return n;
}

async function allVerify(store: ContentStore): Promise<number> {
  let n = 0;
  for await (const b of store.walk()) {
    await store.verify(b.digest);
    n++;
  }
  return n;
}

// One image built per test file; each test copies what it mutates.
const fixture = (() => {
  let cached: ReturnType<typeof build> | undefined;
  function build() {
    const work = tempDir('img');
    const img = buildBusyboxImage(work);
    const docker = toDockerArchive(img, path.join(work, 'busybox.docker.tar'));
    const oci = toOciArchive(img, path.join(work, 'busybox.oci.tar'));
    return { work, img, docker, oci };
  }
  return () => {
    cached ??= build();
    return cached;
  };
})();

function copyLayout(src: string): string {
  const dst = tempDir('layout');
  for (const rel of ['oci-layout', 'index.json']) copyFileSync(path.join(src, rel), path.join(dst, rel));
  const blobs = path.join(dst, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  for (const f of readdirSync(path.join(src, 'blobs', 'sha256')))
    copyFileSync(path.join(src, 'blobs', 'sha256', f), path.join(blobs, f));
  return dst;
}

test('imports an OCI layout made by umoci: 2 layers, every blob verified, recorded in SQLite', async (t) => {
  const { img } = fixture();
  const s = newState();
  const res = await importImage(img.layout, s, { platform: amd64, tag: 'busybox:oci' });
  t.is(res.format, 'oci-layout');
  t.is(res.images.length, 1);
  const rec = s.images.get('busybox:oci');
  t.is<string, string>(rec.digest, img.manifestDigest);
  t.is(rec.platform, 'linux/amd64');
  const resolved = await s.images.resolve('busybox:oci');
  t.is(resolved.layers.length, 2);
  t.is(await allVerify(s.store), 4, 'manifest + config + 2 layers');
});

test('imports a docker-archive made by skopeo, and layers match the config diff_ids', async (t) => {
  const { docker } = fixture();
  const s = newState();
  const res = await importImage(docker, s, { platform: amd64 });
  t.is(res.format, 'docker-archive');
  t.deepEqual(
    res.images.map((i) => i.name),
    ['busybox:latest'],
  );
  const r = await s.images.resolve('busybox');
  t.deepEqual(
    r.layers.map((l) => l.digest),
    r.diffIds,
    'docker-archive layers are uncompressed: digest = diff_id',
  );
  t.is(await allVerify(s.store), 4, 'metadata files of the archive are not kept');
});

test('imports an oci-archive made by skopeo; the same image from all three sources has the same config', async (t) => {
  const { oci, img, docker } = fixture();
  const s = newState();
  await importImage(oci, s, { platform: amd64, tag: 'a:oci-archive' });
  await importImage(img.layout, s, { platform: amd64, tag: 'a:layout' });
  await importImage(docker, s, { platform: amd64, tag: 'a:docker' });
  const configs = ['a:oci-archive', 'a:layout', 'a:docker'].map((n) => s.images.get(n).configDigest);
  t.is(new Set(configs).size, 1);
});

test('multi-arch index: the device platform selects the manifest, variants matched', async (t) => {
  const work = tempDir('multi');
  const img = buildMultiArchImage(work, [
    { architecture: 'amd64' },
    { architecture: 'arm64' },
    { architecture: 'arm', variant: 'v6' },
    { architecture: 'arm', variant: 'v7' },
    { architecture: 'ppc64le' },
  ]);
  for (const [p, want] of [
    ['linux/amd64', 'linux/amd64'],
    ['linux/arm64', 'linux/arm64'],
    ['linux/arm/v7', 'linux/arm/v7'],
    ['linux/ppc64le', 'linux/ppc64le'],
  ] as const) {
    const s = newState();
    const res = await importImage(img.layout, s, { platform: parsePlatform(p), tag: 'multi:1' });
    t.is(res.images[0]!.platform, want, p);
    const arch = await s.images.resolve('multi:1');
    t.is(arch.config.architecture, parsePlatform(want).architecture);
    t.is(
      await blobCount(s.store),
      1 + 1 + 2,
      `${p}: manifest + config + layers; the index and other platforms are not kept`,
    );
    t.is<string | undefined, string>(res.images[0]!.indexDigest, img.manifestDigest);
  }
  // As an oci-archive (tar of the layout), keeping every platform
  const s = newState();
  const tar = tarDir(img.layout, path.join(work, 'multi.oci.tar'));
  const res = await importImage(tar, s, { platform: amd64, allPlatforms: true, tag: 'multi:all' });
  t.regex(res.images[0]!.platform, /linux\/arm\/v7/);
  t.is<string, string>(s.images.get('multi:all').digest, img.manifestDigest);
});

test('an index without the device platform fails clearly and stores nothing', async (t) => {
  const work = tempDir('multi2');
  const img = buildMultiArchImage(work, [{ architecture: 'amd64' }, { architecture: 'arm64' }]);
  const s = newState();
  const err = await t.throwsAsync(
    importImage(img.layout, s, { platform: parsePlatform('linux/arm/v7'), tag: 'x:1' }),
  );
  t.regex(err!.message, /no manifest for linux\/arm\/v7 \(it has: linux\/amd64, linux\/arm64\)/);
  t.is(await blobCount(s.store), 0);
  t.deepEqual(s.images.list(), []);
});

test('bad input: a corrupted layer blob is rejected, nothing half-stored', async (t) => {
  const layout = copyLayout(fixture().img.layout);
  const manifest = JSON.parse(readFileSync(blobPath(layout, manifestOf(layout, 'latest').digest), 'utf8'));
  const layer = blobPath(layout, manifest.layers[1].digest);
  const bytes = readFileSync(layer);
  const mid = bytes.length >> 1;
  bytes[mid] = (bytes[mid] ?? 0) ^ 0xff;
  writeFileSync(layer, bytes);
  const s = newState();
  const err = await t.throwsAsync(importImage(layout, s, { platform: amd64 }));
  t.is((err as { code?: string }).code, 'Corrupt');
  t.regex(err!.message, new RegExp(manifest.layers[1].digest));
  t.is(await blobCount(s.store), 0);
  t.deepEqual(s.images.list(), []);
  t.deepEqual(readdirSync(s.store.ingestDir), []);
});

test('bad input: a truncated docker-archive is rejected, nothing stored', async (t) => {
  const src = fixture().docker;
  const cut = path.join(tempDir('trunc'), 'cut.tar');
  copyFileSync(src, cut);
  truncateSync(cut, Math.floor(statSync(src).size * 0.6));
  const s = newState();
  const r = berth(['--state-dir', s.dir, 'image', 'import', cut]);
  t.not(r.code, 0);
  t.regex(r.stderr, /cut\.tar/);
  t.is(await blobCount(s.store), 0);
  const ls = berth(['--state-dir', s.dir, 'image', 'ls', '--json']);
  t.deepEqual(JSON.parse(ls.stdout), []);
});

test('bad input: a descriptor with the wrong digest (blob missing) names the blob', async (t) => {
  const layout = copyLayout(fixture().img.layout);
  const entry = manifestOf(layout, 'latest');
  const manifest = JSON.parse(readFileSync(blobPath(layout, entry.digest), 'utf8'));
  manifest.layers[0].digest = `sha256:${'0'.repeat(64)}`;
  const m = putBlob(layout, JSON.stringify(manifest));
  writeIndex(layout, { schemaVersion: 2, manifests: [{ ...entry, ...m }] });
  const s = newState();
  const err = await t.throwsAsync(importImage(layout, s, { platform: amd64 }));
  t.regex(err!.message, /layer 0 of .* sha256:0{64} is missing/);
  t.is(await blobCount(s.store), 0);
});

test('bad input: a wrong size in a descriptor is rejected', async (t) => {
  const layout = copyLayout(fixture().img.layout);
  const entry = manifestOf(layout, 'latest');
  const manifest = JSON.parse(readFileSync(blobPath(layout, entry.digest), 'utf8'));
  manifest.layers[0].size += 1;
  const m = putBlob(layout, JSON.stringify(manifest));
  writeIndex(layout, { schemaVersion: 2, manifests: [{ ...entry, ...m }] });
  const s = newState();
  const err = await t.throwsAsync(importImage(layout, s, { platform: amd64 }));
  t.is((err as { code?: string }).code, 'Corrupt');
  t.is(await blobCount(s.store), 0);
});

test('bad input: an unknown layer media type is rejected by name', async (t) => {
  const layout = copyLayout(fixture().img.layout);
  const entry = manifestOf(layout, 'latest');
  const manifest = JSON.parse(readFileSync(blobPath(layout, entry.digest), 'utf8'));
  manifest.layers[1].mediaType = 'application/x-made-up';
  const m = putBlob(layout, JSON.stringify(manifest));
  writeIndex(layout, { schemaVersion: 2, manifests: [{ ...entry, ...m }] });
  const s = newState();
  const err = await t.throwsAsync(importImage(layout, s, { platform: amd64 }));
  t.regex(err!.message, /layer 1 has unknown media type application\/x-made-up/);
  t.is(await blobCount(s.store), 0);
});

test('bad input: a manifest pointing at a missing blob', async (t) => {
  const layout = copyLayout(fixture().img.layout);
  const manifest = JSON.parse(readFileSync(blobPath(layout, manifestOf(layout, 'latest').digest), 'utf8'));
  rmSync(blobPath(layout, manifest.config.digest));
  const s = newState();
  const err = await t.throwsAsync(importImage(layout, s, { platform: amd64 }));
  t.regex(err!.message, new RegExp(`config of .*${manifest.config.digest}.* is missing`));
  t.is(await blobCount(s.store), 0);
});

test('bad input: an archive entry that tries to escape is rejected', async (t) => {
  const pack = tarStream.pack();
  const dir = tempDir('evil');
  const out = path.join(dir, 'evil.tar');
  const chunks: Buffer[] = [];
  pack.on('data', (c) => chunks.push(c as Buffer));
  const done = new Promise<void>((r) => pack.on('end', () => r()));
  pack.entry({ name: 'oci-layout' }, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  pack.entry({ name: '../../../tmp/berth-escape' }, 'pwned');
  pack.finalize();
  await done;
  writeFileSync(out, Buffer.concat(chunks));
  const s = newState();
  const err = await t.throwsAsync(importImage(out, s, { platform: amd64 }));
  t.regex(err!.message, /escapes the archive root/);
  t.is(await blobCount(s.store), 0);
});

test('bad input: a blob in an archive that does not match its name', async (t) => {
  const pack = tarStream.pack();
  const out = path.join(tempDir('liar'), 'liar.tar');
  const chunks: Buffer[] = [];
  pack.on('data', (c) => chunks.push(c as Buffer));
  const done = new Promise<void>((r) => pack.on('end', () => r()));
  const liar = createHash('sha256').update('honest').digest('hex');
  pack.entry({ name: 'oci-layout' }, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  pack.entry({ name: `blobs/sha256/${liar}` }, 'dishonest');
  pack.finalize();
  await done;
  writeFileSync(out, Buffer.concat(chunks));
  const s = newState();
  const err = await t.throwsAsync(importImage(out, s, { platform: amd64 }));
  t.is((err as { code?: string }).code, 'Corrupt');
  t.false(await s.store.has(`sha256:${liar}` as Digest));
});

test('bad input: not an image at all', async (t) => {
  const f = path.join(tempDir('junk'), 'junk.tar');
  writeFileSync(f, 'this is not a tar file at all, just some text'.repeat(30));
  const s = newState();
  const r = berth(['--state-dir', s.dir, 'image', 'import', f]);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /InvalidInput: .*junk\.tar/);
});

test('CLI: ls --json, inspect, export then re-import, rm with GC keeping shared layers', async (t) => {
  const { img, docker } = fixture();
  const s = tempDir('cli');
  t.is(berth(['--state-dir', s, 'image', 'import', img.layout, '--tag', 'bb:one']).code, 0);
  t.is(berth(['--state-dir', s, 'image', 'import', docker]).code, 0);
  const list = JSON.parse(berth(['--state-dir', s, 'image', 'ls', '--json']).stdout) as Array<{
    name: string;
  }>;
  t.deepEqual(
    list.map((i) => i.name),
    ['bb:one', 'busybox:latest'],
  );
  const inspect = JSON.parse(berth(['--state-dir', s, 'image', 'inspect', 'bb:one']).stdout);
  t.is(inspect.manifest.layers.length, 2);
  t.deepEqual(inspect.config.config.Cmd, ['/bin/sh', '-c', 'echo hello from busybox']);

  const out = path.join(tempDir('export'), 'layout');
  t.is(berth(['--state-dir', s, 'image', 'export', 'bb:one', out]).code, 0);
  const s2 = tempDir('cli2');
  const re = berth(['--state-dir', s2, 'image', 'import', out, '--json']);
  t.is(re.code, 0, re.stderr);
  t.is(JSON.parse(re.stdout).images[0].digest, inspect.digest, 'export → import keeps the manifest digest');
  t.is(readIndex(out).manifests[0]!.annotations!['org.opencontainers.image.ref.name'], 'bb:one');

  // the oci and docker images share nothing byte-wise except the config; removing one keeps the other whole
  const rm = berth(['--state-dir', s, 'image', 'rm', 'bb:one']);
  t.is(rm.code, 0, rm.stderr);
  t.regex(rm.stdout, /deleted 3 blobs/);
  const store = new ContentStore(path.join(s, 'content'));
  t.is(await allVerify(store), 4);
  t.is(berth(['--state-dir', s, 'image', 'inspect', 'bb:one']).code, 1);
});

test('crash safety: kill -9 during an import, then import again; no blob present unless it verifies', async (t) => {
  const work = tempDir('big');
  const big = Buffer.alloc(48 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE((i * 2654435761) >>> 0, i);
  const img = buildBusyboxImage(work, { files: { 'data/big.bin': big.toString('latin1') } });
  const archive = toDockerArchive(img, path.join(work, 'big.docker.tar'));
  const s = tempDir('crash');
  for (const delay of [150, 400, 900]) {
    const child = berthSpawn(['--state-dir', s, 'image', 'import', archive]);
    // listen from the start: on a fast machine the import can finish before the kill (then close came
    // and went before a later listener, and the test hung)
    const closed = new Promise((r) => child.on('close', r));
    await new Promise((r) => setTimeout(r, delay));
    child.kill('SIGKILL');
    await closed;
    const store = new ContentStore(path.join(s, 'content'));
    await allVerify(store); // throws if any present blob does not match its digest
  }
  appendFileSync(path.join(s, 'marker'), 'x');
  const r = berth(['--state-dir', s, 'image', 'import', archive]);
  t.is(r.code, 0, r.stderr);
  // leftovers of the killed imports are verified blobs no image uses; their leases died with them
  t.is(berth(['--state-dir', s, 'image', 'prune']).code, 0);
  const store = new ContentStore(path.join(s, 'content'));
  t.is(await allVerify(store), 4);
  t.deepEqual(
    readdirSync(store.ingestDir).filter((f) => !f.startsWith('tmp-')),
    [],
  );
});

test('push and import share one reader: a skopeo docker-archive pushed to the fleet, with progress, is the imported image', async (t) => {
  const { docker } = fixture();
  const s = newState();
  let last = 0;
  let total = 0;
  const res = await importImage(docker, s, {
    platform: amd64,
    tag: 'bb:1',
    onProgress: (n, of) => {
      last = n;
      total = of;
    },
  });
  t.is(res.format, 'docker-archive');
  t.is(total, statSync(docker).size);
  t.is(last, total, 'every byte counted once');

  const viaImport = berth([
    '--state-dir',
    tempDir('imp'),
    'image',
    'import',
    docker,
    '--tag',
    'bb:1',
    '--json',
  ]);
  t.is(viaImport.code, 0, viaImport.stderr);
  const fleet = tempDir('push');
  const push = berth(['--state-dir', fleet, 'fleet', 'push', docker, '--tag', 'bb:1']);
  t.is(push.code, 0, push.stderr);
  t.is(
    berth(['--state-dir', fleet, 'fleet', 'images', '--format', '{{.Name}} {{.Platforms}}']).stdout,
    'bb:1 linux/amd64\n',
  );
  t.true(
    push.stdout.startsWith(`bb:1 ${JSON.parse(viaImport.stdout).images[0].digest} linux/amd64`),
    push.stdout,
  );
});

test('a source with several images: <path>:<ref> (and skopeo transports) pick one; file errors name the path and what was expected', async (t) => {
  const work = tempDir('multi-tag');
  const v1 = buildBusyboxImage(work, { tag: 'v1' });
  buildBusyboxImage(work, { tag: 'v2', files: { 'etc/version': 'two' } });
  const layout = v1.layout;
  const docker = toDockerArchive(v1, path.join(work, 'bb.tar'), 'bb:1');
  const fleet = tempDir('fleet');

  const both = berth(['--state-dir', fleet, 'fleet', 'push', layout, '--tag', 'sample:v1']);
  t.is(both.code, 2);
  t.regex(both.stderr, /holds 2 images \(v1, v2\).*:<ref>/);

  const one = berth(['--state-dir', fleet, 'fleet', 'push', `${layout}:v2`, '--tag', 'sample:v2']);
  t.is(one.code, 0, one.stderr);
  t.true(one.stdout.startsWith(`sample:v2 ${manifestOf(layout, 'v2').digest}`), one.stdout);
  const oci = berth(['--state-dir', fleet, 'fleet', 'push', `oci:${layout}:v1`, '--tag', 'sample:v1']);
  t.is(oci.code, 0, oci.stderr);
  t.true(oci.stdout.startsWith(`sample:v1 ${manifestOf(layout, 'v1').digest}`), oci.stdout);
  const imp = berth(['--state-dir', tempDir('dev'), 'image', 'import', `docker-archive:${docker}:bb:1`]);
  t.is(imp.code, 0, imp.stderr);
  t.regex(imp.stdout, /imported bb:1 /);

  const noRef = berth(['--state-dir', fleet, 'fleet', 'push', `${layout}:v9`, '--tag', 'x:1']);
  t.is(noRef.code, 1);
  t.regex(noRef.stderr, new RegExp(`NotFound: ${layout}.* has no image v9 \\(it has: v1, v2\\)`));
  const wrongKind = berth(['--state-dir', fleet, 'fleet', 'push', `oci-archive:${docker}`, '--tag', 'x:1']);
  t.is(wrongKind.code, 2);
  t.regex(wrongKind.stderr, /bb\.tar is docker-archive, not oci-archive/);
  const missing = berth(['--state-dir', fleet, 'fleet', 'push', 'sample:v1', '--tag', 'sample:v1']);
  t.is(missing.code, 1);
  t.regex(
    missing.stderr,
    /NotFound: image source sample:v1: no such file or directory \(expected an OCI image layout directory, an oci-archive or a docker-archive tar/,
  );
  t.notRegex(missing.stderr, /ENOENT/);
  rmSync(path.join(layout, 'index.json'));
  const broken = berth(['--state-dir', fleet, 'fleet', 'push', `${layout}:v1`, '--tag', 'x:1']);
  t.is(broken.code, 2);
  t.regex(broken.stderr, new RegExp(`${layout}: OCI layout without index.json`));
});
