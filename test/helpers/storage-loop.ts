import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { exec } from '../../src/lib/exec.js';

/**
 * A real filesystem on a loop device for storage tests: sparse image file → mkfs → `mount -o loop`
 * (a free loop device is taken atomically and released by umount), unique names so test files can
 * run in parallel. `cleanup` unmounts (lazily if something still holds it), detaches and deletes.
 */
export interface LoopFs {
  mountpoint: string;
  image: string;
  cleanup(): Promise<void>;
}

export async function makeLoopFs(opts: {
  fs: 'btrfs' | 'ext4';
  sizeMiB: number;
  quota?: boolean;
}): Promise<LoopFs> {
  const base = await fsp.mkdtemp(path.join(tmpdir(), `berth-${opts.fs}-${randomBytes(3).toString('hex')}-`));
  const image = path.join(base, 'disk.img');
  const mountpoint = path.join(base, 'mnt');
  await fsp.mkdir(mountpoint);
  const fh = await fsp.open(image, 'w');
  await fh.truncate(opts.sizeMiB * 1024 * 1024);
  await fh.close();
  let mounted = false;
  const cleanup = async () => {
    if (mounted) {
      const r = await exec('umount', [mountpoint], { allowFailure: true });
      if (r.code !== 0) await exec('umount', ['-l', mountpoint], { allowFailure: true });
      mounted = false;
    }
    await fsp.rm(base, { recursive: true, force: true });
  };
  try {
    if (opts.fs === 'btrfs') await exec('mkfs.btrfs', ['-q', '-f', image]);
    else await exec('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', image]);
    await exec('mount', ['-o', 'loop', image, mountpoint]);
    mounted = true;
    if (opts.quota && opts.fs === 'btrfs') await exec('btrfs', ['quota', 'enable', mountpoint]);
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { mountpoint, image, cleanup };
}
