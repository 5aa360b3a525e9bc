/**
 * A thin pool and its thin devices, after containerd's snapshots/devmapper/pool_device.go. Every
 * device operation is a `transition(name, trying, success, fn)`: the trying state is written to SQLite
 * before the dmsetup call, the success state after it, `faulty` (with the error) when it fails. The
 * recovery pass (`recover`) reads those states at start and reactivates, resumes, finishes or undoes.
 *
 * Snapshots of a thin device follow the kernel's rule (Documentation/admin-guide/device-mapper/
 * thin-provisioning.rst): an active origin is suspended around `create_snap`, so its in-flight writes
 * are flushed and the snapshot is consistent, then resumed.
 *
 * Removal has deferred semantics: a device still open (mounted by a container) is handed to the kernel
 * with `dmsetup remove --deferred` and its row stays in `removing` without a snapshot; the thin id is
 * deleted from the pool by a later sweep once the kernel has let go of it.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Db } from '../../db/database.js';
import { BerthError, errorMessage, invalidInput, isBerthError, withContext } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import * as dm from './dmsetup.js';
import { DeviceMetadata, type DeviceState, type ThinDevice } from './metadata.js';

export interface PoolConfig {
  poolName: string;
  /** Block devices or files (attached as loop devices) to create the pool from, when it is not active. */
  dataDevice?: string | undefined;
  metadataDevice?: string | undefined;
  /** Without devices: `data` and `metadata` sparse files here, of these sizes. */
  loopDir?: string | undefined;
  dataSizeBytes: number;
  metadataSizeBytes: number;
  /** Pool allocation unit in sectors; 128 = 64 KiB, containerd's default. */
  blockSizeSectors: number;
  /** Discard a device's blocks before deleting it, and let the pool pass discards down. */
  discard: boolean;
}

export type RecoveryAction = 'none' | 'activate' | 'resume' | 'deactivate' | 'finish-remove' | 'undo-create';

/** What the recovery pass does with a device, given its recorded state and what the kernel has. Pure. */
export function recoveryAction(state: DeviceState, present: boolean, suspended: boolean): RecoveryAction {
  switch (state) {
    case 'creating':
      return 'undo-create';
    case 'created':
    case 'faulty':
      return 'none';
    case 'activating':
    case 'activated':
    case 'suspending':
    case 'suspended':
    case 'resuming':
      if (!present) return 'activate';
      return suspended ? 'resume' : state === 'activated' ? 'none' : 'activate';
    case 'deactivating':
      return 'deactivate';
    case 'deactivated':
      return present ? 'deactivate' : 'none';
    case 'removing':
    case 'removed':
      return 'finish-remove';
  }
}

export class PoolDevice {
  readonly meta: DeviceMetadata;
  private metadataDevicePath: string | undefined;

  constructor(
    db: Db,
    readonly cfg: PoolConfig,
    private readonly log: Logger,
  ) {
    this.meta = new DeviceMetadata(db, cfg.poolName);
  }

  get poolName(): string {
    return this.cfg.poolName;
  }

  devicePath(name: string): string {
    return `/dev/mapper/${name}`;
  }

