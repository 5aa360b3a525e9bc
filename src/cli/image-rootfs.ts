/**
 * The image → rootfs seam for the container commands run without an agent (`berth run <image>`, `rm`):
 * the same snapshot-backed rootfs the agent uses (AgentImages), built on first use, since the
 * snapshotter is opened asynchronously and only commands that touch an image rootfs need it.
 */
import { AgentImages } from '../agent/adapters/images.js';
import type { ImageRootfs, PreparedRootfs } from '../runtime/rootfs.js';
import { createSnapshotter } from '../snapshots/factory.js';
import type { CliContext } from './context.js';

export function lazyImageRootfs(ctx: CliContext): ImageRootfs {
  let images: Promise<AgentImages> | undefined;
  const get = () => {
    images ??= createSnapshotter({
      db: ctx.db,
      stateDir: ctx.stateDir,
      storage: ctx.config.storage,
      log: ctx.log,
    }).then(
      (snapshotter) =>
        new AgentImages({ db: ctx.db, store: ctx.store, snapshotter, stateDir: ctx.stateDir, log: ctx.log }),
    );
    return images;
  };
  return {
    prepare: async (id: string, ref: string, dir: string): Promise<PreparedRootfs> =>
      (await get()).prepare(id, ref, dir),
    remount: async (id: string, dir: string) => (await get()).remount(id, dir),
    release: async (id: string, dir: string) => (await get()).release(id, dir),
  };
}
