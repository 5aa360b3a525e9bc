import { type Logger, pino } from 'pino';

export type { Logger };

export type LogFormat = 'auto' | 'json' | 'pretty';

export interface LoggerOptions {
  level?: string;
  /** Where log lines go; defaults to stderr so command output on stdout stays clean. */
  destination?: NodeJS.WritableStream;
  name?: string;
  /**
   * json: one JSON object per line (pino's own); pretty: "12:04:05.120 INFO  message key=value";
   * auto (default): pretty when the destination is a terminal, else JSON (journald, files, pipes).
   */
  format?: LogFormat;
}

/** One logger per process, built by the composition root and handed down. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? process.env.BERTH_LOG_LEVEL ?? 'info';
  const format = opts.format ?? 'auto';
  const isTty = opts.destination
    ? (opts.destination as { isTTY?: boolean }).isTTY === true
    : process.stderr.isTTY === true;
  const pretty = format === 'pretty' || (format === 'auto' && isTty);
  const base = { level, name: opts.name ?? 'berth', base: { pid: process.pid } };
  if (pretty) {
    const out = opts.destination ?? process.stderr;
    const colors = isTty && !process.env.NO_COLOR;
    return pino(base, { write: (line: string) => void out.write(prettyLine(line, colors)) });
  }
  const dest = opts.destination ?? pino.destination({ fd: 2, sync: true });
  return pino(base, dest);
}

/** A logger that drops everything (tests and quiet commands). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

const LEVELS: Record<number, [string, string]> = {
  10: ['TRACE', '\x1b[90m'],
  20: ['DEBUG', '\x1b[36m'],
  30: ['INFO', '\x1b[32m'],
  40: ['WARN', '\x1b[33m'],
  50: ['ERROR', '\x1b[31m'],
  60: ['FATAL', '\x1b[35m'],
};
const OMIT = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name']);

function value(v: unknown): string {
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v;
  if (v && typeof v === 'object' && 'message' in v && typeof (v as Error).message === 'string')
    return JSON.stringify((v as Error).message);
  return JSON.stringify(v);
}

/**
 * One pino JSON line as a human reads it: local time, level, message, then the other fields as key=value.
 * A line that is not JSON passes through unchanged.
 */
export function prettyLine(json: string, colors = false): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const t = new Date(typeof o.time === 'number' ? o.time : Date.now());
  const hh = (n: number, w = 2) => String(n).padStart(w, '0');
  const time = `${hh(t.getHours())}:${hh(t.getMinutes())}:${hh(t.getSeconds())}.${hh(t.getMilliseconds(), 3)}`;
  const [label, color] = LEVELS[o.level as number] ?? [String(o.level).toUpperCase(), ''];
  const lvl =
    (colors && color ? `${color}${label}\x1b[0m` : label) + ' '.repeat(Math.max(0, 5 - label.length));
  const fields = Object.entries(o)
    .filter(([k]) => !OMIT.has(k))
    .map(([k, v]) => `${k}=${value(v)}`)
    .join(' ');
  const msg = typeof o.msg === 'string' ? o.msg : '';
  return `${time} ${lvl} ${msg}${fields ? `${msg ? ' ' : ''}${fields}` : ''}\n`;
}
