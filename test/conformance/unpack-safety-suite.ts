import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext, TestFn } from 'ava';
import { exec } from '../../src/lib/exec.js';
import type { Digest } from '../../src/oci/digest.js';
import type { Unpacker } from '../../src/snapshots/apply.js';
import { withTempMount } from '../../src/snapshots/mount.js';
import type { Snapshotter } from '../../src/snapshots/snapshotter.js';
import { makeTar, type TarEntry } from '../helpers/layer-tar.js';
import { needPrivileges } from '../helpers/privileged.js';
import { unpackTar as unpackWith } from '../helpers/storage-fixture.js';

/**
 * The tar-slip corpus, as a suite every backend (overlay, btrfs, devmapper) and both extractors (the
 * native one and the Node fallback, src/snapshots/apply.ts) must pass:
 *
 *     unpackSafetySuite(test, 'overlay', 'native', async () => ({ sn, cleanup }));
 *
 * Every layer here tries to write outside the snapshot root. Each is unpacked for real; the "outside"
 * directory is a real directory next to it that must stay untouched. Tricks that can be made harmless
 * land inside the root; tricks that cannot (`..`, hardlinks to files that are not in the layer) fail the
 * layer, and then nothing is committed.
 */
export type UnpackFixtureFactory = () => Promise<{ sn: Snapshotter; cleanup: () => Promise<void> }>;

