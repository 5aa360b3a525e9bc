import { invalidInput } from '../lib/errors.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A point in time as docker's `--since/--until` take it: a duration before now ("10m", "1h30m", "45s"),
 * a unix timestamp in seconds ("1712345678", "1712345678.5") or a date ("2024-05-01",
 * "2024-05-01T12:00:00Z"). Returns ms since the epoch.
 */
export function parseTimeArg(s: string, flag: string, now: number = Date.now()): number {
  const v = s.trim();
  if (/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(v)) {
    let ms = 0;
    for (const m of v.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
    return now - ms;
  }
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const t = Date.parse(v);
  if (!Number.isNaN(t) && /^\d{4}-\d{2}-\d{2}/.test(v)) return t;
  throw invalidInput(
    `${flag} ${JSON.stringify(s)}: expected a duration (10m, 1h30m), a unix timestamp or a date (2024-05-01T12:00:00Z)`,
  );
}
