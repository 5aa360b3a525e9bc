/**
 * What this host's kernel offers to containers, probed rather than assumed: the v1 controllers mounted,
 * the unified hierarchy's controllers, the files a fresh cgroup gets (I/O weights exist only with BFQ or
 * CFQ, memory.kmem.tcp.* only on some kernels), the I/O schedulers, and a char major no driver owns.
 * Tests pick their expectation from these and exercise the fallback where a feature is absent.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rmdir } from 'node:fs/promises';
import * as path from 'node:path';
import { uniq } from './runtime-native.js';

export const CGROUP_ROOT = '/sys/fs/cgroup';
export const UNIFIED = '/sys/fs/cgroup/unified';

/** v1 hierarchies mounted under /sys/fs/cgroup: controller name → mount point ("cpu" → /sys/fs/cgroup/cpu). */
export async function v1Hierarchies(): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const [left, right] = line.split(' - ');
    const mountPoint = left?.split(' ')[4];
    const [fstype, , superOptions] = right?.split(' ') ?? [];
    if (fstype !== 'cgroup' || !mountPoint?.startsWith(`${CGROUP_ROOT}/`)) continue;
    for (const opt of superOptions?.split(',') ?? []) {
      if (opt === 'rw' || opt === 'ro' || opt.includes('=')) continue;
      found.set(opt, mountPoint);
    }
  }
  return found;
}

/** Controllers the unified hierarchy of a hybrid host offers, or undefined when there is none. */
export async function unifiedControllers(root = UNIFIED): Promise<Set<string> | undefined> {
  const file = path.join(root, 'cgroup.controllers');
  if (!existsSync(file)) return undefined;
  return new Set((await readFile(file, 'utf8')).trim().split(/\s+/).filter(Boolean));
}

/**
 * Which of `names` a new child cgroup of `parent` has (some files only exist below the root, e.g. BFQ's
 * weights). The probe cgroup has a unique name and is removed before returning.
 */
export async function filesOfNewCgroup(parent: string, names: string[]): Promise<Set<string>> {
  const dir = path.join(parent, uniq('berth-probe'));
  await mkdir(dir);
  try {
    const files = new Set(await readdir(dir));
    return new Set(names.filter((n) => files.has(n)));
  } finally {
    await rmdir(dir);
  }
}

/** I/O schedulers the block devices offer (`none [mq-deadline] kyber bfq` → none, mq-deadline, kyber, bfq). */
export async function ioSchedulers(): Promise<Set<string>> {
  const all = new Set<string>();
  for (const dev of await readdir('/sys/block').catch(() => [] as string[])) {
    const text = await readFile(`/sys/block/${dev}/queue/scheduler`, 'utf8').catch(() => '');
    for (const s of text.replace(/[[\]]/g, ' ').split(/\s+/)) if (s) all.add(s);
  }
  return all;
}

/**
 * A char major no driver has registered here, so opening a node with it gives ENXIO. Taken from the
 * ranges Documentation/admin-guide/devices.txt reserves for local use that the kernel never hands out
 * dynamically (60-63, 120-127): 234-254 are where dynamic majors go (hidraw, watchdog, nvme, tpm…), so a
 * fixed 240 can belong to a driver on one machine and not on another.
 */
export async function freeCharMajor(): Promise<number> {
  const text = await readFile('/proc/devices', 'utf8');
  const chars = text.split(/\n\s*\n/)[0] ?? '';
  const taken = new Set(
    chars
      .split('\n')
      .map((l) => Number.parseInt(l.trim(), 10))
      .filter(Number.isFinite),
  );
  for (const major of [60, 61, 62, 63, 120, 121, 122, 123, 124, 125, 126, 127])
    if (!taken.has(major)) return major;
  throw new Error(`no free char major in 60-63 or 120-127 (/proc/devices: ${[...taken].join(' ')})`);
}
