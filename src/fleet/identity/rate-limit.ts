/**
 * Failure counting for logins (and enrollment exchanges): a key (user name, remote address) that failed
 * `max` times within `windowMs` is refused until the oldest of those failures leaves the window. Pure,
 * clocked by the caller; the number of keys is capped (oldest dropped first) so a flood of made-up names
 * cannot grow memory without bound.
 */
export interface LimiterOptions {
  max: number;
  windowMs: number;
  maxKeys?: number;
}

export class FailureLimiter {
  private readonly failures = new Map<string, number[]>();
  private readonly maxKeys: number;

  constructor(
    private readonly opts: LimiterOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.maxKeys = opts.maxKeys ?? 10_000;
  }

  /** 0 when `key` may try now, else how many ms until it may. */
  retryAfter(key: string): number {
    const list = this.prune(key);
    if (list.length < this.opts.max) return 0;
    return Math.max(1, list[list.length - this.opts.max]! + this.opts.windowMs - this.now());
  }

  fail(key: string): void {
    const list = this.prune(key);
    list.push(this.now());
    if (list.length > this.opts.max) list.splice(0, list.length - this.opts.max);
    this.failures.delete(key);
    this.failures.set(key, list); // re-insert: the Map's order is least recently failed first
    while (this.failures.size > this.maxKeys) {
      const oldest = this.failures.keys().next().value as string;
      this.failures.delete(oldest);
    }
  }

  reset(key: string): void {
    this.failures.delete(key);
  }

  private prune(key: string): number[] {
    const list = this.failures.get(key) ?? [];
    const since = this.now() - this.opts.windowMs;
    while (list.length > 0 && list[0]! <= since) list.shift();
    if (list.length === 0) this.failures.delete(key);
    return list;
  }
}
