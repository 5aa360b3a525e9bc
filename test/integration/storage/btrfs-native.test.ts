import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { exec } from '../../../src/lib/exec.js';
import { developmentStorage } from '../../../src/snapshots/storage-helper.js';
import { needPrivileges } from '../../helpers/privileged.js';
import { freshSnapshotter } from '../../helpers/storage-fixture.js';
import { makeLoopFs } from '../../helpers/storage-loop.js';

const { btrfs } = developmentStorage;

test('berth-storage: subvolume create/snapshot/readonly/delete through ioctls, qgroup usage', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/dev/loop-control'] })) return;
  const loop = await makeLoopFs({ fs: 'btrfs', sizeMiB: 200, quota: true });
  t.teardown(() => loop.cleanup());
  const a = path.join(loop.mountpoint, 'a');
  const b = path.join(loop.mountpoint, 'b');
  await btrfs.create(a);
  await fsp.writeFile(path.join(a, 'f'), Buffer.alloc(2 * 1024 * 1024, 1));
  await btrfs.snapshot(a, b, true);
  t.true((await btrfs.info(b)).readonly);
  t.false((await btrfs.info(a)).readonly);
  t.not((await btrfs.info(a)).subvolid, (await btrfs.info(b)).subvolid);
  await t.throwsAsync(fsp.writeFile(path.join(b, 'g'), 'x'), { code: 'EROFS' });
  // btrfs-progs agrees that these are subvolumes
  const list = (await exec('btrfs', ['subvolume', 'list', loop.mountpoint])).stdout;
  t.regex(list, /path a$/m);
  t.regex(list, /path b$/m);
  await exec('btrfs', ['quota', 'rescan', '-w', loop.mountpoint]);
  const u = await btrfs.usage(a);
  t.is(u.source, 'qgroup');
  if (u.source === 'qgroup') t.true(u.referenced >= 2 * 1024 * 1024, `referenced ${u.referenced}`);
  await t.throwsAsync(btrfs.create(a), { code: 'Conflict' } as never);
  await btrfs.delete(b);
  await btrfs.delete(b); // idempotent
  await btrfs.setReadonly(a, true);
  await btrfs.delete(a); // read-only subvolumes delete too
  t.deepEqual((await fsp.readdir(loop.mountpoint)).sort(), []);
  // not btrfs: the ioctl is ENOTTY
  await t.throwsAsync(btrfs.create('/tmp/berth-not-btrfs'), { code: 'Unsupported' } as never);
  await t.throwsAsync(developmentStorage.run(['no-such-verb']));
});

test('btrfs backend: committed layers are read-only subvolumes in the kernel, not just by convention', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/dev/loop-control'] })) return;
  const fx = await freshSnapshotter('btrfs');
  t.teardown(() => fx.cleanup());
  const m = await fx.sn.prepare('k');
  await fsp.writeFile(path.join(m[0]!.source, 'f'), 'x');
  await fx.sn.commit('layer', 'k');
  t.true((await btrfs.info(m[0]!.source)).readonly);
  await t.throwsAsync(fsp.writeFile(path.join(m[0]!.source, 'f'), 'changed'), { code: 'EROFS' });
  const u = await fx.sn.usage('layer');
  t.true(u.inodes >= 2);
});

test('berth-storage apply-specials refuses a symlink in a parent path', async (t) => {
  if (!needPrivileges(t, { root: true })) return;
  const dir = await fsp.mkdtemp('/tmp/berth-specials-');
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  await fsp.mkdir(path.join(dir, 'root'));
  await fsp.mkdir(path.join(dir, 'outside'));
  await fsp.symlink(path.join(dir, 'outside'), path.join(dir, 'root', 'link'));
  await t.throwsAsync(
    developmentStorage.applySpecials(path.join(dir, 'root'), [
      { op: 'mknod', rel: 'link/fifo', mode: 0o10644, major: 0, minor: 0, uid: 0, gid: 0, mtimeSec: 0 },
    ]),
    { code: 'InvalidInput' } as never,
  );
  t.deepEqual(await fsp.readdir(path.join(dir, 'outside')), []);
  await developmentStorage.applySpecials(path.join(dir, 'root'), [
    { op: 'mknod', rel: 'fifo', mode: 0o10600, major: 0, minor: 0, uid: 0, gid: 0, mtimeSec: 1000 },
  ]);
  const st = await fsp.lstat(path.join(dir, 'root', 'fifo'));
  t.true(st.isFIFO());
  t.is(st.mode & 0o7777, 0o600);
  t.is(st.mtimeMs, 1_000_000);
});
