import { type Clock, sleep, systemClock } from '../lib/clock.js';

/** A counting semaphore: bounds how many chunk buffers are alive at once. */
export class Semaphore {
  private waiters: Array<() => void> = [];
  constructor(private free: number) {}
  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.free++;
  }
}

/**
 * A token bucket in bytes per second (0 = unlimited) holding at most 100 ms of tokens, so a fresh
 * limiter does not let a whole second's worth out in one burst; `take` waits until the bytes may go.
 */
export class RateLimiter {
  private tokens = 0;
  private last: number;
  private readonly capacity: number;
  constructor(
    private readonly bytesPerSec: number,
    private readonly clock: Clock = systemClock,
  ) {
    this.capacity = Math.max(64 * 1024, bytesPerSec / 10);
    this.tokens = this.capacity;
    this.last = clock.now();
  }
  async take(n: number): Promise<void> {
    if (this.bytesPerSec <= 0) return;
    for (;;) {
      const now = this.clock.now();
      this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) / 1000) * this.bytesPerSec);
      this.last = now;
      // A request larger than the bucket goes once the bucket is full (and drives it negative).
      if (this.tokens >= Math.min(n, this.capacity)) {
        this.tokens -= n;
        return;
      }
      const wait = ((Math.min(n, this.capacity) - this.tokens) / this.bytesPerSec) * 1000;
      await sleep(this.clock, Math.max(1, Math.ceil(wait)));
    }
  }
}
