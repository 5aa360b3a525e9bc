/**
 * The devicemapper thin-pool snapshotter, after containerd's snapshots/devmapper. Layers:
 *
 *     snapshotter.ts   the Snapshotter contract (lifecycle, intent-first, recovery from base.ts)
 *     pool-device.ts   thin devices of one pool: create_thin / create_snap, activate, suspend, remove,
 *                      each a recorded state transition; boot recovery of device states
 *     dmsetup.ts       dmsetup / thin_ls / losetup / mkfs.ext4 through the exec helper, parsed
 *     metadata.ts      the devmapper_devices table (thin id, DM name, device state)
 *
 * Model: one ext4 filesystem is made once, on the pool's base thin device (`<pool>-base`, `baseSize`
 * virtual bytes). Every snapshot is a thin snapshot (`create_snap`) of its parent's device, or of the
 * base device when it has no parent, so blocks are shared copy-on-write at the pool's block size and a
 * snapshot costs no copying however many files the parent holds. Active snapshots and views have their
 * device activated (/dev/mapper/<pool>-snap-<row id>); commit deactivates it (a committed snapshot is
 * only ever an origin). Mounts are `ext4 /dev/mapper/<dev>` (`ro` for views).
 *
 * Usage: bytes are the device's exclusive blocks (thin_ls on a metadata snapshot), inodes the used
 * inodes of its ext4 minus its parent's; recorded at commit, when they stop changing.
 */
import type { Config } from '../../config/schema.js';
import type { Db } from '../../db/database.js';
import { BerthError, invalidInput, notFound, withContext } from '../../lib/errors.js';
import { type Logger, silentLogger } from '../../lib/logger.js';
import { BaseSnapshotter } from '../base.js';
import type { SnapshotRecord } from '../metadata.js';
import type { Mount, SnapshotterStatus, Usage } from '../snapshotter.js';
import { developmentStorage, type StorageHelper } from '../storage-helper.js';
import * as dm from './dmsetup.js';
import type { ThinDevice } from './metadata.js';
import { type PoolConfig, PoolDevice } from './pool-device.js';

export interface DevmapperOptions extends PoolConfig {
  /** Virtual size of every thin device (the filesystem size a container sees). */
  baseSizeBytes: number;
}

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** "10G", "256M", "64K", "4096" (binary units, optional trailing B/iB) → bytes. */
export function parseByteSize(s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(s);
  if (!m) throw invalidInput(`invalid size ${JSON.stringify(s)}: use e.g. 512M, 10G`);
  return Math.floor(Number(m[1]) * UNITS[m[2]!.toUpperCase()]!);
}

/** Options from `storage.devmapper` in the config; without devices, loop files go to `loopDir`. */
export function devmapperOptionsFromConfig(
  c: Config['storage']['devmapper'],
  loopDir: string,
): DevmapperOptions {
  const blockSize = parseByteSize(c.blockSize);
  if (blockSize % (64 * 1024) !== 0 || blockSize > 1024 ** 3) {
    throw invalidInput(`storage.devmapper.blockSize ${c.blockSize}: a multiple of 64K up to 1G`);
  }
  return {
    poolName: c.poolName ?? 'berth-thinpool',
    dataDevice: c.dataDevice,
    metadataDevice: c.metadataDevice,
    loopDir: c.dataDevice ? undefined : loopDir,
    dataSizeBytes: parseByteSize(c.dataSize),
    metadataSizeBytes: parseByteSize(c.metadataSize),
    baseSizeBytes: parseByteSize(c.baseSize),
    blockSizeSectors: blockSize / dm.SECTOR,
    discard: c.discard,
  };
}

export class DevmapperSnapshotter extends BaseSnapshotter {
  readonly driver = 'devmapper' as const;
  readonly pool: PoolDevice;