export function unpackSafetySuite(
  test: TestFn,
  backend: string,
  unpacker: Exclude<Unpacker, 'auto'>,
  factory: UnpackFixtureFactory,
): void {
  const title = (s: string) => `unpack safety (${backend}, ${unpacker}): ${s}`;
  const unpackTar = (sn: Snapshotter, tarBytes: Buffer, parent?: Digest) =>
    unpackWith(sn, tarBytes, parent, unpacker);

  async function setup(t: ExecutionContext) {
    const fx = await factory();
    const outside = mkdtempSync(path.join(tmpdir(), 'berth-outside-'));
    await fsp.writeFile(path.join(outside, 'target'), 'original');
    t.teardown(async () => {
      await fx.cleanup();
      await fsp.rm(outside, { recursive: true, force: true });
    });
    const assertOutsideUntouched = async () => {
      t.deepEqual((await fsp.readdir(outside)).sort(), ['target'], 'nothing new outside the root');
      t.is(await fsp.readFile(path.join(outside, 'target'), 'utf8'), 'original');
      t.is(statSync(path.join(outside, 'target')).nlink, 1, 'no hardlink to the outside file');
    };
    return { sn: fx.sn, outside, assertOutsideUntouched };
  }

  async function expectRefused(t: ExecutionContext, sn: Snapshotter, entries: TarEntry[], why: RegExp) {
    await expectRefusedTar(t, sn, await makeTar(entries), why);
  }

  async function expectRefusedTar(
    t: ExecutionContext,
    sn: Snapshotter,
    tarBytes: Buffer,
    why: RegExp,
    parent?: Digest,
  ) {
    const before = await snapshots(sn);
    const err = await t.throwsAsync(unpackTar(sn, tarBytes, parent));
    t.regex(err!.message, why);
    t.deepEqual(await snapshots(sn), before, 'nothing committed, the active snapshot removed');
  }

  const priv = (t: ExecutionContext) => needPrivileges(t, { root: true });

  test(title('an absolute path is made relative to the snapshot root'), async (t) => {
    if (!priv(t)) return;
    const { sn, outside, assertOutsideUntouched } = await setup(t);
    const name = path.join(outside, 'abs-escape');
    const chain = await unpackTar(sn, await makeTar([{ name, content: 'x' }]));
    await assertOutsideUntouched();
    t.is((await tree(sn, chain))[name.slice(1)], 'x');
  });

  test(title("'..' in a name fails the layer (also hidden mid-path); nothing is committed"), async (t) => {
    if (!priv(t)) return;
    const { sn, assertOutsideUntouched } = await setup(t);
    await expectRefused(t, sn, [{ name: '../../../../../../../tmp/escape', content: 'x' }], /climbs out/);
    await expectRefused(
      t,
      sn,
      [
        { name: 'ok/', type: 'directory' },
        { name: 'ok/../../escape', content: 'x' },
      ],
      /climbs out/,
    );
    await assertOutsideUntouched();
  });

  test(title('an absolute symlink in a parent path resolves inside the root'), async (t) => {
    if (!priv(t)) return;
    const { sn, outside, assertOutsideUntouched } = await setup(t);
    const chain = await unpackTar(
      sn,
      await makeTar([
        { name: 'evil', type: 'symlink', linkname: outside },
        { name: 'evil/pwned', content: 'x' },
        { name: 'evil/target', content: 'overwritten?' },
      ]),
    );
    await assertOutsideUntouched();
    const files = await tree(sn, chain);
    t.is(files[`${outside.slice(1)}/pwned`], 'x');
    t.is(files[`${outside.slice(1)}/target`], 'overwritten?');
    t.is(files.evil, `-> ${outside}`);
  });

  test(title('a relative symlink climbing with ../ in a parent path stays inside the root'), async (t) => {
    if (!priv(t)) return;
    const { sn, outside, assertOutsideUntouched } = await setup(t);
    const up = '../'.repeat(30);
    const chain = await unpackTar(
      sn,
      await makeTar([
        { name: 'a/', type: 'directory' },
        { name: 'a/evil', type: 'symlink', linkname: `${up}${outside.slice(1)}` },
        { name: 'a/evil/pwned', content: 'x' },
        // a chain of links, each hop resolved inside the root
        { name: 'hop1', type: 'symlink', linkname: 'a/evil' },
        { name: 'hop1/pwned2', content: 'y' },
      ]),
    );
    await assertOutsideUntouched();
    const files = await tree(sn, chain);
    t.is(files[`${outside.slice(1)}/pwned`], 'x');
    t.is(files[`${outside.slice(1)}/pwned2`], 'y');
  });

  test(title('hardlinks to files outside the root fail the layer'), async (t) => {
    if (!priv(t)) return;
    const { sn, outside, assertOutsideUntouched } = await setup(t);
    const target = path.join(outside, 'target');
    await expectRefused(
      t,
      sn,
      [{ name: 'h', type: 'link', linkname: target }],
      /does not exist in the layer/,
    );
    await expectRefused(t, sn, [{ name: 'h', type: 'link', linkname: `../../../..${target}` }], /climbs out/);
    await expectRefused(
      t,
      sn,
      [
        { name: 's', type: 'symlink', linkname: outside },
        { name: 'h', type: 'link', linkname: 's/target' },
      ],
      /does not exist in the layer/,
    );
    await expectRefused(
      t,
      sn,
      [
        { name: 'f', type: 'symlink', linkname: target },
        // a hardlink to the symlink itself is fine in tar, but then writing through it must not follow
        { name: 'h', type: 'link', linkname: 'f' },
        { name: 'h', content: 'through the link?' },
        { name: '../x', content: 'and then fail' },
      ],
      /climbs out/,
    );
    await assertOutsideUntouched();
  });

  test(title('a directory replaced by a symlink, then written through, stays inside the root'), async (t) => {
    if (!priv(t)) return;
    const { sn, outside, assertOutsideUntouched } = await setup(t);
    const chain = await unpackTar(
      sn,
      await makeTar([
        { name: 'd/', type: 'directory' },
        { name: 'd/inside', content: 'i' },
        { name: 'd', type: 'symlink', linkname: outside },
        { name: 'd/pwned', content: 'x' },
        { name: 'd', type: 'symlink', linkname: '../../../../..' },
        { name: `d/${outside.slice(1)}/pwned2`, content: 'y' },
      ]),
    );
    await assertOutsideUntouched();
    const files = await tree(sn, chain);
    t.is(files[`${outside.slice(1)}/pwned`], 'x');
    t.is(files[`${outside.slice(1)}/pwned2`], 'y');
    t.is(files['d/inside'], undefined);
  });

  test(title('a symlink as the last component is replaced, never written through'), async (t) => {
    if (!priv(t)) return;
    const { sn, outside, assertOutsideUntouched } = await setup(t);
    const chain = await unpackTar(
      sn,
      await makeTar([
        { name: 'f', type: 'symlink', linkname: path.join(outside, 'target') },
        { name: 'f', content: 'replaced' },
        { name: 'dev', type: 'symlink', linkname: outside },
        { name: 'dev/fifo', type: 'fifo' },
        { name: 'n', type: 'symlink', linkname: path.join(outside, 'target') },
        { name: 'n', type: 'character-device', devmajor: 1, devminor: 3 },
      ]),
    );
    await assertOutsideUntouched();
    const files = await tree(sn, chain);
    t.is(files.f, 'replaced');
    t.is(files[`${outside.slice(1)}/fifo`], 'special');
    t.is(files.n, 'special');
    t.false(existsSync(path.join(outside, 'fifo')));
  });

  test(title('whiteouts cannot delete outside the root'), async (t) => {
    if (!priv(t)) return;
    const { sn, outside, assertOutsideUntouched } = await setup(t);
    const base = await unpackTar(sn, await makeTar([{ name: 'keep', content: 'k' }]));
    const top = await unpackTar(
      sn,
      await makeTar([
        { name: 'evil', type: 'symlink', linkname: outside },
        { name: 'evil/.wh.target', content: '' },
        { name: 'evil/.wh..wh..opq', content: '' },
      ]),
      base,
    );
    await assertOutsideUntouched();
    t.is((await tree(sn, top)).keep, 'k');
    await expectRefused(t, sn, [{ name: '.wh..', content: '' }], /malformed whiteout/);
  });

  // issue 15 item 2: an earlier layer's symlink must not lead a later layer's paths out of the root.
  // overlay used to copy the hardlink's missing source up from the lowers by joining paths, following
  // the lower layer's symlink out to the host file.
  test(title("a hardlink through an earlier layer's symlink cannot copy a host file in"), async (t) => {
    if (!priv(t)) return;
    const { sn, outside, assertOutsideUntouched } = await setup(t);
    await fsp.writeFile(path.join(outside, 'secret'), 'host secret', { mode: 0o600 });
    const base = await unpackTar(sn, await makeTar([{ name: 'lnk', type: 'symlink', linkname: outside }]));
    // the report's layer: a directory over the symlink, then a hardlink through it
    await expectRefusedTar(
      t,
      sn,
      await makeTar([
        { name: 'lnk/', type: 'directory' },
        { name: 'leak', type: 'link', linkname: 'lnk/secret' },
      ]),
      /does not exist in the layer/,
      base,
    );
    // straight through the lower layer's symlink, absolute and climbing
    await expectRefusedTar(
      t,
      sn,
      await makeTar([{ name: 'leak', type: 'link', linkname: 'lnk/secret' }]),
      /does not exist in the layer/,
      base,
    );
    const climbing = await unpackTar(
      sn,
      await makeTar([{ name: 'up', type: 'symlink', linkname: `${'../'.repeat(20)}${outside.slice(1)}` }]),
      base,
    );
    await expectRefusedTar(
      t,
      sn,
      await makeTar([{ name: 'leak', type: 'link', linkname: 'up/secret' }]),
      /does not exist in the layer/,
      climbing,
    );
    t.is(statSync(path.join(outside, 'secret')).nlink, 1);
    await fsp.rm(path.join(outside, 'secret'));
    await assertOutsideUntouched();
  });

  test(title("a lower layer's symlink resolves inside the root for a hardlink's source"), async (t) => {
    if (!priv(t)) return;
    const { sn, outside, assertOutsideUntouched } = await setup(t);
    await fsp.writeFile(path.join(outside, 'secret'), 'host secret');
    // /lnk -> /data inside the image: the hardlink's source is the image's own /data/secret
    const base = await unpackTar(
      sn,
      await makeTar([
        { name: 'data/', type: 'directory' },
        { name: 'data/secret', content: 'inner', mode: 0o640, uid: 7, gid: 8 },
        { name: 'lnk', type: 'symlink', linkname: '/data' },
        { name: 'rel', type: 'symlink', linkname: `../../../data` },
      ]),
    );
    const top = await unpackTar(
      sn,
      await makeTar([
        { name: 'leak', type: 'link', linkname: 'lnk/secret' },
        { name: 'leak2', type: 'link', linkname: 'rel/secret' },
      ]),
      base,
    );
    const files = await tree(sn, top);
    t.is(files.leak, 'inner');
    t.is(files.leak2, 'inner');
    t.is(files['data/secret'], 'inner');
    t.is(files.lnk, '-> /data');
    await fsp.rm(path.join(outside, 'secret'));
    await assertOutsideUntouched();
  });

  test(
    title("a directory the layer creates under an earlier layer's symlink takes no host metadata"),
    async (t) => {
      if (!priv(t)) return;
      const { sn, outside, assertOutsideUntouched } = await setup(t);
      await fsp.mkdir(path.join(outside, 'hostdir'), { mode: 0o700 });
      await fsp.chown(path.join(outside, 'hostdir'), 4242, 4243);
      const base = await unpackTar(sn, await makeTar([{ name: 'lnk', type: 'symlink', linkname: outside }]));
      const top = await unpackTar(
        sn,
        await makeTar([
          { name: 'lnk/', type: 'directory' },
          // lnk/hostdir has no entry of its own: it is made as a parent
          { name: 'lnk/hostdir/f', content: 'f' },
        ]),
        base,
      );
      const meta = await viewStat(sn, top, 'lnk/hostdir');
      t.deepEqual(meta, { mode: 0o755, uid: 0, gid: 0 }, 'a fresh parent, not the host directory');
      t.is((await tree(sn, top))['lnk/hostdir/f'], 'f');
      await fsp.rm(path.join(outside, 'hostdir'), { recursive: true });
      await assertOutsideUntouched();
    },
  );

  // issue 15 item 7: GNU sparse members are expanded (native) or refused (fallback), never mangled
  test(title('GNU sparse files (old GNU, PAX 0.0, 0.1, 1.0) are expanded exactly or refused'), async (t) => {
    if (!priv(t)) return;
    const { sn } = await setup(t);
    const work = mkdtempSync(path.join(tmpdir(), 'berth-sparse-'));
    t.teardown(() => fsp.rm(work, { recursive: true, force: true }));
    const src = path.join(work, 'src');
    await fsp.mkdir(src);
    // data, a hole, data, a hole at the end: 4 MiB logical, 3 data runs
    const sparseFile = path.join(src, 'sparse.bin');
    const fh = await fsp.open(sparseFile, 'w');
    await fh.write(Buffer.alloc(4096, 0x61), 0, 4096, 0);
    await fh.write(Buffer.alloc(8192, 0x62), 0, 8192, 1024 * 1024);
    await fh.write(Buffer.from('end of data'), 0, 11, 3 * 1024 * 1024);
    await fh.truncate(4 * 1024 * 1024);
    await fh.close();
    await fsp.writeFile(path.join(src, 'plain'), 'plain');
    const expected = await fsp.readFile(sparseFile);
    for (const [fmt, args] of [
      ['old GNU', ['--format=gnu']],
      ['PAX 0.0', ['--format=posix', '--sparse-version=0.0']],
      ['PAX 0.1', ['--format=posix', '--sparse-version=0.1']],
      ['PAX 1.0', ['--format=posix', '--sparse-version=1.0']],
    ] as const) {
      const out = path.join(work, 'layer.tar');
      await exec('tar', ['-c', '-S', ...args, '-f', out, '-C', src, 'sparse.bin', 'plain']);
      const layer = await fsp.readFile(out);
      const list = (await exec('tar', ['-tvf', out])).stdout;
      t.regex(list, /sparse\.bin/, `${fmt}: the tar holds the sparse file`);
      if (unpacker === 'node') {
        await expectRefusedTar(t, sn, layer, /GNU sparse|unsupported type/);
        continue;
      }
      const chain = await unpackTar(sn, layer);
      const got = await viewRead(sn, chain, 'sparse.bin');
      t.is(got.length, expected.length, `${fmt}: size`);
      t.true(got.equals(expected), `${fmt}: content`);
      t.is((await tree(sn, chain)).plain, 'plain', `${fmt}: the entry after it`);
      t.false(
        Object.keys(await tree(sn, chain)).some((k) => k.includes('GNUSparseFile')),
        `${fmt}: no raw map`,
      );
    }
  });
}

