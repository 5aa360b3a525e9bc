import test from 'ava';
import { chooseDriver, devmapperConfigured } from '../../src/snapshots/factory.js';
import {
  checkLayerHeader,
  classifyWhiteout,
  entryParts,
  layerXattrs,
} from '../../src/snapshots/layer-paths.js';
import {
  compactOverlayOptions,
  MOUNT_DATA_LIMIT,
  mountArgs,
  nodevRemounts,
} from '../../src/snapshots/mount.js';
import { encodeSpecials } from '../../src/snapshots/native-storage.js';
import { directTarget } from '../../src/snapshots/unpack.js';

test('entryParts makes names relative and refuses ..', (t) => {
  t.deepEqual(entryParts('/etc/passwd'), ['etc', 'passwd']);
  t.deepEqual(entryParts('./a//b/./c/'), ['a', 'b', 'c']);
  t.deepEqual(entryParts('./'), []);
  for (const bad of ['../x', 'a/../../x', 'a/..', '..'])
    t.throws(() => entryParts(bad), { message: /climbs out/ });
  t.throws(() => entryParts('a\0b'), { message: /NUL/ });
});

test('classifyWhiteout: plain, opaque, malformed', (t) => {
  t.deepEqual(classifyWhiteout(['etc', 'passwd']), { kind: 'none' });
  t.deepEqual(classifyWhiteout(['etc', '.wh.passwd']), { kind: 'whiteout', target: ['etc', 'passwd'] });
  t.deepEqual(classifyWhiteout(['.wh.top']), { kind: 'whiteout', target: ['top'] });
  t.deepEqual(classifyWhiteout(['d', '.wh..wh..opq']), { kind: 'opaque', dir: ['d'] });
  t.deepEqual(classifyWhiteout(['.wh..wh..opq']), { kind: 'opaque', dir: [] });
  for (const bad of ['.wh.', '.wh..', '.wh...', '.wh..wh.x']) t.throws(() => classifyWhiteout([bad]));
});

test('layerXattrs keeps SCHILY xattrs, drops trusted.overlay.* and damaged binary values', (t) => {
  const x = layerXattrs({
    'SCHILY.xattr.user.a': 'b',
    'SCHILY.xattr.trusted.overlay.opaque': 'y',
    'SCHILY.xattr.security.capability': 'bad\uFFFD',
    path: 'ignored',
  });
  t.deepEqual(x, [['user.a', Buffer.from('b')]]);
  t.deepEqual(layerXattrs(undefined), []);
});

test('compactOverlayOptions leaves short options alone and relativizes long ones', (t) => {
  const short = ['lowerdir=/a/1/fs:/a/2/fs', 'upperdir=/a/3/fs', 'workdir=/a/3/work'];
  t.deepEqual(compactOverlayOptions(short), { options: short });
  const root = `/var/lib/berth/${'x'.repeat(60)}/snapshots`;
  const lowers = Array.from({ length: 200 }, (_, i) => `${root}/${i + 1}/fs`);
  const opts = [
    'index=off',
    `workdir=${root}/999/work`,
    `upperdir=${root}/999/fs`,
    `lowerdir=${lowers.join(':')}`,
  ];
  t.true(opts.join(',').length > MOUNT_DATA_LIMIT);
  const c = compactOverlayOptions(opts);
  t.is(c.cwd, root);
  t.true(c.options.join(',').length <= MOUNT_DATA_LIMIT);
  t.is(c.options[0], 'index=off');
  t.is(c.options[1], 'workdir=999/work');
  t.true(c.options[3]!.startsWith('lowerdir=1/fs:2/fs:'));
});

test('mountArgs: bind without -t, overlay with -t and the compaction cwd; every snapshot mount nodev', (t) => {
  t.deepEqual(mountArgs({ type: 'bind', source: '/s', options: ['ro'] }, '/t'), {
    args: ['-o', 'rbind,ro,nodev', '/s', '/t'],
  });
  t.deepEqual(mountArgs({ type: 'overlay', source: 'overlay', options: ['lowerdir=/a:/b'] }, '/t'), {
    args: ['-t', 'overlay', '-o', 'lowerdir=/a:/b,nodev', 'overlay', '/t'],
  });
  // devmapper: ext4 of a thin device, with and without ro; nodev given once only
  t.deepEqual(mountArgs({ type: 'ext4', source: '/dev/mapper/x', options: [] }, '/t'), {
    args: ['-t', 'ext4', '-o', 'nodev', '/dev/mapper/x', '/t'],
  });
  t.deepEqual(mountArgs({ type: 'ext4', source: '/dev/mapper/x', options: ['ro', 'nodev'] }, '/t'), {
    args: ['-t', 'ext4', '-o', 'ro,nodev', '/dev/mapper/x', '/t'],
  });
});

