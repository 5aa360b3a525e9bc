/**
 * Restart policies, as docker's: `no`, `always`, `on-failure[:max]`, `unless-stopped`, with exponential
 * backoff between restarts (docker: 100 ms doubling; berth starts at `baseMs`, caps at `maxMs`). The agent
 * is the supervisor here — there is no dockerd — so the planner asks this pure function whether a stopped
 * container should be started again and when.
 */
import type { CurrentContainer } from './state.js';
import type { RestartPolicy } from './target.js';

export interface RestartBackoff {
  baseMs: number;
  maxMs: number;
  /** a container that ran at least this long before exiting starts its restart count over */
  resetAfterMs: number;
}

export const DEFAULT_RESTART_BACKOFF: RestartBackoff = {
  baseMs: 1000,
  maxMs: 5 * 60_000,
  resetAfterMs: 60_000,
};

export type RestartDecision =
  | { action: 'none'; reason: string }
  | { action: 'start' }
  | { action: 'wait'; until: number };

export function restartDelay(restarts: number, b: RestartBackoff): number {
  return Math.min(b.maxMs, b.baseMs * 2 ** Math.min(restarts, 30));
}

/** Restart count to carry into the next start: reset when the last run was long and stable. */
export function effectiveRestarts(
  c: Pick<CurrentContainer, 'restarts' | 'startedAt' | 'finishedAt'>,
  b: RestartBackoff,
) {
  if (c.startedAt !== undefined && c.finishedAt !== undefined && c.finishedAt - c.startedAt >= b.resetAfterMs)
    return 0;
  return c.restarts;
}

export function restartDecision(
  policy: RestartPolicy,
  c: CurrentContainer,
  now: number,
  b: RestartBackoff = DEFAULT_RESTART_BACKOFF,
): RestartDecision {
  if (c.status !== 'stopped') return { action: 'none', reason: `container is ${c.status}` };
  if (c.stoppedByUser) return { action: 'none', reason: 'stopped by the user' };
  switch (policy.policy) {
    case 'no':
      return { action: 'none', reason: 'restart policy "no"' };
    case 'on-failure':
      if (c.exitCode === 0) return { action: 'none', reason: 'exited successfully' };
      if (policy.maxRetries > 0 && c.restarts >= policy.maxRetries)
        return { action: 'none', reason: `gave up after ${c.restarts} restarts` };
      break;
    case 'always':
    case 'unless-stopped':
      break;
  }
  const restarts = effectiveRestarts(c, b);
  const due = (c.finishedAt ?? 0) + restartDelay(restarts, b);
  return now >= due ? { action: 'start' } : { action: 'wait', until: due };
}
