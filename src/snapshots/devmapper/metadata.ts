/**
 * Thin device metadata: one row per thin device of a pool in `devmapper_devices` (migration
 * "devmapper devices"), next to the shared `snapshots` table (src/snapshots/metadata.ts) that the
 * snapshot lifecycle lives in. This table holds what only devmapper knows: the thin device id, the DM
 * name, and the device's state machine, after containerd's snapshots/devmapper/metadata.go:
 *
 *     creating → created → activating → activated → suspending → suspended → resuming → activated
 *                                        activated → deactivating → deactivated → activating …
 *     any → removing → removed (the row is then dropped);  a failed step → faulty (with the error)
 *
 * Each step is recorded before the dmsetup call (the "-ing" state: intent) and after it (the result),
 * by PoolDevice.transition; after a crash or a reboot the recovery pass reads the states and finishes
 * or undoes what was in flight (pool-device.ts `recoveryAction`).
 */
import type { Db } from '../../db/database.js';
import { tx } from '../../db/database.js';
import { conflict, notFound } from '../../lib/errors.js';

export const DEVICE_STATES = [
  'creating',
  'created',
  'activating',
  'activated',
  'suspending',
  'suspended',
  'resuming',
  'deactivating',
  'deactivated',
  'removing',
  'removed',
  'faulty',
] as const;
export type DeviceState = (typeof DEVICE_STATES)[number];

/** Largest thin device id (24 bits in the thin-pool metadata). */
export const MAX_DEVICE_ID = 0xffffff;

export interface ThinDevice {
  pool: string;
  name: string;
  deviceId: number;
  /** snapshots.id this device backs; undefined for the base device. */
  snapshotId: number | undefined;
  /** DM name of the device it was snapshotted from. */
  parent: string | undefined;
  sizeBytes: number;
  state: DeviceState;
  error: string | undefined;
  /** Used inodes of the device's ext4, recorded when it was deactivated. */
  fsInodes: number | undefined;
  createdAt: number;
  updatedAt: number;
}

interface Row {
  pool: string;
  name: string;
  device_id: number;
  snapshot_id: number | null;
  parent: string | null;
  size: number;
  state: DeviceState;
  error: string | null;
  fs_inodes: number | null;
  created_at: number;
  updated_at: number;
}

const fromRow = (r: Row): ThinDevice => ({
  pool: r.pool,
  name: r.name,
  deviceId: r.device_id,
  snapshotId: r.snapshot_id ?? undefined,
  parent: r.parent ?? undefined,
  sizeBytes: r.size,
  state: r.state,
  error: r.error ?? undefined,
  fsInodes: r.fs_inodes ?? undefined,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export class DeviceMetadata {
  constructor(
    private readonly db: Db,
    readonly pool: string,
    private readonly now: () => number = Date.now,
  ) {}

  get(name: string): ThinDevice | undefined {
    const r = this.db
      .prepare('SELECT * FROM devmapper_devices WHERE pool = ? AND name = ?')
      .get(this.pool, name) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  require(name: string): ThinDevice {
    const d = this.get(name);
    if (!d) throw notFound(`thin device ${name} of pool ${this.pool} is not recorded`);
    return d;
  }

  bySnapshot(snapshotId: number): ThinDevice | undefined {
    const r = this.db
      .prepare('SELECT * FROM devmapper_devices WHERE pool = ? AND snapshot_id = ?')
      .get(this.pool, snapshotId) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  list(): ThinDevice[] {
    return (
      this.db
        .prepare('SELECT * FROM devmapper_devices WHERE pool = ? ORDER BY device_id')
        .all(this.pool) as Row[]
    ).map(fromRow);
  }

  /**
   * Record a new device in state `creating` with the next free thin id (intent of create_thin /
   * create_snap). Conflict when the name is taken.
   */
  add(dev: { name: string; snapshotId?: number; parent?: string; sizeBytes: number }): ThinDevice {
    return tx(this.db, () => {
      if (this.get(dev.name)) throw conflict(`thin device ${dev.name} already exists in pool ${this.pool}`);
      const max = this.db
        .prepare('SELECT MAX(device_id) AS m FROM devmapper_devices WHERE pool = ?')
        .get(this.pool) as { m: number | null };
      const deviceId = (max.m ?? 0) + 1;
      if (deviceId > MAX_DEVICE_ID) throw conflict(`pool ${this.pool} has no free thin device id`);
      const t = this.now();
      this.db
        .prepare(
          `INSERT INTO devmapper_devices (pool, name, device_id, snapshot_id, parent, size, state, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, 'creating', ?, ?)`,
        )
        .run(this.pool, dev.name, deviceId, dev.snapshotId ?? null, dev.parent ?? null, dev.sizeBytes, t, t);
      return this.get(dev.name)!;
    });
  }

  /** Move to another thin id (the pool already had the chosen one, e.g. after a lost database). */
  bumpDeviceId(name: string): ThinDevice {
    return tx(this.db, () => {
      const max = this.db
        .prepare('SELECT MAX(device_id) AS m FROM devmapper_devices WHERE pool = ?')
        .get(this.pool) as { m: number };
      this.update(name, 'device_id = ?', [max.m + 1]);
      return this.require(name);
    });
  }

  setState(name: string, state: DeviceState, error?: string): ThinDevice {
    this.update(name, 'state = ?, error = ?', [state, error ?? null]);
    return this.require(name);
  }

  setFsInodes(name: string, inodes: number): void {
    this.update(name, 'fs_inodes = ?', [inodes]);
  }

  /** A device whose removal was deferred no longer backs its snapshot (which is gone). */
  detach(name: string): void {
    this.update(name, 'snapshot_id = NULL', []);
  }

  delete(name: string): void {
    this.db.prepare('DELETE FROM devmapper_devices WHERE pool = ? AND name = ?').run(this.pool, name);
  }

  private update(name: string, set: string, args: unknown[]): void {
    const r = this.db
      .prepare(`UPDATE devmapper_devices SET ${set}, updated_at = ? WHERE pool = ? AND name = ?`)
      .run(...args, this.now(), this.pool, name);
    if (r.changes === 0) throw notFound(`thin device ${name} of pool ${this.pool} is not recorded`);
  }
}