test('nodevRemounts: mounts under the dir without nodev get it, their other flags kept', (t) => {
  const mounts = [
    { point: '/s/containers/a/rootfs', options: ['rw', 'relatime'] },
    { point: '/s/containers/b/rootfs', options: ['rw', 'nodev', 'relatime'] },
    { point: '/s/containers/c/rootfs', options: ['ro', 'nosuid'] },
    { point: '/s/containers-other/x', options: ['rw'] },
    { point: '/', options: ['rw'] },
  ];
  t.deepEqual(nodevRemounts(mounts, '/s/containers'), [
    ['-o', 'remount,bind,rw,relatime,nodev', '/s/containers/a/rootfs'],
    ['-o', 'remount,bind,ro,nosuid,nodev', '/s/containers/c/rootfs'],
  ]);
});

test('directTarget: rw bind and overlay upperdir are written directly; ro and others mount', (t) => {
  t.deepEqual(directTarget([{ type: 'bind', source: '/s', options: ['rbind', 'rw'] }]), {
    root: '/s',
    whiteouts: 'delete',
  });
  t.deepEqual(
    directTarget([
      { type: 'overlay', source: 'overlay', options: ['workdir=/w', 'upperdir=/u', 'lowerdir=/l1:/l2'] },
    ]),
    { root: '/u', whiteouts: 'overlay', lowers: ['/l1', '/l2'] },
  );
  t.is(directTarget([{ type: 'bind', source: '/s', options: ['rbind', 'ro'] }]), undefined);
  t.is(directTarget([{ type: 'ext4', source: '/dev/mapper/x', options: [] }]), undefined);
});

test('encodeSpecials frames records as NUL-terminated fields', (t) => {
  const b = encodeSpecials([
    { op: 'mknod', rel: 'dev/null', mode: 0o20666, major: 1, minor: 3, uid: 0, gid: 0, mtimeSec: 12.5 },
    { op: 'xattr', rel: 'f', name: 'user.x', value: Buffer.from([0, 255]) },
  ]);
  t.deepEqual(b.toString('latin1').split('\0'), [
    'mknod',
    'dev/null',
    '20666',
    '1',
    '3',
    '0',
    '0',
    '12',
    '0',
    'xattr',
    'f',
    'user.x',
    '00ff',
    '',
  ]);
  t.throws(() => encodeSpecials([{ op: 'xattr', rel: 'a\0b', name: 'n', value: Buffer.alloc(0) }]));
});

test('chooseDriver: explicit wins; auto prefers btrfs, then a configured thin pool, then overlay', (t) => {
  t.is(chooseDriver('overlay', { onBtrfs: true, devmapperConfigured: true }), 'overlay');
  t.is(chooseDriver('auto', { onBtrfs: true, devmapperConfigured: true }), 'btrfs');
  t.is(chooseDriver('auto', { onBtrfs: false, devmapperConfigured: true }), 'devmapper');
  t.is(chooseDriver('auto', { onBtrfs: false, devmapperConfigured: false }), 'overlay');
  const dm = {
    dataSize: '1G',
    metadataSize: '1M',
    baseSize: '1G',
    blockSize: '64K',
    discard: true,
    fsType: 'ext4' as const,
  };
  t.false(devmapperConfigured(dm));
  t.true(devmapperConfigured({ ...dm, poolName: 'p' }));
  t.true(devmapperConfigured({ ...dm, dataDevice: '/d', metadataDevice: '/m' }));
});

test('checkLayerHeader refuses what the fallback unpacker cannot apply faithfully', (t) => {
  t.notThrows(() => checkLayerHeader({ name: 'f', type: 'file', size: 10 }));
  t.notThrows(() => checkLayerHeader({ name: 'd/', type: 'directory', size: 0 }));
  t.notThrows(() => checkLayerHeader({ name: 'l', type: 'symlink', size: 0, pax: { path: 'l' } }));
  for (const pax of [
    { 'GNU.sparse.major': '1', 'GNU.sparse.minor': '0', 'GNU.sparse.name': 'f' },
    { 'GNU.sparse.map': '0,10', 'GNU.sparse.size': '100' },
    { 'GNU.sparse.offset': '0', 'GNU.sparse.numbytes': '10' },
  ]) {
    t.throws(() => checkLayerHeader({ name: 'GNUSparseFile.1/f', type: 'file', size: 10, pax }), {
      code: 'InvalidInput',
      message: /GNU sparse file/,
    });
  }
  // tar-stream knows no old GNU sparse 'S', volume labels, dumpdirs…: type null
  t.throws(() => checkLayerHeader({ name: 's', type: null, size: 10 }), { message: /unsupported type/ });
  for (const type of ['symlink', 'link', 'directory', 'character-device', 'fifo']) {
    t.throws(() => checkLayerHeader({ name: 'x', type, size: 512 }), {
      code: 'Corrupt',
      message: /cannot carry 512/,
    });
  }
});
