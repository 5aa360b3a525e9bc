import { promises as fsp, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import test from 'ava';
import { ImageRepo } from '../../../src/content/images.js';
import { importImage } from '../../../src/content/import.js';
import { ContentStore } from '../../../src/content/store.js';
import { exec } from '../../../src/lib/exec.js';
import { chainIds, type Digest, sha256Digest } from '../../../src/oci/digest.js';
import { hostPlatform } from '../../../src/oci/platform.js';
import { withTempMount } from '../../../src/snapshots/mount.js';
import type { Snapshotter } from '../../../src/snapshots/snapshotter.js';
import { storeBlobInput, unpackImage, unpackLayer } from '../../../src/snapshots/unpack.js';
import { buildBusyboxImage } from '../../helpers/images.js';
import { makeTar } from '../../helpers/layer-tar.js';
import { referenceExtract, snapshotTree } from '../../helpers/layer-tree.js';
import { needPrivileges } from '../../helpers/privileged.js';
import { freshSnapshotter, unpackTar } from '../../helpers/storage-fixture.js';

/**
 * Unpacking real layers (umoci, from busybox-static: layer 2 deletes a file and a directory through
 * whiteouts and adds a hardlink) into both backends, compared file by file with what GNU tar plus the
 * OCI whiteout rules produce from the same blobs.
 */
async function viewDir<T>(sn: Snapshotter, name: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const key = `view-${Math.random().toString(16).slice(2)}`;
  const m = await sn.view(key, name);
  try {
    return await withTempMount(m, fn);
  } finally {
    await sn.remove(key);
  }
}

async function snapshotNames(sn: Snapshotter): Promise<string[]> {
  const names: string[] = [];
  await sn.walk((i) => {
    names.push(i.name);
  });
  return names;
}

const combos = (['overlay', 'btrfs'] as const).flatMap((d) =>
  (['native', 'node'] as const).map((u) => [d, u] as const),
);

for (const [driver, unpacker] of combos) {
  const title = (what: string) => `${driver} ${unpacker}: ${what}`;
  test(
    title('a umoci busybox image unpacks like GNU tar + OCI whiteouts, and shared layers are reused'),
    async (t) => {
      if (!needPrivileges(t, { root: true, paths: ['/bin/busybox', '/usr/bin/umoci'] })) return;
      const fx = await freshSnapshotter(driver);
      const work = mkdtempSync(path.join(tmpdir(), 'berth-unpack-img-'));
      t.teardown(async () => {
        await fx.cleanup();
        await fsp.rm(work, { recursive: true, force: true });
      });
      const img = buildBusyboxImage(path.join(work, 'build'));
      const store = new ContentStore(path.join(fx.root, 'content'));
      await importImage(img.layout, { store, db: fx.db }, { platform: hostPlatform(), tag: 'busybox:test' });
      const resolved = await new ImageRepo(fx.db, store).resolve('busybox:test');
      t.is(resolved.layers.length, 2);

      const res = await unpackImage({
        store,
        snapshotter: fx.sn,
        layers: resolved.layers,
        diffIds: resolved.diffIds,
        unpacker,
      });
      t.deepEqual(
        res.layers.map((l) => l.chainId),
        chainIds(resolved.diffIds),
      );
      t.true(res.layers.every((l) => !l.reused));
      const info = await fx.sn.stat(res.chainId);
      t.is(info.kind, 'committed');
      t.is(info.parent, res.layers[0]!.chainId);

      const ref = path.join(work, 'ref');
      await fsp.mkdir(ref);
      await referenceExtract(
        resolved.layers.map((l) => store.blobPath(l.digest)),
        ref,
      );
      const expected = await snapshotTree(ref);
      const got = await viewDir(fx.sn, res.chainId, snapshotTree);
      // the root directory itself and mtimes of directories touched by whiteouts differ by design
      t.deepEqual(Object.keys(got.nodes).sort(), Object.keys(expected.nodes).sort());
      for (const [p, n] of Object.entries(expected.nodes)) t.deepEqual(got.nodes[p], n, p);
      t.deepEqual(got.links, expected.links);
      t.true(
        got.links.some((g) => g.includes('data/new.txt') && g.includes('data/new-link.txt')),
        'hardlink kept',
      );
      t.is(got.nodes['etc/deleted-later.txt'], undefined, 'whiteout applied');
      t.is(got.nodes['data/old'], undefined, 'whited-out directory gone');
      t.is(got.nodes['bin/sh']?.link, 'busybox');

      // a second unpack of the same image reuses every layer
      const again = await unpackImage({
        store,
        snapshotter: fx.sn,
        layers: resolved.layers,
        diffIds: resolved.diffIds,
        unpacker,
      });
      t.true(again.layers.every((l) => l.reused));
      let count = 0;
      await fx.sn.walk(() => {
        count++;
      });
      t.is(count, 2);
    },
  );

  test(
    title('opaque dirs, whiteouts, devices, fifos, xattrs, owners and modes from a crafted layer'),
    async (t) => {
      if (!needPrivileges(t, { root: true })) return;
      const fx = await freshSnapshotter(driver);
      t.teardown(() => fx.cleanup());
      const mtime = new Date(1_600_000_000_000);
      const base = await unpackTar(
        fx.sn,
        await makeTar([
          { name: 'etc/', type: 'directory' },
          { name: 'etc/keep', content: 'keep' },
          { name: 'etc/gone', content: 'gone' },
          { name: 'opq/', type: 'directory' },
          { name: 'opq/old1', content: '1' },
          { name: 'opq/sub/', type: 'directory' },
          { name: 'opq/sub/old2', content: '2' },
          { name: 'dir-gone/', type: 'directory' },
          { name: 'dir-gone/x', content: 'x' },
          { name: 'lowfile', content: 'low', mode: 0o600, uid: 1000, gid: 1000 },
        ]),
        undefined,
        unpacker,
      );
      const top = await unpackTar(
        fx.sn,
        await makeTar([
          { name: 'etc/.wh.gone', content: '' },
          { name: '.wh.dir-gone', content: '' },
          { name: 'opq/', type: 'directory', mode: 0o750 },
          { name: 'opq/.wh..wh..opq', content: '' },
          { name: 'opq/new', content: 'new' },
          { name: 'dev/', type: 'directory' },
          { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
          { name: 'dev/loopx', type: 'block-device', devmajor: 7, devminor: 200, mode: 0o660, gid: 6 },
          { name: 'run.fifo', type: 'fifo', mode: 0o600 },
          { name: 'suid', content: '#!/bin/sh\n', mode: 0o4755, uid: 1000, gid: 1000, mtime },
          { name: 'owned/', type: 'directory', uid: 123, gid: 456, mode: 0o711, mtime },
          { name: 'owned/f', content: 'f', uid: 123, gid: 456, mode: 0o640, mtime },
          { name: 'xattr', content: 'x', pax: { 'SCHILY.xattr.user.berth': 'hello' } },
          { name: 'evil-xattr', content: 'x', pax: { 'SCHILY.xattr.trusted.overlay.redirect': '/etc' } },
          { name: 'hl-to-lower', type: 'link', linkname: 'lowfile' },
          // a parent made on the way is this layer's own: its whiteout (OCI: lower layers only) leaves it
          { name: 'made/sub/f', content: 'f' },
          { name: '.wh.made', content: '' },
          // owner and mtime that only PAX can carry (the ustar fields say 0)
          { name: 'big-uid', content: 'b', pax: { uid: '3000000', gid: '3000001', mtime: '1600000000.5' } },
        ]),
        base,
        unpacker,
      );
      const tree = await viewDir(fx.sn, top, async (dir) => {
        const s = await snapshotTree(dir);
        const x = await exec('getfattr', ['--absolute-names', '-d', '-m', '-', path.join(dir, 'xattr')], {
          allowFailure: true,
        });
        return { ...s, xattrs: x.stdout };
      });
      const n = tree.nodes;
      t.is(n['etc/keep']?.type, 'file');
      t.is(n['etc/gone'], undefined);
      t.is(n['dir-gone'], undefined);
      t.deepEqual(
        Object.keys(n).filter((k) => k.startsWith('opq/')),
        ['opq/new'],
      );
      t.is(n.opq?.mode, 0o750);
      t.deepEqual([n['dev/null']?.type, n['dev/null']?.rdev, n['dev/null']?.mode], ['char', 0x103, 0o666]);
      t.deepEqual([n['dev/loopx']?.type, n['dev/loopx']?.gid, n['dev/loopx']?.mode], ['block', 6, 0o660]);
      t.is(n['run.fifo']?.type, 'fifo');
      t.deepEqual([n.suid?.mode, n.suid?.uid, n.suid?.mtime], [0o4755, 1000, 1_600_000_000]);
      t.deepEqual([n.owned?.uid, n.owned?.gid, n.owned?.mode], [123, 456, 0o711]);
      t.deepEqual([n['owned/f']?.uid, n['owned/f']?.mode], [123, 0o640]);
      t.deepEqual(tree.links, [['hl-to-lower', 'lowfile']]);
      t.is(n['made/sub/f']?.type, 'file');
      t.deepEqual(
        [n['big-uid']?.uid, n['big-uid']?.gid, n['big-uid']?.mtime],
        [3_000_000, 3_000_001, 1_600_000_000],
      );
      t.deepEqual([n.lowfile?.mode, n.lowfile?.uid], [0o600, 1000]);
      if (tree.xattrs) t.regex(tree.xattrs, /user\.berth="hello"/);
      t.notRegex(tree.xattrs, /redirect/);
    },
  );

  test(
    title('gzip and zstd layers give the same DiffID; a wrong DiffID or a corrupt stream commits nothing'),
    async (t) => {
      if (!needPrivileges(t, { root: true, paths: ['/usr/bin/zstd'] })) return;
      const fx = await freshSnapshotter(driver);
      const work = mkdtempSync(path.join(tmpdir(), 'berth-unpack-z-'));
      t.teardown(async () => {
        await fx.cleanup();
        await fsp.rm(work, { recursive: true, force: true });
      });
      const raw = await makeTar([
        { name: 'a/', type: 'directory' },
        { name: 'a/big', content: Buffer.alloc(3 * 1024 * 1024, 7) },
        { name: 'a/small', content: 'small' },
      ]);
      const diffId = sha256Digest(raw);
      await fsp.writeFile(path.join(work, 'layer.tar'), raw);
      await exec('zstd', ['-q', '-f', path.join(work, 'layer.tar'), '-o', path.join(work, 'layer.tar.zst')]);
      await exec('gzip', ['-k', '-f', path.join(work, 'layer.tar')]);
      const names: Digest[] = [];
      for (const [file, compression] of [
        ['layer.tar.gz', 'gzip'],
        ['layer.tar.zst', 'zstd'],
      ] as const) {
        const chainId = sha256Digest(`${file}`);
        names.push(chainId);
        const r = await unpackLayer({
          snapshotter: fx.sn,
          chainId,
          parent: undefined,
          diffId,
          open: async () => (await import('node:fs')).createReadStream(path.join(work, file)),
          compression,
          unpacker,
        });
        t.false(r.reused);
        t.is(r.size, raw.length);
        const files = await viewDir(fx.sn, chainId, (d) => snapshotTree(d));
        t.is(files.nodes['a/big']?.size, 3 * 1024 * 1024);
      }
      const before = await snapshotNames(fx.sn);
      const wrong = sha256Digest('not this layer');
      const err = await t.throwsAsync(
        unpackLayer({
          snapshotter: fx.sn,
          chainId: sha256Digest('x'),
          parent: undefined,
          diffId: wrong,
          open: async () => Readable.from([raw]),
          compression: 'none',
          unpacker,
        }),
      );
      t.is((err as { code?: string }).code, 'Corrupt');
      t.regex(err!.message, /DiffID mismatch/);
      const zst = await fsp.readFile(path.join(work, 'layer.tar.zst'));
      zst.fill(0x55, 20, 200);
      const err2 = await t.throwsAsync(
        unpackLayer({
          snapshotter: fx.sn,
          chainId: sha256Digest('y'),
          parent: undefined,
          diffId,
          open: async () => Readable.from([zst]),
          compression: 'zstd',
          unpacker,
        }),
      );
      t.is((err2 as { code?: string }).code, 'Corrupt');
      const after = await snapshotNames(fx.sn);
      t.deepEqual(after, before, 'no snapshot left by the failed layers');
    },
  );

  test(
    title(
      'an uncompressed store blob unpacks under its digest as DiffID; a config DiffID that differs, or a plain file that does not hash to it, commits nothing',
    ),
    async (t) => {
      if (!needPrivileges(t, { root: true })) return;
      const fx = await freshSnapshotter(driver);
      const work = mkdtempSync(path.join(tmpdir(), 'berth-unpack-blob-'));
      t.teardown(async () => {
        await fx.cleanup();
        await fsp.rm(work, { recursive: true, force: true });
      });
      const raw = await makeTar([
        { name: 'a/', type: 'directory' },
        { name: 'a/big', content: Buffer.alloc(1024 * 1024, 3) },
        { name: 'a/small', content: 'small' },
      ]);
      const store = new ContentStore(path.join(fx.root, 'content'));
      const blob = await store.put(raw);
      await fsp.writeFile(path.join(work, 'layer.tar'), raw);
      await exec('gzip', ['-k', '-f', path.join(work, 'layer.tar')]);
      const gz = await store.put(await fsp.readFile(path.join(work, 'layer.tar.gz')));

      // uncompressed: the blob's digest is the DiffID; gzip: the blob's digest is not, the stream is hashed
      for (const [d, compression] of [
        [blob.digest, 'none'],
        [gz.digest, 'gzip'],
      ] as const) {
        const chainId = sha256Digest(`ok-${compression}`);
        const r = await unpackLayer({
          snapshotter: fx.sn,
          chainId,
          parent: undefined,
          diffId: blob.digest,
          open: () => storeBlobInput(store, d),
          compression,
          unpacker,
        });
        t.deepEqual([r.diffId, r.size, r.reused], [blob.digest, raw.length, false]);
        const files = await viewDir(fx.sn, chainId, (dir) => snapshotTree(dir));
        t.deepEqual([files.nodes['a/big']?.size, files.nodes['a/small']?.size], [1024 * 1024, 5]);
      }
      const before = await snapshotNames(fx.sn);
      // the image config names another DiffID than the uncompressed blob's digest
      const other = sha256Digest('another layer');
      const err = await t.throwsAsync(
        unpackLayer({
          snapshotter: fx.sn,
          chainId: sha256Digest('wrong-blob'),
          parent: undefined,
          diffId: other,
          open: () => storeBlobInput(store, blob.digest),
          compression: 'none',
          unpacker,
        }),
      );
      t.is((err as { code?: string }).code, 'Corrupt');
      t.regex(err!.message, /DiffID mismatch: expected sha256:[0-9a-f]{64}, but the layer is uncompressed/);
      // a file that is not a store blob is hashed while it is applied, as a stream is
      const err2 = await t.throwsAsync(
        unpackLayer({
          snapshotter: fx.sn,
          chainId: sha256Digest('wrong-file'),
          parent: undefined,
          diffId: other,
          open: async () => ({ file: path.join(work, 'layer.tar') }),
          compression: 'none',
          unpacker,
        }),
      );
      t.is((err2 as { code?: string }).code, 'Corrupt');
      t.regex(
        err2!.message,
        new RegExp(`DiffID mismatch: expected ${other}, the uncompressed layer hashes to ${blob.digest}`),
      );
      const after = await snapshotNames(fx.sn);
      t.deepEqual(after, before, 'no snapshot left by the refused layers');
    },
  );
}
