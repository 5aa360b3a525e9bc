import test from 'ava';
import { ConfigSchema } from '../../src/config/schema.js';
import { openDatabase } from '../../src/db/database.js';
import { silentLogger } from '../../src/lib/logger.js';
import {
  dmErrorCode,
  parseDumpe2fsInodes,
  parseInfoColumns,
  parseLosetupAssociated,
  parseThinLs,
  parseThinPoolStatus,
  parseThinStatus,
  thinPoolTableLine,
  thinTableLine,
} from '../../src/snapshots/devmapper/dmsetup.js';
import { DeviceMetadata } from '../../src/snapshots/devmapper/metadata.js';
import { PoolDevice, recoveryAction } from '../../src/snapshots/devmapper/pool-device.js';
import { devmapperOptionsFromConfig, parseByteSize } from '../../src/snapshots/devmapper/snapshotter.js';

test('thin-pool table line: containerd-style features', (t) => {
  const base = {
    metadataDevice: '/dev/loop1',
    dataDevice: '/dev/loop0',
    dataSectors: 2097152,
    blockSizeSectors: 128,
    lowWaterMarkBlocks: 1638,
  };
  t.is(
    thinPoolTableLine({ ...base, skipBlockZeroing: true, discard: true }),
    '0 2097152 thin-pool /dev/loop1 /dev/loop0 128 1638 1 skip_block_zeroing',
  );
  t.is(
    thinPoolTableLine({ ...base, skipBlockZeroing: false, discard: false }),
    '0 2097152 thin-pool /dev/loop1 /dev/loop0 128 1638 1 ignore_discard',
  );
  t.is(thinTableLine('/dev/mapper/pool', 7, 64 * 1024 * 1024), '0 131072 thin /dev/mapper/pool 7');
});

test('thin-pool status parses usage, mode and needs_check', (t) => {
  const s = parseThinPoolStatus(
    '0 2097152 thin-pool 5 212/4096 1000/16384 - rw discard_passdown queue_if_no_space - 1024',
  );
  t.deepEqual(s, {
    transactionId: 5,
    usedMetadataBlocks: 212,
    totalMetadataBlocks: 4096,
    usedDataBlocks: 1000,
    totalDataBlocks: 16384,
    mode: 'rw',
    needsCheck: false,
    failed: false,
  });
  const ro = parseThinPoolStatus(
    '0 2097152 thin-pool 9 4096/4096 16384/16384 - out_of_data_space no_discard_passdown error_if_no_space needs_check 1024',
  );
  t.is(ro.mode, 'out_of_data_space');
  t.true(ro.needsCheck);
  t.true(parseThinPoolStatus('0 2097152 thin-pool Fail').failed);
  t.throws(() => parseThinPoolStatus('0 10 linear 8:0 0'), { code: 'Corrupt' } as never);
  t.throws(() => parseThinPoolStatus('0 10 thin-pool 1 x/y 1/2 - rw'), { code: 'Corrupt' } as never);
});

test('thin status parses mapped sectors', (t) => {
  t.deepEqual(parseThinStatus('0 131072 thin 2048 131071'), {
    mappedSectors: 2048,
    highestMappedSector: 131071,
    failed: false,
  });
  t.deepEqual(parseThinStatus('0 131072 thin 0 -'), {
    mappedSectors: 0,
    highestMappedSector: undefined,
    failed: false,
  });
  t.true(parseThinStatus('0 131072 thin Fail').failed);
});

test('dmsetup info columns, thin_ls, dumpe2fs and losetup output', (t) => {
  t.deepEqual(parseInfoColumns('pool;254;0;1;L--w\nberth-snap-3;254;2;0;Ls-w\n'), [
    { name: 'pool', major: 254, minor: 0, openCount: 1, suspended: false, live: true },
    { name: 'berth-snap-3', major: 254, minor: 2, openCount: 0, suspended: true, live: true },
  ]);
  t.deepEqual(parseThinLs('   1   4194304     65536\n   2   131072   0\n'), [
    { deviceId: 1, mappedBytes: 4194304, exclusiveBytes: 65536 },
    { deviceId: 2, mappedBytes: 131072, exclusiveBytes: 0 },
  ]);
  t.throws(() => parseThinLs('1 2MiB 0'), { code: 'Corrupt' } as never);
  t.deepEqual(
    parseDumpe2fsInodes(
      'Filesystem magic number:  0xEF53\nInode count:              16384\nFree inodes:              16373\n',
    ),
    {
      total: 16384,
      free: 16373,
    },
  );
  t.deepEqual(parseLosetupAssociated('/dev/loop3: [2049]:1234 (/var/lib/berth/devmapper/data)\n'), [
    '/dev/loop3',
  ]);
  t.deepEqual(parseLosetupAssociated(''), []);
});

test('dmsetup errors map to berth error codes', (t) => {
  t.is(dmErrorCode('device-mapper: remove ioctl on x failed: Device or resource busy'), 'Conflict');
  t.is(dmErrorCode('Device x not found'), 'NotFound');
  t.is(dmErrorCode('device-mapper: message ioctl on pool failed: No data available'), 'NotFound');
  t.is(dmErrorCode('device-mapper: message ioctl on pool failed: File exists'), 'Conflict');
  t.is(dmErrorCode('device-mapper: reload ioctl on pool failed: No space left on device'), 'NoSpace');
  t.is(dmErrorCode('something odd'), 'Internal');
});

