import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { type Db, openDatabase } from '../../../src/db/database.js';
import { OverlaySnapshotter } from '../../../src/snapshots/overlay.js';
import { snapshotterSuite } from '../../conformance/snapshotter-suite.js';

// overlay on a plain temp dir (the root filesystem is ext4 here, which overlay accepts as upper).
snapshotterSuite(test, 'overlay', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'berth-ovl-'));
  const dbs: Db[] = [];
  const open = async () => {
    const db = openDatabase(path.join(dir, 'berth.db'));
    dbs.push(db);
    return new OverlaySnapshotter(db, path.join(dir, 'overlay'));
  };
  const first = await open();
  await first.recover();
  return {
    snapshotter: first,
    reopen: open,
    cleanup: async () => {
      for (const db of dbs) db.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
