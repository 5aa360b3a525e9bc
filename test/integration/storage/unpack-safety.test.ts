import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { withTempMount } from '../../../src/snapshots/mount.js';
import type { Snapshotter } from '../../../src/snapshots/snapshotter.js';
import { makeTar, type TarEntry } from '../../helpers/layer-tar.js';
import { needPrivileges } from '../../helpers/privileged.js';
import { freshSnapshotter, unpackTar } from '../../helpers/storage-fixture.js';

/**
 * The tar-slip corpus: every layer here tries to write outside the snapshot root. Each is unpacked
 * for real into an overlay snapshotter; the "outside" directory is a real directory next to it that
 * must stay untouched. Tricks that can be made harmless land inside the root; tricks that cannot
 * (`..`, hardlinks to files that are not in the layer) fail the layer, and then nothing is committed.
 */
async function setup(t: ExecutionContext) {
  const fx = await freshSnapshotter('overlay');
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

async function tree(sn: Snapshotter, name: string): Promise<Record<string, string>> {
  const key = `view-${randomBytes(4).toString('hex')}`;
  const m = await sn.view(key, name);
  try {
    return await withTempMount(m, async (dir) => {
      const out: Record<string, string> = {};
      const visit = async (rel: string) => {
        for (const e of await fsp.readdir(path.join(dir, rel), { withFileTypes: true })) {
          const r = rel ? `${rel}/${e.name}` : e.name;
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
  } finally {
    await sn.remove(key);
  }
}

async function snapshots(sn: Snapshotter): Promise<string[]> {
  const out: string[] = [];
  await sn.walk((i) => {
    out.push(`${i.kind}:${i.name}`);
  });
  return out;
}

async function expectRefused(t: ExecutionContext, sn: Snapshotter, entries: TarEntry[], why: RegExp) {
  const before = await snapshots(sn);
  const err = await t.throwsAsync(unpackTar(sn, await makeTar(entries)));
  t.regex(err!.message, why);
  t.deepEqual(await snapshots(sn), before, 'nothing committed, the active snapshot removed');
}

const priv = (t: ExecutionContext) => needPrivileges(t, { root: true });

test('an absolute path is made relative to the snapshot root', async (t) => {
  if (!priv(t)) return;
  const { sn, outside, assertOutsideUntouched } = await setup(t);
  const name = path.join(outside, 'abs-escape');
  const chain = await unpackTar(sn, await makeTar([{ name, content: 'x' }]));
  await assertOutsideUntouched();
  t.is((await tree(sn, chain))[name.slice(1)], 'x');
});

test("'..' in a name fails the layer (also hidden mid-path); nothing is committed", async (t) => {
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

test('an absolute symlink in a parent path resolves inside the root', async (t) => {
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

test('a relative symlink climbing with ../ in a parent path stays inside the root', async (t) => {
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

test('hardlinks to files outside the root fail the layer', async (t) => {
  if (!priv(t)) return;
  const { sn, outside, assertOutsideUntouched } = await setup(t);
  const target = path.join(outside, 'target');
  await expectRefused(t, sn, [{ name: 'h', type: 'link', linkname: target }], /does not exist in the layer/);
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

test('a directory replaced by a symlink, then written through, stays inside the root', async (t) => {
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

test('a symlink as the last component is replaced, never written through', async (t) => {
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

test('whiteouts cannot delete outside the root', async (t) => {
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

test('an unpack that died leaves an extract snapshot that the next unpack removes', async (t) => {
  if (!priv(t)) return;
  const { sn } = await setup(t);
  const { removeStaleExtracts } = await import('../../../src/snapshots/unpack.js');
  // a dead unpacker (pid that cannot exist) and a live one (this process)
  await sn.prepare('extract-dead', undefined, { 'berth.unpack': 'x', 'berth.unpack.pid': '999999999' });
  const boot = (await fsp.readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  await sn.prepare('extract-live', undefined, {
    'berth.unpack': 'y',
    'berth.unpack.pid': String(process.pid),
    'berth.unpack.boot': boot,
  });
  await sn.prepare('container-1');
  t.deepEqual(await removeStaleExtracts(sn), ['extract-dead']);
  t.deepEqual((await snapshots(sn)).sort(), ['active:container-1', 'active:extract-live']);
});
