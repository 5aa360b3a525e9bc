/**
 * Runs INSIDE the test VM (test/vm): the snapshotter conformance suite against the devmapper backend on
 * real thin pools, the tar-slip corpus (unpack-safety-suite.ts) with both extractors, then devmapper's
 * own checks (pool from block devices, device states, recovery after
 * a "reboot", deferred removal, pool status). Bundled by the host test (devmapper-vm.test.ts) and run
 * with the host's node over 9p; prints BERTH-TEST lines (test/vm/mini-ava.ts). Exit code 1 on failure.
 *
 * Each check gets a fresh pool made from sparse loop files on the guest's tmpfs, named uniquely, and
 * tears it down afterwards. /dev/vda (metadata) and /dev/vdb (data) are virtio disks for the check of
 * a pool made from block devices.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import { lstat, readdir, readFile, readlink, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import type { TestFn } from 'ava';
import { type Db, openDatabase } from '../../../src/db/database.js';
import { exec } from '../../../src/lib/exec.js';
import { chainIds, sha256Digest } from '../../../src/oci/digest.js';
import * as dm from '../../../src/snapshots/devmapper/dmsetup.js';
import { type DevmapperOptions, DevmapperSnapshotter } from '../../../src/snapshots/devmapper/snapshotter.js';
import { withTempMount } from '../../../src/snapshots/mount.js';
import { unpackLayer } from '../../../src/snapshots/unpack.js';
import { type SuiteFixture, snapshotterSuite } from '../../conformance/snapshotter-suite.js';
import { unpackSafetySuite } from '../../conformance/unpack-safety-suite.js';
import { makeTar } from '../../helpers/layer-tar.js';
import { createMiniAva, type MiniContext } from '../../vm/mini-ava.js';

const MiB = 1024 * 1024;
let seq = 0;

interface Pool {
  dir: string;
  opts: DevmapperOptions;
  dbs: Db[];
  open(): Promise<DevmapperSnapshotter>;
  cleanup(): Promise<void>;
}

function freshPool(extra: Partial<DevmapperOptions> = {}): Pool {
  const dir = mkdtempSync('/tmp/dm-');
  const opts: DevmapperOptions = {
    poolName: `berth-t${++seq}`,
    loopDir: path.join(dir, 'loop'),
    dataSizeBytes: 1024 * MiB,
    metadataSizeBytes: 16 * MiB,
    baseSizeBytes: 64 * MiB,
    blockSizeSectors: 128,
    discard: true,
    ...extra,
  };
  const dbs: Db[] = [];
  const pool: Pool = {
    dir,
    opts,
    dbs,
    async open() {
      const db = openDatabase(path.join(dir, 'berth.db'));
      dbs.push(db);
      return new DevmapperSnapshotter(db, opts);
    },
    async cleanup() {
      const sn = new DevmapperSnapshotter(dbs[0] ?? openDatabase(path.join(dir, 'berth.db')), opts);
      await sn.pool.destroy();
      for (const db of dbs) db.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return pool;
}

const { test, run } = createMiniAva();

snapshotterSuite(
  test as unknown as TestFn,
  'devmapper',
  async (): Promise<SuiteFixture> => {
    // discard off: one process less per removal; the devmapper checks below run with it on
    const p = freshPool({ discard: false });
    const first = await p.open();
    await first.recover();
    return { snapshotter: first, reopen: () => p.open(), cleanup: () => p.cleanup() };
  },
  { serial: true },
);

// the tar-slip corpus on devmapper, with both extractors (test/conformance/unpack-safety-suite.ts)
for (const unpacker of ['native', 'node'] as const) {
  unpackSafetySuite(test as unknown as TestFn, 'devmapper', unpacker, async () => {
    const p = freshPool({ discard: false });
    const sn = await p.open();
    await sn.recover();
    return { sn, cleanup: () => p.cleanup() };
  });
}

type T = MiniContext;
const dmTest = (title: string, body: (t: T, p: Pool) => Promise<void>, extra?: Partial<DevmapperOptions>) =>
  test(`devmapper: ${title}`, async (t: T) => {
    const p = freshPool(extra);
    t.teardown(() => p.cleanup());
    await body(t, p);
  });

async function write(sn: DevmapperSnapshotter, key: string, files: Record<string, string>) {
  await withTempMount(await sn.mounts(key), async (dir) => {
    for (const [rel, content] of Object.entries(files)) {
      await exec('sh', ['-c', 'mkdir -p "$(dirname "$1")" && cat > "$1"', 'sh', path.join(dir, rel)], {
        input: content,
      });
    }
  });
}

dmTest('a pool made from block devices keeps its snapshots across a restart', async (t) => {
  // the virtio disks: zero the metadata superblock so the kernel formats fresh pool metadata
  await exec('dd', ['if=/dev/zero', 'of=/dev/vda', 'bs=4096', 'count=1', 'conv=fsync']);
  const dir = mkdtempSync('/tmp/dm-blk-');
  const opts: DevmapperOptions = {
    poolName: 'berth-blk',
    dataDevice: '/dev/vdb',
    metadataDevice: '/dev/vda',
    dataSizeBytes: 0,
    metadataSizeBytes: 0,
    baseSizeBytes: 64 * MiB,
    blockSizeSectors: 128,
    discard: false,
  };
  const db = openDatabase(path.join(dir, 'berth.db'));
  t.teardown(async () => {
    await new DevmapperSnapshotter(db, opts).pool.destroy();
    db.close();
    await rm(dir, { recursive: true, force: true });
  });
  const sn = new DevmapperSnapshotter(db, opts);
  await sn.recover();
  t.regex(await dm.table('berth-blk'), /thin-pool 254:0 254:16 128 \d+ 2 skip_block_zeroing ignore_discard/);
  await sn.prepare('k');
  await write(sn, 'k', { 'a.txt': 'A' });
  await sn.commit('base', 'k');
  // restart: the pool device goes away (as at reboot) and comes back from the same disks
  await dm.removeDevice('berth-blk');
  const again = new DevmapperSnapshotter(db, opts);
  await again.recover();
  const m = await again.view('v', 'base');
  t.is(m[0]?.type, 'ext4');
  t.deepEqual(m[0]?.options, ['ro']);
  await withTempMount(m, async (d) => {
    t.true(existsSync(path.join(d, 'a.txt')));
  });
});

dmTest('device states are recorded: active devices activated, committed ones deactivated', async (t, p) => {
  const sn = await p.open();
  await sn.recover();
  await sn.prepare('k');
  await sn.commit('c', 'k');
  await sn.prepare('a', 'c');
  await sn.view('v', 'c');
  const states = Object.fromEntries(sn.pool.meta.list().map((d) => [d.name, d.state]));
  const id = (name: string) => sn.record(name).id;
  t.deepEqual(states, {
    [`${p.opts.poolName}-base`]: 'deactivated',
    [`${p.opts.poolName}-snap-${id('c')}`]: 'deactivated',
    [`${p.opts.poolName}-snap-${id('a')}`]: 'activated',
    [`${p.opts.poolName}-snap-${id('v')}`]: 'activated',
  });
  t.true(await sn.pool.isActivated(`${p.opts.poolName}-snap-${id('a')}`));
  t.false(await sn.pool.isActivated(`${p.opts.poolName}-snap-${id('c')}`));
  // a create_snap from an active origin suspends and resumes it: the origin ends activated, not suspended
  await sn.commit('c2', 'a');
  await sn.prepare('a2', 'c2');
  const live = await dm.info(`${p.opts.poolName}-snap-${id('v')}`);
  t.is(live?.suspended, false);
});

dmTest('recovery after a reboot reactivates active devices and marks broken ones faulty', async (t, p) => {
  const sn = await p.open();
  await sn.recover();
  await sn.prepare('k');
  await write(sn, 'k', { 'f.txt': 'kept' });
  await sn.prepare('broken');
  const k = `${p.opts.poolName}-snap-${sn.record('k').id}`;
  const broken = `${p.opts.poolName}-snap-${sn.record('broken').id}`;
  // "reboot": the kernel forgets every thin device; and the thin id behind `broken` is lost
  await dm.removeDevice(k);
  await dm.removeDevice(broken);
  await dm.message(p.opts.poolName, `delete ${sn.pool.meta.require(broken).deviceId}`);
  // an operation interrupted mid-suspend
  sn.pool.meta.setState(k, 'suspending');
  const after = await p.open();
  await after.recover();
  t.is(after.pool.meta.require(k).state, 'activated');
  t.true(await after.pool.isActivated(k));
  t.is(after.pool.meta.require(broken).state, 'faulty');
  t.truthy(after.pool.meta.require(broken).error);
  await withTempMount(await after.mounts('k'), async (d) => {
    t.true(existsSync(path.join(d, 'f.txt')));
  });
  await t.throwsAsync(after.mounts('broken'), { code: 'Unavailable' });
  // a faulty snapshot can still be removed
  await after.remove('broken');
  t.is(after.pool.meta.get(broken), undefined);
});

dmTest('removing a snapshot whose device is mounted defers the device removal', async (t, p) => {
  const sn = await p.open();
  await sn.recover();
  await sn.prepare('busy');
  const name = `${p.opts.poolName}-snap-${sn.record('busy').id}`;
  const mnt = mkdtempSync('/tmp/dm-mnt-');
  await exec('mount', ['-t', 'ext4', `/dev/mapper/${name}`, mnt]);
  let mounted = true;
  t.teardown(async () => {
    if (mounted) await exec('umount', [mnt]);
  });
  await sn.remove('busy');
  await t.throwsAsync(sn.stat('busy'), { code: 'NotFound' });
  const dev = sn.pool.meta.require(name);
  t.is(dev.state, 'removing');
  t.is(dev.snapshotId, undefined);
  await exec('umount', [mnt]);
  mounted = false;
  // the kernel removes the device on last close; the next sweep deletes its thin id
  await sn.pool.sweepDeferred();
  t.is(sn.pool.meta.get(name), undefined);
  t.false(await sn.pool.isActivated(name));
});

dmTest('status reports pool data and metadata usage, which grows with data', async (t, p) => {
  const sn = await p.open();
  await sn.recover();
  const before = await sn.status();
  t.is(before.capacityBytes, 1024 * MiB);
  t.true(Number(before.details.metadataTotalBytes) > 0);
  t.true(Number(before.details.metadataUsedBytes) > 0);
  await sn.prepare('k');
  await write(sn, 'k', { 'big.bin': 'y'.repeat(4 * MiB) });
  const after = await sn.status();
  t.true(after.usedBytes >= before.usedBytes + 4 * MiB, `${before.usedBytes} -> ${after.usedBytes}`);
  t.is(after.availableBytes, after.capacityBytes - after.usedBytes);
});

dmTest('unpack applies OCI layers (whiteouts, opaque dirs, links) into thin snapshots', async (t, p) => {
  const sn = await p.open();
  await sn.recover();
  const l1 = await makeTar([
    { name: 'etc/', type: 'directory' },
    { name: 'etc/a', content: 'A' },
    { name: 'etc/b', content: 'B' },
    { name: 'opq/', type: 'directory' },
    { name: 'opq/x', content: 'x' },
    { name: 'link', type: 'symlink', linkname: 'etc/a' },
    { name: 'hard', type: 'link', linkname: 'etc/a' },
  ]);
  // whiteouts are empty regular files (tar-stream needs the empty body to close the entry)
  const l2 = await makeTar([
    { name: 'etc/.wh.b', content: '' },
    { name: 'opq/.wh..wh..opq', content: '' },
    { name: 'opq/y', content: 'y' },
  ]);
  const [d1, d2] = [sha256Digest(l1), sha256Digest(l2)];
  const [c1, c2] = chainIds([d1, d2]);
  const layer = (tarball: Buffer, chainId: typeof c1, parent: typeof c1 | undefined, diffId: typeof d1) =>
    unpackLayer({
      snapshotter: sn,
      chainId: chainId!,
      parent,
      diffId,
      open: async () => Readable.from([tarball]),
      compression: 'none',
    });
  t.false((await layer(l1, c1, undefined, d1)).reused);
  t.false((await layer(l2, c2, c1, d2)).reused);
  t.true((await layer(l2, c2, c1, d2)).reused);
  await withTempMount(await sn.view('check', c2!), async (d) => {
    t.is(await readFile(path.join(d, 'etc/a'), 'utf8'), 'A');
    t.false(existsSync(path.join(d, 'etc/b')));
    t.false(existsSync(path.join(d, 'etc/.wh.b')));
    t.deepEqual((await readdir(path.join(d, 'opq'))).sort(), ['y']);
    t.is(await readlink(path.join(d, 'link')), 'etc/a');
    t.is((await lstat(path.join(d, 'hard'))).ino, (await lstat(path.join(d, 'etc/a'))).ino);
  });
  t.is((await sn.stat(c2!)).parent, c1);
});

dmTest(
  'thin-device mounts are nodev, under a 0700 dir: a device node in a snapshot does not open',
  async (t, p) => {
    const sn = await p.open();
    await sn.recover();
    await sn.prepare('devnode');
    await withTempMount(await sn.mounts('devnode'), async (d) => {
      const point = (await readFile('/proc/self/mountinfo', 'utf8'))
        .split('\n')
        .map((l) => l.split(' '))
        .find((f) => f[4] === d);
      t.truthy(point, `${d} is a mount point`);
      t.true(point![5]!.split(',').includes('nodev'), `options ${point![5]}`);
      t.is((await lstat(path.dirname(d))).mode & 0o777, 0o700, 'the mount point sits in a 0700 dir');
      await exec('mknod', ['-m', '0666', path.join(d, 'zero'), 'c', '1', '5']);
      const r = await exec('head', ['-c', '1', path.join(d, 'zero')], { allowFailure: true });
      t.not(r.code, 0, 'root cannot open a device node through the nodev mount');
      t.regex(r.stderr, /Permission denied/);
    });
  },
);

// The harness itself (test/vm), checked in the same boot: what the runtime's cgroup v2 tests rely on.
test('vm: a pure cgroup v2 hierarchy with controllers delegated, /usr from the host read-only', async (t: T) => {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  t.regex(mounts, /^cgroup2 \/sys\/fs\/cgroup cgroup2 /m);
  t.false(/^\S+ \S+ cgroup /m.test(mounts), 'no cgroup v1 hierarchy');
  const delegated = (await readFile('/sys/fs/cgroup/cgroup.subtree_control', 'utf8')).trim().split(' ');
  for (const c of ['cpu', 'memory', 'pids', 'io']) t.true(delegated.includes(c), `${c} in subtree_control`);
  t.regex(mounts, /^hostusr \/usr 9p ro,/m);
  t.is(process.env.BERTH_IN_VM, '1');
});

const filter = process.env.BERTH_VM_FILTER ? new RegExp(process.env.BERTH_VM_FILTER) : undefined;
const results = await run(filter ? { filter } : {});
process.exit(results.every((r) => r.ok) ? 0 : 1);
