/**
 * The rollout state machine: pure, in the style of the agent's planner (src/core/planner.ts). Input: the
 * rollout (state, current phase, policy, when the phase started, since when it soaks) with the per-phase
 * counts of its devices' outcomes, and the clock; output: decisions. The driver (./driver.ts) applies them —
 * records the transition, publishes — and plans again from fresh state, so the machine never sequences more
 * than one step; an empty plan means "nothing to do until a device reports or the operator acts".
 *
 * States:
 *   draft             created, nothing published (`start` runs it)
 *   running           the current phase's devices have the target; the machine watches them
 *   waiting-approval  the current phase passed; the next starts when an operator approves (policy.approval)
 *   paused            an operator paused it: nothing new is published, no phase starts (errors still abort)
 *   succeeded         the last phase passed
 *   aborted           by an error threshold, a phase that cannot pass, a phase timeout, or an operator —
 *                     with a reason; the devices it moved get their previous target back unless told not to
 *   superseded        a newer rollout took (some of) its devices
 *
 * A phase passes when at least `successThreshold` % of its devices are converged (healthy: past their health
 * window) — devices still pending (offline, applying, in their window) never count as converged, but up to
 * `maxPending` % of the phase may be left pending and out of the share — and it stays so for `soakMs`.
 * It needs at least one converged device, unless every device left it (superseded). The rollout aborts when
 * more than `errorThreshold` % of the devices of the phases so far failed (rolled back, refused the target),
 * when a phase can no longer pass (no device pending, too few converged), or when a phase does not pass within
 * `phaseTimeoutMs`. Percentages compare in integers (thousandths of a percent): exactly at a threshold passes.
 */
import { conflict } from '../../lib/errors.js';

export const ROLLOUT_STATES = [
  'draft',
  'running',
  'waiting-approval',
  'paused',
  'succeeded',
  'aborted',
  'superseded',
] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];

/** States in which a rollout holds its devices (a newer one for the same devices supersedes it). */
export const ACTIVE_STATES: readonly RolloutState[] = ['running', 'waiting-approval', 'paused'];
export const TERMINAL_STATES: readonly RolloutState[] = ['succeeded', 'aborted', 'superseded'];

export interface RolloutPolicy {
  /** % of a phase's devices converged and healthy before the next phase (0-100) */
  successThreshold: number;
  /** % of the devices of the phases so far that may fail; above it the rollout aborts (0-100) */
  errorThreshold: number;
  /** % of a phase's devices that may still be pending when it is judged (0-100) */
  maxPending: number;
  /** how long a phase must stay at its success threshold (ms) */
  soakMs: number;
  /** a phase that has not passed this long after it started aborts the rollout (ms; null: never) */
  phaseTimeoutMs: number | null;
  /** an operator approves each phase after the first */
  approval: boolean;
  /** an abort gives the moved devices their previous target again */
  rollback: boolean;
}

export const DEFAULT_POLICY: RolloutPolicy = {
  successThreshold: 100,
  errorThreshold: 0,
  maxPending: 0,
  soakMs: 0,
  phaseTimeoutMs: null,
  approval: false,
  rollback: true,
};

/** Where a rollout's devices stand, one phase. */
export interface PhaseCounts {
  /** devices assigned to the phase */
  total: number;
  /** not sent yet (the phase has not started, or is being published) */
  queued: number;
  /** sent, no answer yet: applying, waiting, in their health window, offline */
  pending: number;
  /** of pending: offline */
  offline: number;
  /** running the target, past its health window */
  converged: number;
  /** rolled back, refused it, gave it up */
  failed: number;
  /** another target applies to it now (an operator's override, a newer rollout, a revocation) */
  superseded: number;
}

export interface RolloutSnapshot {
  id: number;
  state: RolloutState;
  /** the current phase, 1-based (0 before start) */
  phase: number;
  phases: readonly PhaseCounts[];
  phaseStartedAt: number | null;
  soakSince: number | null;
  policy: RolloutPolicy;
  /**
   * the last phase is a group's target (a group rollout) and it is not published yet: it goes out when the
   * last phase starts even if no device is left for it — the earlier phases' devices fall back to it at
   * success, and devices that join the group later follow it
   */
  groupTargetDue?: boolean | undefined;
}

