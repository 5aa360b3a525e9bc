import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Db } from '../db/database.js';
import { unsupported } from '../lib/errors.js';
import { BaseSnapshotter } from './base.js';
import { diskUsage, fsCapacity } from './fsutil.js';
import type { SnapshotRecord } from './metadata.js';
import type { Mount, SnapshotterStatus, Usage } from './snapshotter.js';
import { developmentStorage, type StorageHelper } from './storage-helper.js';

export const BTRFS_SUPER_MAGIC = 0x9123683e;

/** Is `dir` (which must exist) on a btrfs filesystem? statfs f_type, no tools needed. */
export async function isOnBtrfs(dir: string): Promise<boolean> {
  try {
    return (await fsp.statfs(dir)).type === BTRFS_SUPER_MAGIC;
  } catch {
    return false;
  }
}

/**
 * btrfs backend: one subvolume per snapshot at `<root>/snapshots/<id>` (id = metadata row id).
 *   - prepare without parent → BTRFS_IOC_SUBVOL_CREATE (an empty subvolume)
 *   - prepare with parent    → BTRFS_IOC_SNAP_CREATE_V2 of the parent (copy-on-write: O(1) in files)
 *   - view                   → the same, with BTRFS_SUBVOL_RDONLY
 *   - commit                 → BTRFS_IOC_SUBVOL_SETFLAGS RDONLY on the subvolume in place (the row id,
 *                              hence the path, survives commit); the kernel then refuses every write
 *   - remove                 → BTRFS_IOC_SNAP_DESTROY_V2
 * All through native/storage (`berth-storage`), so devices need no btrfs-progs. A child is a full
 * copy-on-write copy of its parent, so mounts() is a bind of the subvolume; layer unpacking writes into
 * it directly and applies whiteouts by deleting (no overlay whiteout files).
 *
 * Usage per snapshot: with quotas enabled (`btrfs quota enable`), the subvolume's qgroup exclusive bytes;
 * without, a walk that counts inodes not shared with the parent snapshot (snapshots keep inode numbers,
 * and an unchanged file keeps its ctime), which is exact for files and close for directories.
 */
export class BtrfsSnapshotter extends BaseSnapshotter {
  readonly driver = 'btrfs' as const;
  readonly snapshotsDir: string;

  constructor(
    db: Db,
    readonly root: string,
    readonly storage: StorageHelper = developmentStorage,
  ) {
    super(db);
    this.snapshotsDir = path.join(root, 'snapshots');
  }

  protected override async init(): Promise<void> {
    await fsp.mkdir(this.snapshotsDir, { recursive: true, mode: 0o700 });
    if (!(await isOnBtrfs(this.snapshotsDir))) {
      throw unsupported(`btrfs snapshotter: ${this.snapshotsDir} is not on a btrfs filesystem`);
    }
  }

  subvolume(rec: SnapshotRecord): string {
    return path.join(this.snapshotsDir, String(rec.id));
  }

  protected async createOnDisk(rec: SnapshotRecord, parent: SnapshotRecord | undefined): Promise<undefined> {
    const dst = this.subvolume(rec);
    if (parent) await this.storage.btrfs.snapshot(this.subvolume(parent), dst, rec.kind === 'view');
    else {
      await this.storage.btrfs.create(dst);
      if (rec.kind === 'view') await this.storage.btrfs.setReadonly(dst, true);
    }
    return undefined;
  }

  protected async commitOnDisk(rec: SnapshotRecord): Promise<undefined> {
    // Usage is not measured here: a walk costs O(files) and qgroup numbers need a transaction commit,
    // both too dear for a commit that is otherwise one ioctl. usage() measures on demand.
    await this.storage.btrfs.setReadonly(this.subvolume(rec), true);
    return undefined;
  }

  protected async removeOnDisk(rec: SnapshotRecord): Promise<void> {
    // delete is idempotent in the helper (ENOENT is success); a committed subvolume is read-only,
    // which SNAP_DESTROY does not mind.
    await this.storage.btrfs.delete(this.subvolume(rec));
  }

  protected async mountsOf(rec: SnapshotRecord): Promise<Mount[]> {
    const ro = rec.kind !== 'active';
    return [{ type: 'bind', source: this.subvolume(rec), options: ['rbind', ro ? 'ro' : 'rw'] }];
  }

  protected usageOf(rec: SnapshotRecord): Promise<Usage> {
    return this.measure(rec);
  }

  private async measure(rec: SnapshotRecord): Promise<Usage> {
    const dir = this.subvolume(rec);
    const parent = rec.parent === undefined ? undefined : this.meta.get(rec.parent);
    const parentDir = parent ? this.subvolume(parent) : undefined;
    const walked = await diskUsage(
      dir,
      parentDir === undefined
        ? undefined
        : async (rel, st) => {
            try {
              const p = await fsp.lstat(path.join(parentDir, rel), { bigint: true });
              return p.ino === st.ino && p.ctimeNs === st.ctimeNs;
            } catch {
              return false;
            }
          },
    );
    const q = await this.storage.btrfs.usage(dir).catch(() => ({ source: 'none' as const }));
    if (q.source === 'qgroup') return { size: q.exclusive, inodes: walked.inodes };
    return walked;
  }

  async status(): Promise<SnapshotterStatus> {
    await this.init();
    const c = await fsCapacity(this.snapshotsDir);
    return {
      driver: this.driver,
      root: this.root,
      capacityBytes: c.capacity,
      usedBytes: c.used,
      availableBytes: c.available,
      details: { snapshots: this.meta.list().length },
    };
  }
}
