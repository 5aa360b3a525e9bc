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

/** A token bucket in bytes per second (0 = unlimited); `take` waits until the bytes may go. */
export class RateLimiter {
  private tokens: number;
  private last = Date.now();
  constructor(private readonly bytesPerSec: number) {
    this.tokens = bytesPerSec;
  }
  async take(n: number): Promise<void> {
    if (this.bytesPerSec <= 0) return;
    for (;;) {
      const now = Date.now();
      this.tokens = Math.min(this.bytesPerSec, this.tokens + ((now - this.last) / 1000) * this.bytesPerSec);
      this.last = now;
      if (this.tokens >= n || this.tokens >= this.bytesPerSec) {
        this.tokens -= n;
        return;
      }
      await new Promise((r) => setTimeout(r, Math.ceil(((n - this.tokens) / this.bytesPerSec) * 1000)));
    }
  }
}