export type Decision =
  /** send the target to the phase's queued devices */
  | { kind: 'publish'; phase: number }
  /** the phase reached its success threshold now: it soaks from `since` */
  | { kind: 'soak'; since: number }
  /** it fell below the threshold again: the soak starts over once it is back */
  | { kind: 'soak-reset' }
  /** start phase `phase` */
  | { kind: 'advance'; phase: number }
  /** the current phase passed; `phase` waits for an operator */
  | { kind: 'await-approval'; phase: number }
  | { kind: 'succeed' }
  | { kind: 'abort'; reason: string }
  /** plan again at `at` (soak end, phase timeout) even if nothing reports */
  | { kind: 'wake'; at: number };

const milli = (pct: number) => Math.round(pct * 1000);

/** a/b as a percentage for messages: "6.7 %" */
export function pct(a: number, b: number): string {
  if (b === 0) return '0 %';
  const v = (a * 100) / b;
  return `${Number.isInteger(v) ? v : v.toFixed(1)} %`;
}

/** A phase with no devices counted yet. */
export function noCounts(): PhaseCounts {
  return { total: 0, queued: 0, pending: 0, offline: 0, converged: 0, failed: 0, superseded: 0 };
}

function sum(phases: readonly PhaseCounts[], upTo: number): PhaseCounts {
  const s = noCounts();
  for (const p of phases.slice(0, upTo)) {
    s.total += p.total;
    s.queued += p.queued;
    s.pending += p.pending;
    s.offline += p.offline;
    s.converged += p.converged;
    s.failed += p.failed;
    s.superseded += p.superseded;
  }
  return s;
}

/** Whether the failures of the phases 1..upTo cross the error threshold; the reason if they do. */
export function errorsCrossed(
  phases: readonly PhaseCounts[],
  upTo: number,
  policy: RolloutPolicy,
): string | undefined {
  const s = sum(phases, upTo);
  const counted = s.total - s.superseded;
  if (counted <= 0 || s.failed === 0) return undefined;
  if (s.failed * 100_000 <= milli(policy.errorThreshold) * counted) return undefined;
  const range = upTo === 1 ? 'phase 1' : `phases 1-${upTo}`;
  return `error threshold crossed: ${s.failed} of ${counted} devices (${pct(s.failed, counted)}) in ${range} failed or rolled back; the limit is ${policy.errorThreshold} %`;
}

export interface PhaseVerdict {
  passes: boolean;
  /** devices whose outcome counts (superseded left out) */
  counted: number;
  /** the denominator of the success share (pending devices within maxPending left out) */
  eligible: number;
  excused: number;
}

/** Whether one phase is at its success threshold now. */
export function judgePhase(p: PhaseCounts, policy: RolloutPolicy): PhaseVerdict {
  const counted = p.total - p.superseded;
  if (counted <= 0) return { passes: true, counted: 0, eligible: 0, excused: 0 };
  const excused = Math.min(p.pending, Math.floor((milli(policy.maxPending) * counted) / 100_000));
  const eligible = counted - excused;
  const passes =
    p.queued === 0 && p.converged >= 1 && p.converged * 100_000 >= milli(policy.successThreshold) * eligible;
  return { passes, counted, eligible, excused };
}

function describe(n: number, p: PhaseCounts): string {
  const parts = [`${p.converged} of ${p.total - p.superseded} converged`];
  if (p.failed) parts.push(`${p.failed} failed`);
  if (p.pending) parts.push(`${p.pending} pending${p.offline ? ` (${p.offline} offline)` : ''}`);
  return `phase ${n}: ${parts.join(', ')}`;
}