  constructor(
    db: Db,
    readonly opts: DevmapperOptions,
    private readonly log: Logger = silentLogger(),
    readonly storage: StorageHelper = developmentStorage,
  ) {
    super(db);
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$/.test(opts.poolName)) {
      throw invalidInput(`devmapper pool name ${JSON.stringify(opts.poolName)}: use [A-Za-z0-9_.-]`);
    }
    this.pool = new PoolDevice(db, opts, log);
  }

  /** Pool up, device states recovered, base filesystem made (once). Runs before the snapshot recovery. */
  protected override async init(): Promise<void> {
    try {
      await this.pool.open();
      await this.pool.recover();
      await this.ensureBaseDevice();
    } catch (err) {
      throw withContext(`devmapper pool ${this.opts.poolName}`, err);
    }
  }

  private async ensureBaseDevice(): Promise<void> {
    const name = this.pool.baseName;
    const base = this.pool.meta.get(name);
    if (base && base.fsInodes !== undefined && base.state !== 'faulty') {
      if (base.state === 'activated') await this.pool.deactivate(name);
      return;
    }
    if (base) await this.pool.removeDevice(name);
    await this.pool.createThinDevice(name, this.opts.baseSizeBytes);
    await this.pool.activate(name);
    await dm.mkfsExt4(this.pool.devicePath(name));
    this.pool.meta.setFsInodes(name, await dm.ext4UsedInodes(this.pool.devicePath(name)));
    await this.pool.deactivate(name);
    this.log.info(
      { pool: this.opts.poolName, sizeBytes: this.opts.baseSizeBytes },
      'devmapper: base ext4 made',
    );
  }

  private deviceOf(rec: SnapshotRecord): ThinDevice {
    const dev = this.pool.meta.bySnapshot(rec.id);
    if (!dev) throw notFound(`snapshot ${JSON.stringify(rec.name)} has no thin device`);
    return dev;
  }

  /** The device a snapshot inherits from: its parent's, or the base device. */
  private originOf(rec: SnapshotRecord): ThinDevice {
    if (rec.parent === undefined) return this.pool.meta.require(this.pool.baseName);
    const parent = this.meta.get(rec.parent);
    if (!parent) throw notFound(`parent snapshot ${JSON.stringify(rec.parent)} does not exist`);
    return this.deviceOf(parent);
  }

  private async ensureActive(dev: ThinDevice): Promise<string> {
    if (dev.state === 'faulty') {
      throw new BerthError(
        'Unavailable',
        `thin device ${dev.name} is faulty: ${dev.error ?? 'unknown error'}`,
      );
    }
    if (!this.pool.isRecordedActive(dev.name)) await this.pool.activate(dev.name);
    return this.pool.devicePath(dev.name);
  }

  protected async createOnDisk(rec: SnapshotRecord, parent: SnapshotRecord | undefined): Promise<string> {
    const origin = parent ? this.deviceOf(parent) : this.pool.meta.require(this.pool.baseName);
    const name = `${this.opts.poolName}-snap-${rec.id}`;
    await this.pool.createSnapshotDevice(origin.name, name, rec.id);
    await this.pool.activate(name);
    return name;
  }

  protected async commitOnDisk(rec: SnapshotRecord): Promise<Usage> {
    let dev = this.deviceOf(rec);
    if (dev.state !== 'deactivated') {
      this.pool.meta.setFsInodes(dev.name, await dm.ext4UsedInodes(this.pool.devicePath(dev.name)));
      await this.pool.deactivate(dev.name);
      dev = this.deviceOf(rec);
    }
    const usage = await this.pool.thinUsage();
    return {
      size: usage.get(dev.deviceId)?.exclusiveBytes ?? 0,
      inodes: Math.max(0, (dev.fsInodes ?? 0) - (this.originOf(rec).fsInodes ?? 0)),
    };
  }

  protected async removeOnDisk(rec: SnapshotRecord): Promise<void> {
    const dev = this.pool.meta.bySnapshot(rec.id);
    if (dev) await this.pool.removeDevice(dev.name);
    await this.pool.sweepDeferred();
  }

  protected async mountsOf(rec: SnapshotRecord): Promise<Mount[]> {
    const source = await this.ensureActive(this.deviceOf(rec));
    return [{ type: 'ext4', source, options: rec.kind === 'view' ? ['ro'] : [] }];
  }

  protected async usageOf(rec: SnapshotRecord): Promise<Usage> {
    const dev = this.deviceOf(rec);
    const devPath = await this.ensureActive(dev);
    const inodes = await dm.ext4UsedInodes(devPath);
    const usage = await this.pool.thinUsage();
    return {
      size: usage.get(dev.deviceId)?.exclusiveBytes ?? 0,
      inodes: Math.max(0, inodes - (this.originOf(rec).fsInodes ?? 0)),
    };
  }

  async status(): Promise<SnapshotterStatus> {
    const s = await this.pool.poolStatus();
    const block = this.opts.blockSizeSectors * dm.SECTOR;
    const capacity = s.totalDataBlocks * block;
    const used = s.usedDataBlocks * block;
    return {
      driver: 'devmapper',
      root: this.pool.devicePath(this.opts.poolName),
      capacityBytes: capacity,
      usedBytes: used,
      availableBytes: capacity - used,
      details: {
        pool: this.opts.poolName,
        mode: s.failed ? 'failed' : s.mode,
        dataBlockBytes: block,
        metadataUsedBytes: s.usedMetadataBlocks * 4096,
        metadataTotalBytes: s.totalMetadataBlocks * 4096,
        devices: this.pool.meta.list().length,
        faultyDevices: this.pool.meta.list().filter((d) => d.state === 'faulty').length,
        needsCheck: s.needsCheck ? 'yes' : 'no',
      },
    };
  }
}
