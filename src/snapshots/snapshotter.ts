/**
 * The snapshotter contract, after containerd's (core/snapshots/snapshotter.go). Words are fixed:
 *   - `key`    names an ACTIVE snapshot: writable (prepare) or read-only (view), not yet committed;
 *   - `name`   names a COMMITTED snapshot: immutable, can be a parent;
 *   - `parent` is always a committed snapshot's name.
 *
 * Lifecycle of an image layer (names are ChainIDs, so layers shared by images are stored once):
 *
 *     const mounts = await sn.prepare('extract-<random>-<chainID>', parentChainID);  // empty, or parent's content
 *     // mount `mounts` at a temp dir, apply the layer tar into it, unmount
 *     await sn.commit(chainID, 'extract-<random>-<chainID>');   // the active key is gone, `chainID` is committed
 *
 * Lifecycle of a container's root filesystem:
 *
 *     const mounts = await sn.prepare('container-<id>', topChainID);   // writable, on top of the image
 *     // hand `mounts` to the runtime; on container removal:
 *     await sn.remove('container-<id>');
 *
 * A read-only view (e.g. to inspect an image) is `view(key, parent)` and is removed the same way.
 *
 * Rules every backend keeps (test/conformance/snapshotter-suite.ts checks them):
 *   - prepare/view fail with Conflict when the key exists (active or committed), NotFound when the
 *     parent does not exist or is not committed;
 *   - commit fails when the key is not an active writable snapshot; after commit the key is gone;
 *   - remove fails with Conflict while children exist;
 *   - committed snapshots never change; mounts() of a committed snapshot is not allowed (use view);
 *   - metadata lives in SQLite; each operation records its intent before touching the disk and its
 *     result after, and `recover()` (run at start) finishes or undoes anything left in between.
 */

import type { StorageHelper } from './storage-helper.js';

export type SnapshotKind = 'active' | 'view' | 'committed';

export interface Mount {
  /** mount(8) type: "bind", "overlay", "btrfs", "ext4" … */
  type: string;
  source: string;
  options: string[];
}

export interface SnapshotInfo {
  /** key for active/view snapshots, name for committed ones */
  name: string;
  kind: SnapshotKind;
  parent?: string | undefined;
  labels: Record<string, string>;
  createdAt: number;
  updatedAt: number;
}

export interface Usage {
  /** bytes used by this snapshot alone (not its parents) */
  size: number;
  inodes: number;
}

export interface SnapshotterStatus {
  driver: string;
  /** filesystem the snapshots live on */
  root: string;
  capacityBytes: number;
  usedBytes: number;
  availableBytes: number;
  details: Record<string, string | number>;
}

export interface Snapshotter {
  readonly driver: 'overlay' | 'btrfs' | 'devmapper';
  /** berth-storage as the composition root located it (layer unpacking into this snapshotter uses it) */
  readonly storage: StorageHelper;
  /** Finish or undo operations interrupted by a crash. Call once at start, before anything else. */
  recover(): Promise<void>;
  prepare(key: string, parent?: string, labels?: Record<string, string>): Promise<Mount[]>;
  view(key: string, parent: string, labels?: Record<string, string>): Promise<Mount[]>;
  commit(name: string, key: string, labels?: Record<string, string>): Promise<void>;
  mounts(key: string): Promise<Mount[]>;
  remove(keyOrName: string): Promise<void>;
  stat(keyOrName: string): Promise<SnapshotInfo>;
  walk(fn: (info: SnapshotInfo) => void | Promise<void>): Promise<void>;
  usage(keyOrName: string): Promise<Usage>;
  status(): Promise<SnapshotterStatus>;
  close(): Promise<void>;
}
