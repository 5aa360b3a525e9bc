import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Db } from '../db/database.js';
import { BaseSnapshotter } from './base.js';
import { fsCapacity, removeTree } from './fsutil.js';
import type { SnapshotRecord } from './metadata.js';
import type { Mount, SnapshotterStatus, Usage } from './snapshotter.js';
import { developmentStorage, type StorageHelper } from './storage-helper.js';

/**
 * overlayfs backend, after containerd's overlay snapshotter.
 *
 * On disk, every snapshot is `<root>/snapshots/<id>/` (id = its metadata row id, which survives commit):
 *   fs/    the layer's own files (upperdir while active, one lowerdir once committed)
 *   work/  overlay's workdir, for active snapshots with a parent
 *
 * mounts():
 *   - active, no parent      → bind rw of fs/ (a plain directory; no overlay needed)
 *   - active with parents    → overlay upperdir=fs, workdir=work, lowerdir=parent fs:grandparent fs:…
 *   - view with one ancestor → bind ro of the parent's fs/
 *   - view with more         → overlay, lowerdirs only (read-only by construction)
 * Whiteouts in the layers are overlay's own: 0/0 character devices, and `trusted.overlay.opaque=y` on
 * opaque directories (unpack.ts writes them when applying an OCI layer straight into fs/).
 *
 * Long chains: Mount records carry absolute paths; src/snapshots/mount.ts rewrites them relative to
 * `<root>/snapshots` when the option string would not fit in a page (the mount data limit) and mounts
 * from that directory, as containerd does. Directory names are short row ids precisely so that ~500
 * layers (overlayfs's own maximum stack depth) fit. No flattening is needed.
 *
 * commit does nothing to the files (overlay lowers are read-only by use; nothing writes a committed
 * fs/); it drops work/ and records the layer's usage, which for overlay is just fs/.
 */
export class OverlaySnapshotter extends BaseSnapshotter {
  readonly driver = 'overlay' as const;
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
  }

  dirOf(rec: SnapshotRecord): string {
    return path.join(this.snapshotsDir, String(rec.id));
  }

  /** The directory holding the snapshot's own files (for unpack: the upperdir of an active snapshot). */
  fsDir(rec: SnapshotRecord): string {
    return path.join(this.dirOf(rec), 'fs');
  }

  protected async createOnDisk(rec: SnapshotRecord, parent: SnapshotRecord | undefined): Promise<undefined> {
    await this.init();
    const dir = this.dirOf(rec);
    await fsp.mkdir(dir, { mode: 0o700 });
    await fsp.mkdir(path.join(dir, 'fs'), { mode: 0o755 });
    if (rec.kind === 'active' && parent) {
      await fsp.mkdir(path.join(dir, 'work'), { mode: 0o700 });
      // The upper's root dir shows through the merged root: keep the parent's mode and owner.
      const st = await fsp.stat(this.fsDir(parent));
      await fsp.chmod(path.join(dir, 'fs'), st.mode & 0o7777);
      await fsp.chown(path.join(dir, 'fs'), st.uid, st.gid);
    }
    return undefined;
  }

  protected async commitOnDisk(rec: SnapshotRecord): Promise<Usage> {
    await removeTree(path.join(this.dirOf(rec), 'work'));
    return this.storage.treeUsage(this.fsDir(rec));
  }

  protected async removeOnDisk(rec: SnapshotRecord): Promise<void> {
    await removeTree(this.dirOf(rec));
  }

  protected async mountsOf(rec: SnapshotRecord, ancestors: SnapshotRecord[]): Promise<Mount[]> {
    const lowers = ancestors.map((a) => this.fsDir(a));
    if (rec.kind === 'view') {
      if (lowers.length === 0) return [{ type: 'bind', source: this.fsDir(rec), options: ['rbind', 'ro'] }];
      if (lowers.length === 1) return [{ type: 'bind', source: lowers[0]!, options: ['rbind', 'ro'] }];
      return [{ type: 'overlay', source: 'overlay', options: [`lowerdir=${lowers.join(':')}`] }];
    }
    if (lowers.length === 0) return [{ type: 'bind', source: this.fsDir(rec), options: ['rbind', 'rw'] }];
    return [
      {
        type: 'overlay',
        source: 'overlay',
        options: [
          'index=off',
          `workdir=${path.join(this.dirOf(rec), 'work')}`,
          `upperdir=${this.fsDir(rec)}`,
          `lowerdir=${lowers.join(':')}`,
        ],
      },
    ];
  }

  protected usageOf(rec: SnapshotRecord): Promise<Usage> {
    return this.storage.treeUsage(this.fsDir(rec));
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
