/**
 * Reading the monitor's docker json-file logs: log.json.N (oldest) … log.json.1, log.json (newest).
 * `follow` polls for growth (the monitor hands data to the kernel at least every 250 ms), notices
 * rotation by inode and stops once the container has exited and the file is drained.
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';

export interface LogEntry {
  log: string;
  stream: 'stdout' | 'stderr';
  time: string;
}

function parseLines(text: string): LogEntry[] {
  const out: LogEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    try {
      out.push(JSON.parse(line) as LogEntry);
    } catch {
      /* a torn last line after a power cut: skip it */
    }
  }
  return out;
}

export async function logFiles(dir: string): Promise<string[]> {
  const names = (await fsp.readdir(dir).catch(() => [] as string[])).filter((n) =>
    /^log\.json(\.\d+)?$/.test(n),
  );
  const rank = (n: string) => (n === 'log.json' ? 0 : Number(n.slice('log.json.'.length)));
  return names.sort((a, b) => rank(b) - rank(a)).map((n) => path.join(dir, n));
}

/** Which entries to show: written in [since, until] (ms since the epoch), then the last `tail` of those. */
export interface LogWindow {
  tail?: number | undefined;
  since?: number | undefined;
  until?: number | undefined;
}

/** An entry inside the window's time bounds (entries without a readable time are kept). */
export function inTimeWindow(e: Pick<LogEntry, 'time'>, w: LogWindow): boolean {
  if (w.since === undefined && w.until === undefined) return true;
  const t = Date.parse(e.time);
  if (Number.isNaN(t)) return true;
  return (w.since === undefined || t >= w.since) && (w.until === undefined || t <= w.until);
}

function windowed(entries: LogEntry[], w: LogWindow): LogEntry[] {
  const timed = entries.filter((e) => inTimeWindow(e, w));
  return w.tail !== undefined ? timed.slice(Math.max(0, timed.length - w.tail)) : timed;
}

export async function readLogs(dir: string, opts: LogWindow = {}): Promise<LogEntry[]> {
  const entries: LogEntry[] = [];
  for (const f of await logFiles(dir))
    entries.push(...parseLines(await fsp.readFile(f, 'utf8').catch(() => '')));
  return windowed(entries, opts);
}

/**
 * Print-as-you-go reader: calls `emit` for existing entries (after tail) and new ones until exit. It holds
 * the current file open, so a rotation (even several in a row, or the oldest file deleted) cannot take
 * lines away from under it: the old inode is drained through the descriptor before switching.
 */
export async function followLogs(
  dir: string,
  emit: (e: LogEntry) => void,
  opts: LogWindow & { isDone: () => Promise<boolean>; signal?: AbortSignal; pollMs?: number },
): Promise<void> {
  const out = (e: LogEntry) => {
    if (inTimeWindow(e, opts)) emit(e);
  };
  const file = path.join(dir, 'log.json');
  const open = async () => {
    const fh = await fsp.open(file, 'r').catch(() => undefined);
    return fh ? { fh, ino: (await fh.stat()).ino } : undefined;
  };
  let cur = await open();
  let offset = 0;
  let partial = '';
  // what is there already: the rotated files by name, the current one through the descriptor
  const existing: LogEntry[] = [];
  for (const f of await logFiles(dir))
    if (f !== file) existing.push(...parseLines(await fsp.readFile(f, 'utf8').catch(() => '')));
  const first: LogEntry[] = [];
  /** emit what the open file has beyond `offset`; true when there was something */
  const drain = async (sink: (e: LogEntry) => void = out): Promise<boolean> => {
    if (!cur) return false;
    const size = (await cur.fh.stat()).size;
    if (size <= offset) return false;
    const buf = Buffer.alloc(size - offset);
    const { bytesRead } = await cur.fh.read(buf, 0, buf.length, offset);
    offset += bytesRead;
    const text = partial + buf.subarray(0, bytesRead).toString('utf8');
    const cut = text.lastIndexOf('\n');
    partial = cut < 0 ? text : text.slice(cut + 1);
    for (const e of parseLines(cut < 0 ? '' : text.slice(0, cut))) sink(e);
    return bytesRead > 0;
  };
  try {
    await drain((e) => first.push(e));
    for (const e of windowed([...existing, ...first], opts)) emit(e);
    for (;;) {
      if (opts.signal?.aborted) return;
      const done = await opts.isDone();
      if (await drain()) continue;
      const named = await fsp.stat(file).catch(() => undefined);
      if (named && named.ino !== cur?.ino) {
        await drain(); // written to the old file just before it was rotated
        await cur?.fh.close();
        cur = await open();
        offset = 0;
        partial = '';
        continue;
      }
      if (done) return;
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 200));
    }
  } finally {
    await cur?.fh.close();
  }
}

export function hasExitFile(dir: string): boolean {
  return existsSync(path.join(dir, 'exit.json'));
}
