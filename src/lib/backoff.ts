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

/** Why a retry is pending: when it will run, how many tries failed before it, and the last failure. */
export interface RetryState {
  /** when the next try runs (clock ms) */
  at: number;
  /** consecutive tries that failed or waited (1 = the first retry) */
  attempt: number;
  /** the last failure, `Code: message` (absent while the retry is a wait, not an error) */
  lastError?: string | undefined;
}

/**
 * A retry policy (pure; the caller owns the timer): each failure schedules the next try after
 * `backoffDelay(failures)`, and a change that could cure the failure (`reset`) makes the next try a
 * first one again. Remembers the pending retry so an operator can see why and until when it waits.
 */
export class RetryPolicy {
  private failures = 0;
  private pending: RetryState | undefined;

  constructor(private readonly opts: BackoffOptions) {}

  /**
   * A try failed (or found only waits) at `now`: when to try again — after the backoff, or at `notAfter`
   * when that is sooner (a wait whose end is known).
   */
  fail(now: number, lastError?: string, notAfter?: number): RetryState {
    const at = now + backoffDelay(this.failures, this.opts);
    this.failures++;
    this.pending = {
      at: notAfter !== undefined ? Math.min(at, notAfter) : at,
      attempt: this.failures,
      ...(lastError ? { lastError } : {}),
    };
    return this.pending;
  }

  /** Something changed that may cure the failure: the next failure waits the initial delay again. */
  reset(): void {
    this.failures = 0;
  }

  /** A try made progress or succeeded: nothing pending, the next failure is a first one. */
  succeed(): void {
    this.failures = 0;
    this.pending = undefined;
  }

  /** The retry pending now, if any. */
  get state(): RetryState | undefined {
    return this.pending;
  }

  get attempts(): number {
    return this.failures;
  }
}