  /** Make sure the pool is active: use it when it is, create it from the configured devices otherwise. */
  async open(): Promise<void> {
    const existing = await dm.info(this.poolName);
    if (existing) {
      if (existing.suspended) await dm.resumeDevice(this.poolName);
      return;
    }
    const { dataDevice, metadataDevice } = this.cfg;
    if ((dataDevice === undefined) !== (metadataDevice === undefined)) {
      throw invalidInput('devmapper: give both dataDevice and metadataDevice, or neither');
    }
    let data: string;
    let metadata: string;
    if (dataDevice && metadataDevice) {
      data = await this.blockDevice(dataDevice);
      metadata = await this.blockDevice(metadataDevice);
    } else if (this.cfg.loopDir) {
      await fsp.mkdir(this.cfg.loopDir, { recursive: true });
      data = await this.loopFile(path.join(this.cfg.loopDir, 'data'), this.cfg.dataSizeBytes);
      metadata = await this.loopFile(path.join(this.cfg.loopDir, 'metadata'), this.cfg.metadataSizeBytes);
    } else {
      throw new BerthError(
        'Unavailable',
        `devmapper: thin pool ${this.poolName} is not active and no devices or loop dir are configured to create it from`,
      );
    }
    const dataSectors = await dm.blockDeviceSectors(data);
    const blocks = Math.floor(dataSectors / this.cfg.blockSizeSectors);
    if (blocks < 16) throw invalidInput(`devmapper: data device ${data} is too small for a thin pool`);
    const table = dm.thinPoolTableLine({
      metadataDevice: metadata,
      dataDevice: data,
      dataSectors: blocks * this.cfg.blockSizeSectors,
      blockSizeSectors: this.cfg.blockSizeSectors,
      lowWaterMarkBlocks: Math.max(1, Math.min(32768, Math.floor(blocks / 10))),
      skipBlockZeroing: true,
      discard: this.cfg.discard,
    });
    this.log.info({ pool: this.poolName, data, metadata, table }, 'devmapper: creating thin pool');
    await dm.createDevice(this.poolName, table).catch((err: unknown) => {
      throw withContext(
        `creating thin pool ${this.poolName} (a metadata device that is neither zeroed nor thin-pool metadata is refused)`,
        err,
      );
    });
  }

  private async blockDevice(p: string): Promise<string> {
    const st = await fsp.stat(p).catch((err: unknown) => {
      throw withContext(`devmapper device ${p}`, err);
    });
    if (st.isBlockDevice()) return p;
    if (st.isFile()) return dm.attachLoop(p);
    throw invalidInput(`devmapper device ${p} is neither a block device nor a file`);
  }

  /** Sparse backing file (created zeroed, so the kernel formats fresh pool metadata) on a loop device. */
  private async loopFile(file: string, size: number): Promise<string> {
    const fh = await fsp.open(file, 'a');
    try {
      if ((await fh.stat()).size < size) await fh.truncate(size);
    } finally {
      await fh.close();
    }
    return dm.attachLoop(file);
  }

  /** The pool's metadata device path (thin_ls reads it), from the live table. */
  async metadataDevice(): Promise<string> {
    if (this.metadataDevicePath) return this.metadataDevicePath;
    const t = (await dm.table(this.poolName)).split(/\s+/);
    const dev = t[3];
    if (!dev) throw new BerthError('Corrupt', `thin pool ${this.poolName}: unexpected table ${t.join(' ')}`);
    this.metadataDevicePath = /^\d+:\d+$/.test(dev) ? await devNodeOf(dev) : dev;
    return this.metadataDevicePath;
  }

  async poolStatus(): Promise<dm.ThinPoolStatus> {
    return dm.parseThinPoolStatus(await dm.status(this.poolName));
  }

  /**
   * Record `trying`, run fn, record `success` — or `faulty` with the error when fn fails (the error
   * goes up). containerd's PoolDevice.transition.
   */
  async transition<T>(name: string, trying: DeviceState, success: DeviceState, fn: () => Promise<T>) {
    this.meta.setState(name, trying);
    let result: T;
    try {
      result = await fn();
    } catch (err) {
      this.meta.setState(name, 'faulty', errorMessage(err));
      throw withContext(`thin device ${name}: ${trying}`, err);
    }
    this.meta.setState(name, success);
    return result;
  }

  /** A new empty thin device (`create_thin`), not activated. */
  async createThinDevice(name: string, sizeBytes: number, snapshotId?: number): Promise<ThinDevice> {
    const dev = this.meta.add({ name, sizeBytes, ...(snapshotId === undefined ? {} : { snapshotId }) });
    await this.transition(name, 'creating', 'created', () =>
      this.sendCreate(name, (id) => `create_thin ${id}`),
    );
    return this.meta.require(dev.name);
  }

