import type { Db } from '../db/database.js';
import { invalidInput, notFound, withContext } from '../lib/errors.js';
import {
  isSimulatedCrash,
  type SnapshotMetadata as Meta,
  SnapshotMetadata,
  type SnapshotRecord,
  toSnapshotInfo,
  transition,
} from './metadata.js';
import type { Mount, SnapshotInfo, Snapshotter, SnapshotterStatus, Usage } from './snapshotter.js';
import type { StorageHelper } from './storage-helper.js';

/** Where a test can stop an operation dead (see SimulatedCrash in metadata.ts). */
export type Failpoint =
  | 'prepare:after-intent'
  | 'prepare:after-act'
  | 'commit:after-intent'
  | 'commit:after-act'
  | 'remove:after-intent'
  | 'remove:after-act';

/** A snapshotter a test can crash on purpose (the conformance suite uses it for the recovery checks). */
export interface Failpointable {
  failpoint: ((point: Failpoint) => void) | undefined;
}

/**
 * The snapshotter contract implemented once over SnapshotMetadata; a backend supplies only the disk
 * steps. Every operation is intent → act → result (metadata.ts `transition`), so the semantics (error
 * codes, parent rules, children checks) are identical across overlay, btrfs and devmapper, and
 * `recover()` is generic: an interrupted prepare is undone, an interrupted commit or remove is finished.
 * For that, the disk steps must be idempotent: `removeOnDisk` tolerates a half-created or already-gone
 * object, `commitOnDisk` tolerates running twice.
 */
export abstract class BaseSnapshotter implements Snapshotter, Failpointable {
  abstract readonly driver: 'overlay' | 'btrfs' | 'devmapper';
  abstract readonly storage: StorageHelper;
  failpoint: ((point: Failpoint) => void) | undefined;
  private metaCache: Meta | undefined;

  protected constructor(protected readonly db: Db) {}

  protected get meta(): Meta {
    if (!this.metaCache) this.metaCache = new SnapshotMetadata(this.db, this.driver);
    return this.metaCache;
  }

  /** Create the on-disk object for a new active snapshot or view; may return a backend id to record. */
  protected abstract createOnDisk(
    rec: SnapshotRecord,
    parent: SnapshotRecord | undefined,
  ): Promise<string | undefined>;
  /** Make an active snapshot immutable; may return its usage to record. Must be idempotent. */
  protected abstract commitOnDisk(rec: SnapshotRecord): Promise<Usage | undefined>;
  /** Delete everything the snapshot owns; must tolerate a missing or half-created object. */
  protected abstract removeOnDisk(rec: SnapshotRecord): Promise<void>;
  /** Mounts of an active snapshot or view; `ancestors` nearest first. */
  protected abstract mountsOf(rec: SnapshotRecord, ancestors: SnapshotRecord[]): Promise<Mount[]>;
  protected abstract usageOf(rec: SnapshotRecord, ancestors: SnapshotRecord[]): Promise<Usage>;
  abstract status(): Promise<SnapshotterStatus>;
  /** Directories, pools… Called by recover() before anything else. */
  protected async init(): Promise<void> {}

  private hit(point: Failpoint): void {
    this.failpoint?.(point);
  }

  async recover(): Promise<void> {
    await this.init();
    for (const rec of this.meta.pending()) {
      try {
        switch (rec.state) {
          case 'preparing':
            await this.removeOnDisk(rec);
            this.meta.abortPrepare(rec.id);
            break;
          case 'committing': {
            const usage = await this.commitOnDisk(rec);
            this.meta.finishCommit(rec.id, usage);
            break;
          }
          case 'removing':
            await this.removeOnDisk(rec);
            this.meta.finishRemove(rec.id);
            break;
          default:
            break;
        }
      } catch (err) {
        throw withContext(`recovering snapshot ${JSON.stringify(rec.name)} (${rec.state})`, err);
      }
    }
  }

