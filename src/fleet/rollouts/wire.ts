/**
 * Rollouts as the API shows them (src/fleet/api/schemas.ts `Rollout`, `RolloutDevice`): pure mapping from
 * the stored rows and counts. Each phase's state is derived from where the rollout stands.
 */
import type { RolloutDeviceWire, RolloutWire } from '../api/schemas.js';
import type { RolloutDeviceRow, RolloutRow, ScopeRef } from '../store/rollouts.js';
import { formatTargetRef } from '../view.js';
import type { RolloutView } from './service.js';

const iso = (ms: number) => new Date(ms).toISOString();
const isoOrNull = (ms: number | null) => (ms === null ? null : iso(ms));
const ref = (r: ScopeRef | null) => (r ? { ...r, text: formatTargetRef(r) } : null);

type PhaseState = RolloutWire['phases'][number]['state'];

/** A phase's state, from the rollout's state and current phase (1-based `index`). */
export function phaseState(r: Pick<RolloutRow, 'state' | 'phase' | 'soakSince'>, index: number): PhaseState {
  if (r.phase === 0) return 'queued';
  if (index < r.phase) return 'passed';
  if (index > r.phase)
    return r.state === 'waiting-approval' && index === r.phase + 1 ? 'waiting-approval' : 'queued';
  switch (r.state) {
    case 'running':
      return r.soakSince !== null ? 'soaking' : 'running';
    case 'paused':
      return 'running';
    case 'waiting-approval':
    case 'succeeded':
      return 'passed';
    case 'aborted':
      return 'failed';
    default:
      return 'stopped';
  }
}

export function toRolloutWire(v: RolloutView): RolloutWire {
  const { row: r, counts } = v;
  const sum = (k: 'converged' | 'failed' | 'pending' | 'superseded' | 'total') =>
    counts.reduce((a, c) => a + c[k], 0);
  const sel = r.selection;
  return {
    id: r.id,
    name: r.name,
    state: r.state,
    reason: r.reason,
    selection: {
      kind: sel.kind,
      ...(sel.group !== undefined ? { group: sel.group } : {}),
      ...(sel.selector !== undefined ? { selector: sel.selector } : {}),
      ...(sel.devices !== undefined ? { devices: sel.devices.length } : {}),
    },
    excluded: r.excluded,
    target: {
      apps: Object.keys((r.target.apps ?? {}) as Record<string, unknown>),
      images: r.target.images.map((i) => ({ name: i.name, digest: i.digest })),
      ...(r.target.agent ? { agent: r.target.agent.version } : {}),
    },
    policy: { ...r.policy },
    phase: r.phase,
    phases: r.phases.map((p, i) => {
      const c = counts[i] ?? { queued: 0, pending: 0, offline: 0, converged: 0, failed: 0, superseded: 0 };
      return {
        index: i + 1,
        spec: p.spec,
        size: p.size,
        state: phaseState(r, i + 1),
        startedAt: isoOrNull(p.startedAt),
        passedAt: isoOrNull(p.passedAt),
        queued: c.queued,
        pending: c.pending,
        offline: c.offline,
        converged: c.converged,
        failed: c.failed,
        superseded: c.superseded,
      };
    }),
    total: sum('total'),
    done: sum('converged') + sum('failed') + sum('superseded'),
    converged: sum('converged'),
    failed: sum('failed'),
    pending: sum('pending'),
    group: r.group !== null ? { id: r.group, deployment: ref(v.groupTarget) } : null,
    rollback: { state: r.rollback, moved: v.rollback.moved, returned: v.rollback.returned },
    settle: r.settle,
    supersededBy: r.supersededBy,
    createdAt: iso(r.createdAt),
    createdBy: r.createdBy,
    startedAt: isoOrNull(r.startedAt),
    finishedAt: isoOrNull(r.finishedAt),
    updatedAt: iso(r.updatedAt),
  };
}

export function toRolloutDeviceWire(x: RolloutDeviceRow): RolloutDeviceWire {
  return {
    deviceId: x.deviceId,
    phase: x.phase,
    canary: x.canary,
    outcome: x.outcome,
    online: x.online,
    detail: x.detail,
    target: ref(x.want),
    previous: ref(x.prev),
    publishedAt: isoOrNull(x.publishedAt),
    rollback: { state: x.rb, target: ref(x.rbTarget) },
  };
}