  /** A thin snapshot of `origin` (`create_snap`, with the origin suspended if active), not activated. */
  async createSnapshotDevice(origin: string, name: string, snapshotId?: number): Promise<ThinDevice> {
    const o = this.meta.require(origin);
    this.meta.add({
      name,
      parent: origin,
      sizeBytes: o.sizeBytes,
      ...(snapshotId === undefined ? {} : { snapshotId }),
    });
    await this.transition(name, 'creating', 'created', async () => {
      // an active origin must be suspended around create_snap; a deactivated one has nothing in flight
      const live = o.state === 'deactivated' || o.state === 'created' ? undefined : await dm.info(origin);
      const suspend = live !== undefined && !live.suspended;
      if (suspend) await this.suspend(origin);
      try {
        await this.sendCreate(name, (id) => `create_snap ${id} ${o.deviceId}`);
      } finally {
        if (suspend) await this.resume(origin);
      }
    });
    return this.meta.require(name);
  }

  /** Send create_thin/create_snap; if the pool already holds the chosen id (lost database), take the next. */
  private async sendCreate(name: string, msg: (id: number) => string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const dev = this.meta.require(name);
      try {
        await dm.message(this.poolName, msg(dev.deviceId));
        return;
      } catch (err) {
        if (!isBerthError(err, 'Conflict') || attempt >= 8) throw err;
        this.log.warn(
          { pool: this.poolName, deviceId: dev.deviceId },
          'devmapper: thin id taken, trying next',
        );
        this.meta.bumpDeviceId(name);
      }
    }
  }

  async activate(name: string): Promise<void> {
    const dev = this.meta.require(name);
    // created/deactivated devices are known to be absent from the kernel (recovery reconciled the states
    // at start): skip the query, each dmsetup run costs
    const mayBeLive = dev.state !== 'created' && dev.state !== 'deactivated';
    await this.transition(name, 'activating', 'activated', async () => {
      const live = mayBeLive ? await dm.info(name) : undefined;
      if (!live) {
        await dm.createDevice(
          name,
          dm.thinTableLine(this.devicePath(this.poolName), dev.deviceId, dev.sizeBytes),
        );
      } else if (live.suspended) {
        await dm.resumeDevice(name);
      }
    });
  }

  /** Asks the kernel. */
  async isActivated(name: string): Promise<boolean> {
    return (await dm.info(name)) !== undefined;
  }

  /** Activated as far as the recorded state goes (recovery makes records and kernel agree at start). */
  isRecordedActive(name: string): boolean {
    return this.meta.get(name)?.state === 'activated';
  }

  async suspend(name: string): Promise<void> {
    await this.transition(name, 'suspending', 'suspended', () => dm.suspendDevice(name));
  }

  async resume(name: string): Promise<void> {
    await this.transition(name, 'resuming', 'activated', () => dm.resumeDevice(name));
  }

  async deactivate(name: string): Promise<void> {
    await this.transition(name, 'deactivating', 'deactivated', async () => {
      await dm.removeDevice(name).catch((err: unknown) => {
        if (!isBerthError(err, 'NotFound')) throw err; // already gone: deactivated all the same
      });
    });
  }

  /**
   * Remove a device and delete its thin id. A device still in use is removed deferred (see file header):
   * returns 'deferred' and leaves the row, detached from its snapshot, for `sweepDeferred`.
   */
  async removeDevice(name: string): Promise<'removed' | 'deferred'> {
    const dev = this.meta.get(name);
    if (!dev) return 'removed';
    this.meta.setState(name, 'removing');
    // a deactivated device is not in the kernel (see activate): nothing to remove there
    const live = dev.state === 'deactivated' || dev.state === 'created' ? undefined : await dm.info(name);
    if (live) {
      if (live.suspended) await dm.resumeDevice(name);
      if (this.cfg.discard && live.openCount === 0) {
        await dm.discardBlocks(this.devicePath(name)).catch((err: unknown) => {
          this.log.warn({ device: name, err: errorMessage(err) }, 'devmapper: discard failed');
        });
      }
      try {
        await dm.removeDevice(name);
      } catch (err) {
        if (!isBerthError(err, 'Conflict')) throw withContext(`removing thin device ${name}`, err);
        await dm.removeDevice(name, { deferred: true });
        this.meta.detach(name);
        this.log.info({ device: name }, 'devmapper: device busy, removal deferred');
        return 'deferred';
      }
    }
    await this.deleteThinId(dev);
    this.meta.delete(name);
    return 'removed';
  }

  private async deleteThinId(dev: ThinDevice): Promise<void> {
    try {
      await dm.message(this.poolName, `delete ${dev.deviceId}`);
    } catch (err) {
      if (!isBerthError(err, 'NotFound'))
        throw withContext(`deleting thin id ${dev.deviceId} (${dev.name})`, err);
    }
  }

  /** Finish removals the kernel deferred: once the device is gone, delete its thin id. */
  async sweepDeferred(): Promise<void> {
    for (const dev of this.meta.list()) {
      if (dev.snapshotId !== undefined || (dev.state !== 'removing' && dev.state !== 'removed')) continue;
      if (dev.name === this.baseName) continue;
      if (await dm.info(dev.name)) continue;
      await this.deleteThinId(dev);
      this.meta.delete(dev.name);
    }
  }

  get baseName(): string {
    return `${this.poolName}-base`;
  }

  /** Boot recovery: bring every device's kernel state in line with its recorded state. */
  async recover(): Promise<void> {
    for (const dev of this.meta.list()) {
      const live = await dm.info(dev.name);
      const action = recoveryAction(dev.state, live !== undefined, live?.suspended ?? false);
      if (action === 'none') {
        if (dev.state === 'faulty')
          this.log.warn({ device: dev.name, error: dev.error }, 'devmapper: faulty device');
        continue;
      }
      this.log.info({ device: dev.name, state: dev.state, action }, 'devmapper: recovering device');
      try {
        switch (action) {
          case 'activate':
            await this.activate(dev.name);
            break;
          case 'resume':
            await this.resume(dev.name);
            break;
          case 'deactivate':
            await this.deactivate(dev.name);
            break;
          case 'finish-remove':
            if ((await this.removeDevice(dev.name)) === 'deferred') continue;
            break;
          case 'undo-create':
            if (live) await dm.removeDevice(dev.name);
            await this.deleteThinId(dev);
            this.meta.delete(dev.name);
            break;
        }
      } catch (err) {
        // transition() has marked it faulty already; one bad device must not stop the others
        this.log.error(
          { device: dev.name, err: errorMessage(err) },
          'devmapper: recovery failed, device faulty',
        );
      }
    }
    await this.sweepDeferred();
  }

  /** Per thin id: exclusive and mapped bytes (thin_ls on a metadata snapshot). */
  async thinUsage(): Promise<Map<number, dm.ThinLsRow>> {
    const rows = await dm.thinLs(this.poolName, await this.metadataDevice());
    return new Map(rows.map((r) => [r.deviceId, r]));
  }

  /** Tear everything down (tests, `berth storage reset`): devices, pool, loop files. */
  async destroy(): Promise<void> {
    const prefix = `${this.poolName}-`;
    for (const name of await dm.list()) {
      if (name.startsWith(prefix)) await dm.removeDevice(name, { force: true }).catch(() => undefined);
    }
    if (await dm.info(this.poolName)) await dm.removeDevice(this.poolName, { force: true });
    if (this.cfg.loopDir) {
      for (const f of ['data', 'metadata'])
        await dm.detachLoop(path.join(this.cfg.loopDir, f)).catch(() => undefined);
    }
  }
}

/** /dev node of a "major:minor" (no udev, so no /dev/block links): DEVNAME from sysfs. */
async function devNodeOf(majMin: string): Promise<string> {
  const uevent = await fsp.readFile(`/sys/dev/block/${majMin}/uevent`, 'utf8');
  const m = /^DEVNAME=(.+)$/m.exec(uevent);
  if (!m) throw new BerthError('NotFound', `no device node for block device ${majMin}`);
  return `/dev/${m[1]}`;
}