  prepare(key: string, parent?: string, labels?: Record<string, string>): Promise<Mount[]> {
    return this.create('active', key, parent, labels);
  }

  view(key: string, parent: string, labels?: Record<string, string>): Promise<Mount[]> {
    return this.create('view', key, parent, labels);
  }

  private async create(
    kind: 'active' | 'view',
    key: string,
    parent: string | undefined,
    labels: Record<string, string> | undefined,
  ): Promise<Mount[]> {
    let ready: SnapshotRecord | undefined;
    await transition({
      begin: () => this.meta.beginPrepare(key, kind, parent, labels),
      act: async (r) => {
        this.hit('prepare:after-intent');
        const parentRec = r.parent === undefined ? undefined : this.meta.get(r.parent);
        const backendId = await this.createOnDisk(r, parentRec);
        this.hit('prepare:after-act');
        return backendId;
      },
      finish: (r, backendId) => {
        ready = this.meta.finishPrepare(r.id, backendId);
      },
      undo: async (r) => {
        await this.removeOnDisk(r);
        this.meta.abortPrepare(r.id);
      },
    });
    if (!ready) throw notFound(`snapshot ${JSON.stringify(key)} vanished while being prepared`);
    try {
      return await this.mountsOf(ready, this.meta.ancestors(ready));
    } catch (err) {
      throw withContext(`mounts of new snapshot ${JSON.stringify(key)}`, err);
    }
  }

  async commit(name: string, key: string, labels?: Record<string, string>): Promise<void> {
    await transition({
      begin: () => this.meta.beginCommit(name, key, labels),
      act: async (r) => {
        this.hit('commit:after-intent');
        const usage = await this.commitOnDisk(r);
        this.hit('commit:after-act');
        return usage;
      },
      finish: (r, usage) => {
        this.meta.finishCommit(r.id, usage);
      },
      undo: (r) => this.meta.abortCommit(r.id),
    });
  }

  async mounts(key: string): Promise<Mount[]> {
    const rec = this.meta.require(key);
    if (rec.kind === 'committed') {
      throw invalidInput(`snapshot ${JSON.stringify(key)} is committed: mount it through view()`);
    }
    return this.mountsOf(rec, this.meta.ancestors(rec));
  }

  async remove(keyOrName: string): Promise<void> {
    await transition({
      begin: () => this.meta.beginRemove(keyOrName),
      act: async (r) => {
        this.hit('remove:after-intent');
        await this.removeOnDisk(r);
        this.hit('remove:after-act');
      },
      finish: (r) => this.meta.finishRemove(r.id),
      // The object may be half gone: keep the intent so recovery (or a retry) finishes the removal.
      undo: () => undefined,
    }).catch((err: unknown) => {
      if (isSimulatedCrash(err)) throw err;
      throw withContext(`remove snapshot ${JSON.stringify(keyOrName)}`, err);
    });
  }

  async stat(keyOrName: string): Promise<SnapshotInfo> {
    return toSnapshotInfo(this.meta.require(keyOrName));
  }

  async walk(fn: (info: SnapshotInfo) => void | Promise<void>): Promise<void> {
    for (const rec of this.meta.list()) {
      if (rec.state === 'preparing' || rec.state === 'removing') continue;
      await fn(toSnapshotInfo(rec));
    }
  }

  async usage(keyOrName: string): Promise<Usage> {
    const rec = this.meta.require(keyOrName);
    if (rec.kind === 'committed' && rec.size !== undefined && rec.inodes !== undefined) {
      return { size: rec.size, inodes: rec.inodes };
    }
    return this.usageOf(rec, this.meta.ancestors(rec));
  }

  /** The record behind a key or name (for unpack and the CLI); NotFound when missing. */
  record(keyOrName: string): SnapshotRecord {
    const rec = this.meta.get(keyOrName);
    if (!rec) throw notFound(`snapshot ${JSON.stringify(keyOrName)} does not exist`);
    return rec;
  }

  async close(): Promise<void> {}
}
