/**
 * The image → rootfs seam for the container commands run without an agent (`berth run <image>`, `rm`):
 * the same snapshot-backed rootfs the agent uses (src/snapshots/image-rootfs.ts) over the one image path
 * (src/content/acquire.ts), built on first use, since the snapshotter is opened asynchronously and only
 * commands that touch an image rootfs need it.
 */
import { ImageAcquisition } from '../content/acquire.js';
import type { ImageRootfs, PreparedRootfs } from '../runtime/rootfs.js';
import { createSnapshotter } from '../snapshots/factory.js';
import { SnapshotImageRootfs } from '../snapshots/image-rootfs.js';
import type { CliContext } from './context.js';

export function lazyImageRootfs(ctx: CliContext): ImageRootfs {
  let rootfs: Promise<SnapshotImageRootfs> | undefined;
  const get = () => {
    rootfs ??= createSnapshotter({
      db: ctx.db,
      stateDir: ctx.stateDir,
      storage: ctx.config.storage,
      log: ctx.log,
    }).then((snapshotter) => {
      const images = new ImageAcquisition({ db: ctx.db, store: ctx.store, snapshotter, log: ctx.log });
      return new SnapshotImageRootfs({
        db: ctx.db,
        store: ctx.store,
        snapshotter,
        unpack: (ref) => images.unpack(ref),
        log: ctx.log,
      });
    });
    return rootfs;
  };
  return {
    prepare: async (id: string, ref: string, dir: string): Promise<PreparedRootfs> =>
      (await get()).prepare(id, ref, dir),
    remount: async (id: string, dir: string) => (await get()).remount(id, dir),
    release: async (id: string, dir: string) => (await get()).release(id, dir),
  };
}
