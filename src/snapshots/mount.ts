import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { BerthError, withContext } from '../lib/errors.js';
import { exec } from '../lib/exec.js';
import { type MountEntry, readMountinfo } from '../lib/mountinfo.js';
import type { Mount } from './snapshotter.js';

/**
 * Mounting snapshot mounts with mount(8) (util-linux, through the exec helper).
 *
 * Long overlay chains: the kernel copies mount data into one page, so `lowerdir=/a/…:/b/…:…` fails past
 * ~4095 bytes (about 80 layers with absolute paths under /var/lib/berth). Like containerd's
 * mount_linux.go, `mountAll` then rewrites the overlay's directories relative to their longest common
 * parent and runs mount(8) with that directory as its working directory; overlay snapshots are
 * `<root>/snapshots/<id>/fs`, so each relative lowerdir is ~8 bytes and ~500 layers fit (overlayfs
 * itself stops at 500 lower layers). Mount records keep absolute paths: the compaction is a property of
 * how they are mounted, not of the snapshot, so every consumer of Mount[] stays simple.
 */
export const MOUNT_DATA_LIMIT = 4095;

const OVERLAY_DIR_KEYS = ['lowerdir', 'upperdir', 'workdir'] as const;

/** Pure: the options of an overlay mount rewritten relative to a common parent, or as-is when they fit. */
export function compactOverlayOptions(
  options: readonly string[],
  limit = MOUNT_DATA_LIMIT,
): { options: string[]; cwd?: string } {
  if (options.join(',').length <= limit) return { options: [...options] };
  const dirs: string[] = [];
  for (const o of options) {
    const [k, v] = splitOption(o);
    if ((OVERLAY_DIR_KEYS as readonly string[]).includes(k) && v !== undefined) dirs.push(...v.split(':'));
  }
  if (dirs.length === 0) return { options: [...options] };
  const common = commonParent(dirs);
  const rel = (d: string) => path.relative(common, d) || '.';
  const out = options.map((o) => {
    const [k, v] = splitOption(o);
    if (!(OVERLAY_DIR_KEYS as readonly string[]).includes(k) || v === undefined) return o;
    return `${k}=${v.split(':').map(rel).join(':')}`;
  });
  return { options: out, cwd: common };
}

function splitOption(o: string): [string, string | undefined] {
  const i = o.indexOf('=');
  return i < 0 ? [o, undefined] : [o.slice(0, i), o.slice(i + 1)];
}

function commonParent(dirs: string[]): string {
  let parts = path.dirname(dirs[0]!).split(path.sep);
  for (const d of dirs.slice(1)) {
    const p = d.split(path.sep);
    let i = 0;
    while (i < parts.length && i < p.length - 1 && parts[i] === p[i]) i++;
    parts = parts.slice(0, i);
  }
  return parts.join(path.sep) || path.sep;
}

/**
 * mount(8) arguments for one Mount; pure, so the rewriting is unit-tested.
 *
 * Every snapshot mount berth makes is `nodev` (issue 15, item 3): layers may carry device nodes, and a
 * container rootfs mount point is listed in /proc/mounts, so the host-side path (an overlay, the bind of a
 * btrfs subvolume, the ext4 of a thin device) must not open them for anyone — not even root by mistake.
 * Inside the container the rootfs stays nodev too; its /dev is the runtime's own tmpfs (default devices
 * and the spec's `devices`), which is where device nodes work, as the device cgroup allows.
 */
export function mountArgs(m: Mount, target: string): { args: string[]; cwd?: string } {
  const isBind = m.type === 'bind' || m.options.includes('bind') || m.options.includes('rbind');
  let options = [...m.options];
  let cwd: string | undefined;
  if (m.type === 'overlay') ({ options, cwd } = compactOverlayOptions(options));
  if (isBind && !options.includes('bind') && !options.includes('rbind')) options.unshift('rbind');
  // mount(8) applies flags to a bind with a second, remounting call (util-linux ≥ 2.27)
  if (!options.includes('nodev')) options.push('nodev');
  const args = isBind ? [] : ['-t', m.type];
  if (options.length > 0) args.push('-o', options.join(','));
  args.push(m.source, target);
  return cwd === undefined ? { args } : { args, cwd };
}

/** Mount `mounts` in order onto `target` (the first is the root; later ones stack, as containerd does). */
export async function mountAll(mounts: readonly Mount[], target: string): Promise<void> {
  for (const m of mounts) {
    const { args, cwd } = mountArgs(m, target);
    const r = await exec('mount', args, { allowFailure: true, ...(cwd ? { cwd } : {}) });
    if (r.code !== 0) {
      const msg = r.stderr.trim();
      const code = /no space/i.test(msg)
        ? 'NoSpace'
        : /permission|not permitted/i.test(msg)
          ? 'PermissionDenied'
          : 'Internal';
      throw new BerthError(code, `mount ${m.type} ${m.source} on ${target}: ${msg || `exit ${r.code}`}`, {
        details: { args },
      });
    }
  }
}

/**
 * Pure: remount arguments that add `nodev` to every mount at or under `dir` that lacks it, keeping its
 * other per-mount flags (ro, nosuid, noexec, atime): what a mount made by an older berth needs.
 */
export function nodevRemounts(mounts: readonly MountEntry[], dir: string): string[][] {
  const out: string[][] = [];
  for (const m of mounts) {
    if (!(m.point === dir || m.point.startsWith(`${dir}/`)) || m.options.includes('nodev')) continue;
    out.push(['-o', ['remount', 'bind', ...m.options, 'nodev'].join(','), m.point]);
  }
  return out;
}

/** Add `nodev` to the snapshot mounts under `dir` that lack it (agent start). Returns the mount points. */
export async function remountNodev(dir: string): Promise<string[]> {
  const done: string[] = [];
  for (const args of nodevRemounts(readMountinfo(), dir)) {
    const r = await exec('mount', args, { allowFailure: true });
    if (r.code !== 0) throw new BerthError('Internal', `mount ${args.join(' ')}: ${r.stderr.trim()}`);
    done.push(args[args.length - 1]!);
  }
  return done;
}

/** Unmount `target` (all stacked mounts). Not mounted is fine. */
export async function unmountAll(target: string): Promise<void> {
  for (let i = 0; i < 16; i++) {
    const r = await exec('umount', [target], { allowFailure: true });
    if (r.code === 0) continue;
    if (/not mounted|no mount point|not found/i.test(r.stderr)) return;
    throw new BerthError('Conflict', `umount ${target}: ${r.stderr.trim()}`);
  }
}

/**
 * Mount under a fresh temp dir, run fn, always unmount and remove the dirs. The mount point is a child of
 * the 0700 mkdtemp dir, not that dir itself: a mounted root shows its own mode (an image's 0755) in place
 * of the mount point's, so only a parent that stays 0700 keeps other users out while a layer is unpacked.
 */
export async function withTempMount<T>(
  mounts: readonly Mount[],
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const parent = await fsp.mkdtemp(path.join(tmpdir(), 'berth-mnt-'));
  const dir = path.join(parent, 'root');
  try {
    await fsp.mkdir(dir, { mode: 0o700 });
    try {
      await mountAll(mounts, dir);
    } catch (err) {
      await unmountAll(dir).catch(() => undefined);
      throw withContext('temporary mount', err);
    }
    try {
      return await fn(dir);
    } finally {
      await unmountAll(dir);
    }
  } finally {
    await fsp.rmdir(dir).catch(() => undefined);
    await fsp.rmdir(parent).catch(() => undefined);
  }
}