test('recovery actions per recorded state and kernel state', (t) => {
  t.is(recoveryAction('creating', false, false), 'undo-create');
  t.is(recoveryAction('creating', true, false), 'undo-create');
  t.is(recoveryAction('created', false, false), 'none');
  t.is(recoveryAction('activated', true, false), 'none');
  t.is(recoveryAction('activated', false, false), 'activate'); // reboot
  t.is(recoveryAction('activated', true, true), 'resume');
  t.is(recoveryAction('activating', true, false), 'activate');
  t.is(recoveryAction('suspending', true, true), 'resume');
  t.is(recoveryAction('suspended', false, false), 'activate');
  t.is(recoveryAction('resuming', true, true), 'resume');
  t.is(recoveryAction('deactivating', true, false), 'deactivate');
  t.is(recoveryAction('deactivated', false, false), 'none');
  t.is(recoveryAction('deactivated', true, false), 'deactivate');
  t.is(recoveryAction('removing', true, false), 'finish-remove');
  t.is(recoveryAction('removed', false, false), 'finish-remove');
  t.is(recoveryAction('faulty', false, false), 'none');
});

test('sizes and options from the config', (t) => {
  t.is(parseByteSize('10G'), 10 * 1024 ** 3);
  t.is(parseByteSize('256M'), 256 * 1024 ** 2);
  t.is(parseByteSize('64KiB'), 65536);
  t.is(parseByteSize('4096'), 4096);
  t.throws(() => parseByteSize('lots'), { code: 'InvalidInput' } as never);
  const cfg = ConfigSchema.parse({ storage: { driver: 'devmapper', devmapper: { baseSize: '1G' } } });
  const o = devmapperOptionsFromConfig(cfg.storage.devmapper, '/var/lib/berth/snapshots/devmapper');
  t.is(o.poolName, 'berth-thinpool');
  t.is(o.loopDir, '/var/lib/berth/snapshots/devmapper');
  t.is(o.baseSizeBytes, 1024 ** 3);
  t.is(o.blockSizeSectors, 128);
  t.true(o.discard);
  const dev = ConfigSchema.parse({
    storage: {
      devmapper: { poolName: 'p', dataDevice: '/dev/sdb', metadataDevice: '/dev/sdc', blockSize: '128K' },
    },
  });
  const od = devmapperOptionsFromConfig(dev.storage.devmapper, '/x');
  t.is(od.loopDir, undefined);
  t.is(od.blockSizeSectors, 256);
  t.throws(
    () =>
      devmapperOptionsFromConfig(
        ConfigSchema.parse({ storage: { devmapper: { blockSize: '100K' } } }).storage.devmapper,
        '/x',
      ),
    { code: 'InvalidInput' } as never,
  );
});

test('device metadata: ids allocated in order, per pool, state and detach recorded', (t) => {
  const db = openDatabase(':memory:');
  const a = new DeviceMetadata(db, 'pool-a');
  const b = new DeviceMetadata(db, 'pool-b');
  t.is(a.add({ name: 'a-base', sizeBytes: 100 }).deviceId, 1);
  const s = a.add({ name: 'a-snap-1', parent: 'a-base', snapshotId: 1, sizeBytes: 100 });
  t.is(s.deviceId, 2);
  t.is(s.state, 'creating');
  t.is(b.add({ name: 'b-base', sizeBytes: 100 }).deviceId, 1);
  t.throws(() => a.add({ name: 'a-base', sizeBytes: 1 }), { code: 'Conflict' } as never);
  t.is(a.bySnapshot(1)?.name, 'a-snap-1');
  t.is(a.setState('a-snap-1', 'faulty', 'boom').error, 'boom');
  t.is(a.bumpDeviceId('a-snap-1').deviceId, 3);
  a.detach('a-snap-1');
  t.is(a.bySnapshot(1), undefined);
  a.delete('a-snap-1');
  t.deepEqual(
    a.list().map((d) => d.name),
    ['a-base'],
  );
  t.throws(() => a.setState('missing', 'activated'), { code: 'NotFound' } as never);
  db.close();
});

test('transition records the trying state before acting, the success state after, faulty on failure', async (t) => {
  const db = openDatabase(':memory:');
  const pool = new PoolDevice(
    db,
    {
      poolName: 'p',
      dataSizeBytes: 0,
      metadataSizeBytes: 0,
      blockSizeSectors: 128,
      discard: true,
    },
    silentLogger(),
  );
  pool.meta.add({ name: 'p-snap-1', sizeBytes: 1 });
  let during: string | undefined;
  await pool.transition('p-snap-1', 'activating', 'activated', async () => {
    during = pool.meta.require('p-snap-1').state;
  });
  t.is(during, 'activating');
  t.is(pool.meta.require('p-snap-1').state, 'activated');
  await t.throwsAsync(
    pool.transition('p-snap-1', 'suspending', 'suspended', async () => {
      throw new Error('dmsetup suspend: Device or resource busy');
    }),
    { message: /p-snap-1: suspending: dmsetup suspend/ },
  );
  const d = pool.meta.require('p-snap-1');
  t.is(d.state, 'faulty');
  t.regex(d.error ?? '', /busy/);
  db.close();
});
