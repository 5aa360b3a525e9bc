/**
 * Per-container CPU, memory and process counts from cgroups, v1 and v2. A container's cgroup path
 * (relative to the hierarchy root, as the runtime placed it) is read from:
 *   v2 (unified): <root>/<path>/cpu.stat (usage_usec), memory.current, memory.max, pids.current, cgroup.procs
 *   v1:           <root>/cpuacct/<path>/cpuacct.usage (ns) (or cpu,cpuacct/), <root>/memory/<path>/memory.usage_in_bytes,
 *                 memory.limit_in_bytes, <root>/pids/<path>/pids.current, cgroup.procs of the first
 *                 controller that has the group (pids, memory, cpu…)
 * Hybrid hosts (v1 controllers plus an empty unified tree at <root>/unified) count as v1.
 */
import { readFile, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { invalidInput, notFound, withContext } from '../lib/errors.js';

export type CgroupVersion = 1 | 2;

export interface CgroupStats {
  cpuUsageNs: number;
  memoryBytes: number;
  memoryLimitBytes?: number | undefined;
  /** processes (tasks) in the group, when the pids controller is there */
  pids?: number | undefined;
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

export async function detectCgroupVersion(root = '/sys/fs/cgroup'): Promise<CgroupVersion> {
  return (await exists(path.join(root, 'cgroup.controllers'))) ? 2 : 1;
}

function safeRel(p: string): string {
  const rel = path.posix.normalize(`/${p}`).slice(1);
  if (rel.split('/').includes('..')) throw invalidInput(`invalid cgroup path ${JSON.stringify(p)}`);
  return rel;
}

async function readNumber(file: string): Promise<number> {
  const s = (await readFile(file, 'utf8')).trim();
  const n = Number(s);
  if (!Number.isFinite(n)) throw invalidInput(`${file}: not a number: ${JSON.stringify(s.slice(0, 40))}`);
  return n;
}

/** Parse `cpu.stat` (v2) into its key → number pairs. */
export function parseFlatKeyed(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && Number.isFinite(Number(v))) out[k] = Number(v);
  }
  return out;
}

export async function readCgroupV2(root: string, cgroupPath: string): Promise<CgroupStats> {
  const dir = path.join(root, safeRel(cgroupPath));
  try {
    const cpu = parseFlatKeyed(await readFile(path.join(dir, 'cpu.stat'), 'utf8'));
    const memoryBytes = await readNumber(path.join(dir, 'memory.current'));
    const max = (await readFile(path.join(dir, 'memory.max'), 'utf8').catch(() => 'max')).trim();
    const pids = await readNumber(path.join(dir, 'pids.current')).catch(() => undefined);
    return {
      cpuUsageNs: (cpu.usage_usec ?? 0) * 1000,
      memoryBytes,
      memoryLimitBytes: max === 'max' ? undefined : Number(max),
      pids,
    };
  } catch (err) {
    throw withContext(`reading cgroup v2 stats of ${cgroupPath}`, err);
  }
}

/** v1 "no limit" is a page-aligned huge number (e.g. 9223372036854771712). */
const V1_UNLIMITED = 2 ** 62;

export async function readCgroupV1(root: string, cgroupPath: string): Promise<CgroupStats> {
  const rel = safeRel(cgroupPath);
  try {
    let cpuUsageNs: number;
    const cpuacct = path.join(root, 'cpuacct', rel, 'cpuacct.usage');
    if (await exists(cpuacct)) cpuUsageNs = await readNumber(cpuacct);
    else cpuUsageNs = await readNumber(path.join(root, 'cpu,cpuacct', rel, 'cpuacct.usage'));
    const mem = path.join(root, 'memory', rel);
    const memoryBytes = await readNumber(path.join(mem, 'memory.usage_in_bytes'));
    const limit = await readNumber(path.join(mem, 'memory.limit_in_bytes')).catch(() => undefined);
    const pids = await readNumber(path.join(root, 'pids', rel, 'pids.current')).catch(() => undefined);
    return {
      cpuUsageNs,
      memoryBytes,
      memoryLimitBytes: limit === undefined || limit >= V1_UNLIMITED ? undefined : limit,
      pids,
    };
  } catch (err) {
    throw withContext(`reading cgroup v1 stats of ${cgroupPath}`, err);
  }
}

export async function readCgroupStats(cgroupPath: string, root = '/sys/fs/cgroup', version?: CgroupVersion) {
  const v = version ?? (await detectCgroupVersion(root));
  return v === 2 ? readCgroupV2(root, cgroupPath) : readCgroupV1(root, cgroupPath);
}

/** v1 hierarchies that hold a container's group, in the order `cgroupProcs` looks. */
const V1_PROCS_FROM = ['pids', 'memory', 'cpu,cpuacct', 'cpuacct', 'cpu', 'systemd'];

/** The pids in a container's cgroup (its processes, not only the init), v1 or v2. */
export async function cgroupProcs(
  cgroupPath: string,
  root = '/sys/fs/cgroup',
  version?: CgroupVersion,
): Promise<number[]> {
  const rel = safeRel(cgroupPath);
  const v = version ?? (await detectCgroupVersion(root));
  const files =
    v === 2
      ? [path.join(root, rel, 'cgroup.procs')]
      : V1_PROCS_FROM.map((c) => path.join(root, c, rel, 'cgroup.procs'));
  for (const f of files) {
    const text = await readFile(f, 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    return text
      .split('\n')
      .filter(Boolean)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 0);
  }
  throw notFound(`no cgroup ${cgroupPath} under ${root} (v${v}): the container is not running`);
}

/** CPU use between two samples, in percent of one core (200 = two cores busy). */
export function cpuPercent(prev: { ns: number; at: number }, next: { ns: number; at: number }): number {
  const wallNs = (next.at - prev.at) * 1e6;
  if (wallNs <= 0 || next.ns < prev.ns) return 0;
  return Math.round(((next.ns - prev.ns) / wallNs) * 1000) / 10;
}