async function snapshots(sn: Snapshotter): Promise<string[]> {
  const out: string[] = [];
  await sn.walk((i) => {
    out.push(`${i.kind}:${i.name}`);
  });
  return out;
}

async function inView<T>(sn: Snapshotter, name: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const key = `view-${randomBytes(4).toString('hex')}`;
  const m = await sn.view(key, name);
  try {
    return await withTempMount(m, fn);
  } finally {
    await sn.remove(key);
  }
}

/** The snapshot's files as a map: contents of files, `-> target` for symlinks, 'dir', 'special'. */
export function tree(sn: Snapshotter, name: string): Promise<Record<string, string>> {
  return inView(sn, name, async (dir) => {
    const out: Record<string, string> = {};
    const visit = async (rel: string) => {
      for (const e of await fsp.readdir(path.join(dir, rel), { withFileTypes: true })) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (r === 'lost+found') continue;
        if (e.isSymbolicLink()) out[r] = `-> ${await fsp.readlink(path.join(dir, r))}`;
        else if (e.isDirectory()) {
          out[`${r}/`] = 'dir';
          await visit(r);
        } else if (e.isFile()) out[r] = await fsp.readFile(path.join(dir, r), 'utf8');
        else out[r] = 'special';
      }
    };
    await visit('');
    return out;
  });
}

function viewRead(sn: Snapshotter, name: string, rel: string): Promise<Buffer> {
  return inView(sn, name, (dir) => fsp.readFile(path.join(dir, rel)));
}

function viewStat(
  sn: Snapshotter,
  name: string,
  rel: string,
): Promise<{ mode: number; uid: number; gid: number }> {
  return inView(sn, name, async (dir) => {
    const st = await fsp.lstat(path.join(dir, rel));
    return { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  });
}
