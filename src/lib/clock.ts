/**
 * Time, injectable (the MQTT.js way): production code takes a Clock, tests drive a manual one. Timers
 * made through the system clock are unref'd: a pending timeout never keeps a process alive on its own
 * (whatever must keep it alive says so explicitly, e.g. MqttConnection while a caller waits for it).
 */
export interface TimerHandle {
  readonly _timer: unknown;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(h: TimerHandle): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return { _timer: t };
  },
  clearTimeout: (h) => clearTimeout(h._timer as NodeJS.Timeout),
};

/** Resolve after `ms` on `clock` (never rejects; the timer is the clock's). */
export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms));
}
