/**
 * `berth top <container>`: the container's processes as `ps -ef` shows them (docker top's default), read
 * from /proc for the pids in the container's cgroup — no procps needed on the device.
 */
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';

export interface ProcessTable {
  titles: string[];
  processes: string[][];
}

/** USER_HZ: 100 on every Linux architecture berth runs on. */
const CLK_TCK = 100;

interface ProcStat {
  pid: number;
  ppid: number;
  ttyNr: number;
  cpuTicks: number;
  startTicks: number;
  comm: string;
}

/** Fields of /proc/<pid>/stat (comm may hold spaces and parentheses: split after the last ')'). */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const f = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  // f[0] is field 3 (state): field N is f[N - 3]
  const n = (i: number) => Number(f[i - 3]);
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    ppid: n(4),
    ttyNr: n(7),
    cpuTicks: n(14) + n(15),
    startTicks: n(22),
  };
}

function ttyName(ttyNr: number): string {
  if (!ttyNr) return '?';
  const major = (ttyNr >> 8) & 0xfff;
  const minor = (ttyNr & 0xff) | ((ttyNr >> 12) & 0xfff00);
  if (major >= 136 && major <= 143) return `pts/${minor + (major - 136) * 256}`;
  if (major === 4) return minor < 64 ? `tty${minor}` : `ttyS${minor - 64}`;
  return '?';
}

const two = (n: number) => String(n).padStart(2, '0');

/** cumulative CPU time as ps prints it: [DD-]HH:MM:SS */
export function cpuTime(seconds: number): string {
  const s = Math.floor(seconds);
  const days = Math.floor(s / 86400);
  const hms = `${two(Math.floor((s % 86400) / 3600))}:${two(Math.floor((s % 3600) / 60))}:${two(s % 60)}`;
  return days > 0 ? `${days}-${hms}` : hms;
}

/** start time as ps prints it: HH:MM today, "Mon DD" before */
export function startTime(at: Date, now: Date): string {
  if (at.toDateString() === now.toDateString()) return `${two(at.getHours())}:${two(at.getMinutes())}`;
  return `${at.toLocaleString('en-US', { month: 'short' })}${two(at.getDate())}`;
}

async function userNames(passwd = '/etc/passwd'): Promise<Map<number, string>> {
  const text = await readFile(passwd, 'utf8').catch(() => '');
  const out = new Map<number, string>();
  for (const line of text.split('\n')) {
    const [name, , uid] = line.split(':');
    if (name && uid && /^\d+$/.test(uid) && !out.has(Number(uid))) out.set(Number(uid), name);
  }
  return out;
}

/** The `ps -ef` table for `pids` (processes that exit while being read are left out). */
export async function processTable(
  pids: readonly number[],
  opts: { proc?: string; passwd?: string; now?: Date } = {},
): Promise<ProcessTable> {
  const proc = opts.proc ?? '/proc';
  const now = opts.now ?? new Date();
  const btime = Number(/^btime (\d+)/m.exec(await readFile(path.join(proc, 'stat'), 'utf8'))?.[1] ?? 0);
  const uptime = now.getTime() / 1000 - btime;
  const names = await userNames(opts.passwd);
  const rows: string[][] = [];
  for (const pid of [...pids].sort((a, b) => a - b)) {
    const [statText, status, cmdline] = await Promise.all([
      readFile(path.join(proc, String(pid), 'stat'), 'utf8').catch(() => undefined),
      readFile(path.join(proc, String(pid), 'status'), 'utf8').catch(() => ''),
      readFile(path.join(proc, String(pid), 'cmdline'), 'utf8').catch(() => ''),
    ]);
    const st = statText ? parseProcStat(statText) : undefined;
    if (!st) continue;
    const uid = Number(/^Uid:\s+\d+\s+(\d+)/m.exec(status)?.[1] ?? -1);
    const started = btime + st.startTicks / CLK_TCK;
    const elapsed = Math.max(1, uptime - st.startTicks / CLK_TCK);
    const cpu = st.cpuTicks / CLK_TCK;
    const args = cmdline.split('\0').filter(Boolean);
    rows.push([
      names.get(uid) ?? String(uid),
      String(st.pid),
      String(st.ppid),
      String(Math.floor((cpu / elapsed) * 100)),
      startTime(new Date(started * 1000), now),
      ttyName(st.ttyNr),
      cpuTime(cpu),
      args.length ? args.join(' ') : `[${st.comm}]`,
    ]);
  }
  return { titles: ['UID', 'PID', 'PPID', 'C', 'STIME', 'TTY', 'TIME', 'CMD'], processes: rows };
}
