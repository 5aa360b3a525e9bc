/**
 * Health-gated rollout. When the device has converged to a new target, the target is on probation for a
 * health window. Within the window every service must keep running (no crash, no restart) and report
 * healthy (or simply keep running when it has no health check). If it fails, the device goes back to the
 * previous target — whose images and snapshots were kept for exactly this — and the reason is reported.
 * A pure evaluation; the reconciler owns the clock and the SQLite records.
 */
import { restartDecision } from './restart.js';
import type { CurrentContainer } from './state.js';
import { specHash, type Target } from './target.js';

export interface Rollout {
  version: number;
  /** when the device first converged to this target (epoch ms) */
  convergedAt: number;
  windowMs: number;
  /** restart counts per container id when the window opened: any increase is a crash */
  baselineRestarts: Record<string, number>;
}

export type RolloutVerdict =
  | { status: 'pending'; until: number; reason: string }
  | { status: 'healthy' }
  | { status: 'failed'; reason: string };

export function evaluateRollout(
  target: Target,
  containers: readonly CurrentContainer[],
  rollout: Rollout,
  now: number,
): RolloutVerdict {
  const end = rollout.convergedAt + rollout.windowMs;
  let waitingFor: string | undefined;
  for (const [appName, app] of Object.entries(target.apps)) {
    for (const [svcName, svc] of Object.entries(app.services)) {
      const name = `${appName}/${svcName}`;
      const h = specHash(svc);
      const c = containers.find((x) => x.app === appName && x.service === svcName && x.specHash === h);
      if (!c) return { status: 'failed', reason: `${name}: container disappeared during the health window` };
      const base = rollout.baselineRestarts[c.id] ?? 0;
      if (c.restarts > base)
        return {
          status: 'failed',
          reason: `${name}: restarted ${c.restarts - base} time(s) during the health window`,
        };
      // stopped on purpose (local API, a command): the operator's doing, not the version failing
      if (c.status === 'stopped' && c.stoppedByUser) continue;
      if (c.status === 'stopped') {
        // A one-shot service that finished cleanly and is not meant to come back is fine.
        const oneShot =
          c.exitCode === 0 && restartDecision(svc.restart, c, Number.MAX_SAFE_INTEGER).action === 'none';
        if (!oneShot)
          return {
            status: 'failed',
            reason: `${name}: exited${c.exitCode === undefined ? '' : ` with code ${c.exitCode}`} during the health window`,
          };
        continue;
      }
      if (c.health === 'unhealthy') return { status: 'failed', reason: `${name}: health check failed` };
      if (c.health === 'starting' || c.status === 'created')
        waitingFor ??= `${name} is ${c.health === 'starting' ? 'starting' : 'not started'}`;
    }
  }
  if (now < end) return { status: 'pending', until: end, reason: waitingFor ?? 'health window open' };
  if (waitingFor) return { status: 'failed', reason: `${waitingFor} at the end of the health window` };
  return { status: 'healthy' };
}

export interface RollbackDecision {
  /** the target to converge to now */
  target: Target;
  /** for the report and the event */
  reason: string;
  rolledBackFrom: number;
}

/** The failed target goes; the previous one comes back. Without a previous target there is nothing to go to. */
export function planRollback(
  failed: Target,
  previous: Target | undefined,
  reason: string,
): RollbackDecision | undefined {
  if (!previous || previous.version === failed.version) return undefined;
  return {
    target: previous,
    reason: `target ${failed.version} failed its health window (${reason}); rolled back to ${previous.version}`,
    rolledBackFrom: failed.version,
  };
}
