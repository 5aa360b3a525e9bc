/**
 * Where a container's root filesystem comes from. `RootfsProvider` is the seam: the manager asks for a
 * rootfs for a container id and gives it back at removal.
 *
 * - `{kind:'dir'}`: a plain directory used in place (`berth run --rootfs <dir>`). Writes by a container
 *   that is not --read-only land in that directory; give each container its own dir, or use an image.
 * - `{kind:'image'}`: resolved by an `ImageRootfs` — the image store + snapshotter (an active snapshot
 *   prepared from the image's top ChainID, mounted under the container dir). The lead wires it at merge:
 *   `new DefaultRootfsProvider(imageRootfs)`; without it images are reported as Unsupported.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { invalidInput, unsupported, withContext } from '../lib/errors.js';
import type { ImageConfig } from '../oci/types.js';

export type RootfsSource = { kind: 'dir'; path: string } | { kind: 'image'; ref: string };

export interface PreparedRootfs {
  /** Absolute path of the root filesystem, ready to be the bundle's root.path. */
  path: string;
  /** The image config's `config` section (Entrypoint, Cmd, Env, User…), when there is an image. */
  imageConfig?: ImageConfig['config'];
  /** OCI architecture of the image (selects the seccomp arch list); default: this machine. */
  architecture?: string;
}

export interface RootfsProvider {
  prepare(containerId: string, source: RootfsSource, containerDir: string): Promise<PreparedRootfs>;
  /**
   * Before every start: make sure a prepared rootfs is mounted again. Mounts do not survive a reboot,
   * while the container's record, bundle and snapshot do; without this the container would start on
   * the empty mount point.
   */
  remount(containerId: string, source: RootfsSource, containerDir: string): Promise<void>;
  release(containerId: string, source: RootfsSource, containerDir: string): Promise<void>;
}

/** Image → rootfs, implemented by the image store + snapshotter (wired by the composition root). */
export interface ImageRootfs {
  prepare(containerId: string, ref: string, containerDir: string): Promise<PreparedRootfs>;
  /** mount the container's existing snapshot at <containerDir>/rootfs unless it is mounted already */
  remount(containerId: string, containerDir: string): Promise<void>;
  release(containerId: string, containerDir: string): Promise<void>;
}

export class DefaultRootfsProvider implements RootfsProvider {
  constructor(private readonly images?: ImageRootfs) {}

  async prepare(containerId: string, source: RootfsSource, containerDir: string): Promise<PreparedRootfs> {
    if (source.kind === 'image') {
      if (!this.images)
        throw unsupported(
          `cannot run image ${source.ref}: no image store is wired in yet; use --rootfs <dir>`,
        );
      return this.images.prepare(containerId, source.ref, containerDir);
    }
    if (!path.isAbsolute(source.path)) throw invalidInput(`rootfs ${source.path} must be an absolute path`);
    try {
      const real = await fsp.realpath(source.path);
      if (!(await fsp.stat(real)).isDirectory())
        throw invalidInput(`rootfs ${source.path} is not a directory`);
      return { path: real };
    } catch (err) {
      throw withContext(`rootfs ${source.path}`, err);
    }
  }

  async remount(containerId: string, source: RootfsSource, containerDir: string): Promise<void> {
    if (source.kind === 'image' && this.images) await this.images.remount(containerId, containerDir);
  }

  async release(containerId: string, source: RootfsSource, containerDir: string): Promise<void> {
    if (source.kind === 'image' && this.images) await this.images.release(containerId, containerDir);
  }
}
