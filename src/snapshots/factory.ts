import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Config } from '../config/schema.js';
import type { Db } from '../db/database.js';
import { invalidInput, unsupported } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { NativeParts } from '../lib/native.js';
import { BtrfsSnapshotter, isOnBtrfs } from './btrfs.js';
import { DevmapperSnapshotter, devmapperOptionsFromConfig } from './devmapper/snapshotter.js';
import { OverlaySnapshotter } from './overlay.js';
import type { Snapshotter } from './snapshotter.js';
import { StorageHelper } from './storage-helper.js';

export type StorageDriver = 'overlay' | 'btrfs' | 'devmapper';
export type DevmapperConfig = Config['storage']['devmapper'];

/**
 * Choosing and building the snapshotter (composition roots call this; nothing here runs at import).
 *
 * `auto` picks, in order: btrfs when `<stateDir>/snapshots` is on a btrfs filesystem; devmapper when a
 * thin pool is configured (storage.devmapper.poolName, or data + metadata devices); overlay otherwise.
 * Each backend keeps its files under `<stateDir>/snapshots/<driver>/` and its rows in the shared
 * `snapshots` table (scoped by driver), so switching driver never mixes them up.
 */
export function devmapperConfigured(dm: DevmapperConfig): boolean {
  return Boolean(dm.poolName || (dm.dataDevice && dm.metadataDevice));
}

/** Pure decision once the facts are known (unit-tested). */
export function chooseDriver(
  requested: Config['storage']['driver'],
  facts: { onBtrfs: boolean; devmapperConfigured: boolean },
): StorageDriver {
  if (requested !== 'auto') return requested;
  if (facts.onBtrfs) return 'btrfs';
  if (facts.devmapperConfigured) return 'devmapper';
  return 'overlay';
}

export async function detectDriver(stateDir: string, storage: Config['storage']): Promise<StorageDriver> {
  const dir = path.join(stateDir, 'snapshots');
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  return chooseDriver(storage.driver, {
    onBtrfs: await isOnBtrfs(dir),
    devmapperConfigured: devmapperConfigured(storage.devmapper),
  });
}

export interface CreateSnapshotterOptions {
  db: Db;
  stateDir: string;
  storage: Config['storage'];
  /** where berth-storage runs from (the composition root's native parts) */
  native: NativeParts;
  log?: Logger;
  /** skip recover() (tests that want to look at the state first) */
  noRecover?: boolean;
}

/** Build the configured snapshotter and run its recovery pass. */
export async function createSnapshotter(o: CreateSnapshotterOptions): Promise<Snapshotter> {
  const driver = await detectDriver(o.stateDir, o.storage);
  const root = path.join(o.stateDir, 'snapshots', driver);
  const helper = new StorageHelper(o.native);
  let sn: Snapshotter;
  switch (driver) {
    case 'overlay':
      sn = new OverlaySnapshotter(o.db, root, helper);
      break;
    case 'btrfs':
      if (!(await isOnBtrfs(path.join(o.stateDir, 'snapshots')))) {
        throw unsupported(
          `storage driver btrfs: ${path.join(o.stateDir, 'snapshots')} is not on btrfs (use --storage-driver overlay, or put the state dir on btrfs)`,
        );
      }
      sn = new BtrfsSnapshotter(o.db, root, helper);
      break;
    case 'devmapper':
      // loop files (when no devices are configured) live in <stateDir>/snapshots/devmapper
      sn = new DevmapperSnapshotter(
        o.db,
        devmapperOptionsFromConfig(o.storage.devmapper, root),
        o.log,
        helper,
      );
      break;
    default:
      throw invalidInput(`unknown storage driver ${String(driver)}`);
  }
  if (!o.noRecover) await sn.recover();
  o.log?.debug({ driver, root }, 'snapshotter ready');
  return sn;
}
