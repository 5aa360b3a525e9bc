import type { Clock, TimerHandle } from '../../src/lib/clock.js';

/**
 * A clock that moves only when told (MQTT.js and aedes drive their timers the same way in their own
 * tests): `advance(ms)` runs, in time order, every timer falling due — including timers those timers
 * set. Real I/O (in-memory streams, the chunk writer's thread) still runs on the real event loop, so a
 * test alternates `advance` with real turns of the loop (`drive`).
 */
export class ManualClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  constructor(start = Date.UTC(2026, 0, 1)) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return { _timer: id };
  }

  clearTimeout(h: TimerHandle): void {
    this.timers.delete(h._timer as number);
  }

  get pending(): number {
    return this.timers.size;
  }

  advance(ms: number): void {
    const end = this.t + ms;
    for (let fired = 0; ; fired++) {
      if (fired > 100_000) throw new Error(`timers keep re-arming at ${this.t}: a busy loop on the clock`);
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
    }
    this.t = end;
  }
}

/**
 * Alternate `stepMs` of clock time with a real turn of the event loop until `done()` holds; throws after
 * `maxSteps` (so a stuck transfer fails the test instead of hanging it).
 */
export async function drive(
  clock: ManualClock,
  done: () => boolean,
  opts: { stepMs?: number; maxSteps?: number; what?: string } = {},
): Promise<void> {
  const step = opts.stepMs ?? 20;
  for (let i = 0; i < (opts.maxSteps ?? 20_000); i++) {
    if (done()) return;
    clock.advance(step);
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error(`gave up waiting for ${opts.what ?? 'condition'} after ${opts.maxSteps ?? 20_000} steps`);
}
