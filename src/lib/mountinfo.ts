/**
 * /proc/self/mountinfo: which mounts exist and with which options. Parsing is pure (tests feed text);
 * `readMountinfo` is the one read of the real file.
 */
import { readFileSync } from 'node:fs';

export interface MountEntry {
  point: string;
  options: string[];
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const mounts: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 6) continue;
    mounts.push({ point: unescapeMount(f[4]!), options: f[5]!.split(',') });
  }
  return mounts;
}

/** The mount holding `dir` (longest mount point that is a prefix of its real path). */
export function mountOf(dir: string, mounts: MountEntry[]): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const m of mounts) {
    const inside = m.point === '/' || dir === m.point || dir.startsWith(`${m.point}/`);
    if (inside && (!best || m.point.length >= best.point.length)) best = m;
  }
  return best;
}

/** This process's mounts ([] where /proc is not there). */
export function readMountinfo(): MountEntry[] {
  try {
    return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
  } catch {
    return [];
  }
}

/** Whether something is mounted exactly at `dir` (an absolute path without symlinks). */
export function isMountPoint(dir: string, mounts: MountEntry[] = readMountinfo()): boolean {
  return mounts.some((m) => m.point === dir);
}
