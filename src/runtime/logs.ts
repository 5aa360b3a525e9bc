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

export async function readLogs(dir: string, opts: { tail?: number } = {}): Promise<LogEntry[]> {
  const entries: LogEntry[] = [];
  for (const f of await logFiles(dir))
    entries.push(...parseLines(await fsp.readFile(f, 'utf8').catch(() => '')));
  return opts.tail !== undefined ? entries.slice(Math.max(0, entries.length - opts.tail)) : entries;
}

/** Print-as-you-go reader: calls `emit` for existing entries (after tail) and new ones until exit. */
export async function followLogs(
  dir: string,
  emit: (e: LogEntry) => void,
  opts: { tail?: number; isDone: () => Promise<boolean>; signal?: AbortSignal; pollMs?: number },
): Promise<void> {
  for (const e of await readLogs(dir, { tail: opts.tail })) emit(e);
  const file = path.join(dir, 'log.json');
  let st = await fsp.stat(file).catch(() => undefined);
  let ino = st?.ino;
  let offset = st?.size ?? 0;
  let partial = '';
  for (;;) {
    if (opts.signal?.aborted) return;
    const done = await opts.isDone();
    st = await fsp.stat(file).catch(() => undefined);
    if (st && st.ino !== ino) {
      // rotated: the old file is now log.json.1 (same inode); drain what was written after our last read
      const rotated = path.join(dir, 'log.json.1');
      const old = await fsp.stat(rotated).catch(() => undefined);
      if (old && old.ino === ino && old.size > offset) {
        const rest = await readRange(rotated, offset, old.size);
        const text = partial + rest;
        for (const e of parseLines(text)) emit(e);
      }
      ino = st.ino;
      offset = 0;
      partial = '';
    }
    if (st && st.size > offset) {
      const text = partial + (await readRange(file, offset, st.size));
      offset = st.size;
      const cut = text.lastIndexOf('\n');
      partial = cut < 0 ? text : text.slice(cut + 1);
      for (const e of parseLines(cut < 0 ? '' : text.slice(0, cut))) emit(e);
      continue;
    }
    if (done) return;
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 200));
  }
}

async function readRange(file: string, from: number, to: number): Promise<string> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(to - from);
    const { bytesRead } = await fh.read(buf, 0, buf.length, from);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}

export function hasExitFile(dir: string): boolean {
  return existsSync(path.join(dir, 'exit.json'));
}
