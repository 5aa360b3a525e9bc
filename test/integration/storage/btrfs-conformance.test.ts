import * as path from 'node:path';
import test from 'ava';
import { type Db, openDatabase } from '../../../src/db/database.js';
import { BtrfsSnapshotter } from '../../../src/snapshots/btrfs.js';
import { snapshotterSuite } from '../../conformance/snapshotter-suite.js';
import { makeLoopFs } from '../../helpers/storage-loop.js';

// btrfs for real: each check gets its own loop-mounted btrfs image (mkfs.btrfs is only used here, to
// make the filesystem; the snapshotter itself goes through berth-storage's ioctls).
snapshotterSuite(
  test,
  'btrfs',
  async () => {
    const loop = await makeLoopFs({ fs: 'btrfs', sizeMiB: 256 });
    const dbs: Db[] = [];
    const open = () => {
      const db = openDatabase(path.join(loop.mountpoint, 'berth.db'));
      dbs.push(db);
      return Promise.resolve(new BtrfsSnapshotter(db, path.join(loop.mountpoint, 'btrfs')));
    };
    try {
      const first = await open();
      await first.recover();
      return {
        snapshotter: first,
        reopen: open,
        cleanup: async () => {
          for (const db of dbs) db.close();
          await loop.cleanup();
        },
      };
    } catch (err) {
      for (const db of dbs) db.close();
      await loop.cleanup();
      throw err;
    }
  },
  { paths: ['/dev/loop-control'] },
);