/** The decisions for a rollout now (see the file comment). */
export function planRollout(r: RolloutSnapshot, now: number): Decision[] {
  const { policy, phases } = r;
  const n = phases.length;
  const k = r.phase;
  switch (r.state) {
    case 'draft':
    case 'succeeded':
    case 'aborted':
    case 'superseded':
      return [];
    case 'paused':
    case 'waiting-approval': {
      // nothing moves forward, but failures of devices already moved still stop it
      const crossed = errorsCrossed(phases, k, policy);
      return crossed ? [{ kind: 'abort', reason: crossed }] : [];
    }
    case 'running':
      break;
  }
  if (k < 1 || k > n) return [{ kind: 'abort', reason: `rollout ${r.id} has no phase ${k}` }];
  const crossed = errorsCrossed(phases, k, policy);
  if (crossed) return [{ kind: 'abort', reason: crossed }];
  const cur = phases[k - 1]!;
  if (cur.queued > 0 || (k === n && r.groupTargetDue === true)) return [{ kind: 'publish', phase: k }];

  const out: Decision[] = [];
  const v = judgePhase(cur, policy);
  if (v.passes) {
    if (policy.soakMs > 0 && v.counted > 0) {
      if (r.soakSince === null)
        return [
          { kind: 'soak', since: now },
          { kind: 'wake', at: now + policy.soakMs },
        ];
      if (now < r.soakSince + policy.soakMs) return [{ kind: 'wake', at: r.soakSince + policy.soakMs }];
    }
    if (k === n) return [{ kind: 'succeed' }];
    // an empty phase needs no approval: there is nothing to look at before it
    const next = phases[k]!;
    if (policy.approval && next.total > 0) return [{ kind: 'await-approval', phase: k + 1 }];
    return [{ kind: 'advance', phase: k + 1 }];
  }
  if (r.soakSince !== null) out.push({ kind: 'soak-reset' });
  if (cur.pending === 0)
    return [
      ...out,
      {
        kind: 'abort',
        reason: `phase ${k} cannot reach its success threshold of ${policy.successThreshold} %: ${describe(k, cur).slice(`phase ${k}: `.length)} (${pct(cur.converged, v.eligible)})`,
      },
    ];
  if (policy.phaseTimeoutMs !== null && r.phaseStartedAt !== null) {
    const end = r.phaseStartedAt + policy.phaseTimeoutMs;
    if (now >= end)
      return [
        ...out,
        {
          kind: 'abort',
          reason: `phase ${k} did not pass within ${formatMs(policy.phaseTimeoutMs)}: ${describe(k, cur).slice(`phase ${k}: `.length)}`,
        },
      ];
    out.push({ kind: 'wake', at: end });
  }
  return out;
}

export type OperatorAction = 'start' | 'pause' | 'resume' | 'approve' | 'abort';

/**
 * What an operator's action makes of a rollout in `state` — or a Conflict naming why it cannot be done
 * (nothing is changed, nothing published). `resume` of a rollout paused while it waited for approval
 * goes back to running: the passed phase is judged again and asks for approval again.
 */
export function operatorTransition(
  id: number,
  state: RolloutState,
  action: OperatorAction,
  reason?: string | null,
): RolloutState {
  const name = `rollout ${id}`;
  const ended = () =>
    conflict(
      `${name} ${state === 'aborted' ? `was aborted${reason ? ` (${reason})` : ''}` : state === 'superseded' ? `was superseded${reason ? ` (${reason})` : ''}` : 'succeeded'}: it is over and cannot be ${action === 'resume' ? 'resumed' : action === 'approve' ? 'approved' : action === 'start' ? 'started' : action === 'pause' ? 'paused' : 'aborted'}; create a new rollout`,
    );
  if ((TERMINAL_STATES as readonly string[]).includes(state)) throw ended();
  switch (action) {
    case 'start':
      if (state !== 'draft') throw conflict(`${name} is ${state}; only a draft can be started`);
      return 'running';
    case 'pause':
      if (state === 'paused') throw conflict(`${name} is already paused`);
      if (state === 'draft')
        throw conflict(`${name} is a draft: nothing runs to pause (start it, or abort it)`);
      return 'paused';
    case 'resume':
      if (state === 'draft') throw conflict(`${name} is a draft: start it instead of resuming`);
      if (state !== 'paused') throw conflict(`${name} is ${state}, not paused`);
      return 'running';
    case 'approve':
      if (state !== 'waiting-approval') throw conflict(`${name} is ${state}, not waiting for approval`);
      return 'running';
    case 'abort':
      return 'aborted';
  }
}

export function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
