import { invalidInput } from '../lib/errors.js';

/** A duration flag: `500ms`, `30s`, `5m`, `1h`, `7d` (a bare number is seconds) → milliseconds, > 0. */
export function parseDurationFlag(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(v.trim());
  if (!m) throw invalidInput(`${flag} ${v}: expected a duration like 30s, 5m, 1h, 7d`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 's']!;
  const n = Math.round(Number(m[1]) * unit);
  if (!(n > 0)) throw invalidInput(`${flag} ${v}: must be more than 0`);
  return n;
}
