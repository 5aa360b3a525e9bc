import { type Logger, pino } from 'pino';

export type { Logger };

export interface LoggerOptions {
  level?: string;
  /** Where JSON lines go; defaults to stderr so command output on stdout stays clean. */
  destination?: NodeJS.WritableStream;
  name?: string;
}

/** One JSON logger per process, built by the composition root and handed down. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? process.env.BERTH_LOG_LEVEL ?? 'info';
  const dest = opts.destination ?? pino.destination({ fd: 2, sync: true });
  return pino({ level, name: opts.name ?? 'berth', base: { pid: process.pid } }, dest);
}

/** A logger that drops everything (tests and quiet commands). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
