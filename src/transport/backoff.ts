/**
 * Exponential backoff with jitter ("equal jitter"): attempt n waits between half and all of
 * min(max, initial * 2^n), so a fleet that lost its broker does not reconnect in lockstep.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  random?: () => number;
}

export function backoffDelay(attempt: number, opts: BackoffOptions): number {
  const cap = Math.min(opts.maxMs, opts.initialMs * 2 ** Math.min(attempt, 30));
  const r = (opts.random ?? Math.random)();
  return Math.round(cap / 2 + (cap / 2) * r);
}
