/**
 * Image → container rootfs over a snapshotter (the runtime's ImageRootfs), the same for `berth agent`
 * and the docker-like commands run without an agent (`berth run <image>`, `rm`):
 *
 *   prepare  → the image's layers unpacked if they are not (src/content/acquire.ts), an active snapshot
 *              `container-<id>` prepared from its top ChainID, mounted at <container dir>/rootfs
 *   remount  → the same snapshot mounted again when a reboot took the mount
 *   release  → unmounted and the snapshot removed
 *   sweep    → container snapshots no container owns any more (a kill mid-create) removed
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ImageRepo } from '../content/images.js';
import type { ContentStore } from '../content/store.js';
import type { Db } from '../db/database.js';
import { errorMessage, isBerthError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { isMountPoint } from '../lib/mountinfo.js';
import { chainIds } from '../oci/digest.js';
import type { ImageRootfs, PreparedRootfs } from '../runtime/rootfs.js';
import { mountAll, unmountAll } from './mount.js';
import type { Snapshotter } from './snapshotter.js';

const containerKey = (id: string) => `container-${id}`;

export class SnapshotImageRootfs implements ImageRootfs {
  private readonly repo: ImageRepo;

  constructor(
    private readonly o: {
      db: Db;
      store: ContentStore;
      snapshotter: Snapshotter;
      /** unpack a recorded image (ImageAcquisition.unpack, or the agent's counted wrapper of it) */
      unpack: (ref: string) => Promise<unknown>;
      log?: Logger | undefined;
    },
  ) {
    this.repo = new ImageRepo(o.db, o.store);
  }

  private async committed(chain: string): Promise<boolean> {
    return this.o.snapshotter
      .stat(chain)
      .then((i) => i.kind === 'committed')
      .catch(() => false);
  }

  async prepare(containerId: string, ref: string, containerDir: string): Promise<PreparedRootfs> {
    const img = await this.repo.resolve(ref);
    const chain = chainIds(img.diffIds);
    const top = chain[chain.length - 1]!;
    if (!(await this.committed(top))) await this.o.unpack(ref);
    const key = containerKey(containerId);
    const mounts = await this.o.snapshotter.prepare(key, top).catch(async (err: unknown) => {
      if (isBerthError(err, 'Conflict')) return this.o.snapshotter.mounts(key);
      throw err;
    });
    const target = path.join(containerDir, 'rootfs');
    await fsp.mkdir(target, { recursive: true });
    await mountAll(mounts, target);
    return {
      path: target,
      ...(img.config.config ? { imageConfig: img.config.config } : {}),
      architecture: img.config.architecture,
    };
  }

  async remount(containerId: string, containerDir: string): Promise<void> {
    const target = path.join(containerDir, 'rootfs');
    if (isMountPoint(await fsp.realpath(target).catch(() => target))) return;
    const mounts = await this.o.snapshotter.mounts(containerKey(containerId));
    await fsp.mkdir(target, { recursive: true });
    await mountAll(mounts, target);
    this.o.log?.info({ container: containerId }, 'container rootfs mounted again');
  }

  async release(containerId: string, containerDir: string): Promise<void> {
    await unmountAll(path.join(containerDir, 'rootfs')).catch(() => undefined);
    await this.o.snapshotter.remove(containerKey(containerId)).catch((err: unknown) => {
      if (!isBerthError(err, 'NotFound')) throw err;
    });
  }

  /**
   * Container snapshots no container owns any more (an agent killed in the middle of a create or a remove
   * whose cleanup then failed): unmounted and removed, so they do not hold layers and disk forever.
   */
  async sweepOrphans(liveContainerIds: ReadonlySet<string>, containersDir: string): Promise<string[]> {
    const orphans: string[] = [];
    await this.o.snapshotter.walk((i) => {
      if (i.kind !== 'active' || !i.name.startsWith('container-')) return;
      const id = i.name.slice('container-'.length);
      if (!liveContainerIds.has(id)) orphans.push(id);
    });
    const removed: string[] = [];
    for (const id of orphans) {
      try {
        await this.release(id, path.join(containersDir, id));
        removed.push(id);
      } catch (err) {
        this.o.log?.warn({ container: id, err: errorMessage(err) }, 'orphan container snapshot not removed');
      }
    }
    return removed;
  }
}
