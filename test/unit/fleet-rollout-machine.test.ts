/**
 * The rollout state machine, pure (src/fleet/rollouts/machine.ts), on a fake clock: every transition, the
 * thresholds exactly at and just past their edges, offline devices, and "restart in each state" — the
 * machine keeps nothing between calls, so a restarted server that reads the same stored snapshot must
 * decide the same thing (asserted by planning twice from a copy of the snapshot).
 */
import test from 'ava';
import {
  DEFAULT_POLICY,
  type Decision,
  errorsCrossed,
  judgePhase,
  operatorTransition,
  type PhaseCounts,
  planRollout,
  ROLLOUT_STATES,
  type RolloutPolicy,
  type RolloutSnapshot,
  type RolloutState,
} from '../../src/fleet/rollouts/machine.js';

const T0 = 1_000_000;

function ph(p: Partial<PhaseCounts> & { total: number }): PhaseCounts {
  return { queued: 0, pending: 0, offline: 0, converged: 0, failed: 0, superseded: 0, ...p };
}

function snap(
  phases: PhaseCounts[],
  o: Partial<Omit<RolloutSnapshot, 'phases' | 'policy'>> & { policy?: Partial<RolloutPolicy> } = {},
): RolloutSnapshot {
  const { policy, ...rest } = o;
  return {
    id: 7,
    state: 'running',
    phase: 1,
    phaseStartedAt: T0,
    soakSince: null,
    ...rest,
    phases,
    policy: { ...DEFAULT_POLICY, ...policy },
  };
}

/** Plan, and plan again from a copy (a restarted server reading the same rows): same decisions. */
function plan(s: RolloutSnapshot, now: number): Decision[] {
  const first = planRollout(s, now);
  const again = planRollout(structuredClone(s), now);
  if (JSON.stringify(first) !== JSON.stringify(again))
    throw new Error('the machine is not a function of its input');
  return first;
}

test('draft and finished rollouts: nothing to do', (t) => {
  for (const state of ['draft', 'succeeded', 'aborted', 'superseded'] as const)
    t.deepEqual(plan(snap([ph({ total: 3, failed: 3 })], { state }), T0), [], state);
});

test('the last phase of a group rollout publishes the group target, even with no device left for it', (t) => {
  // 3 devices, phases 3,100%: phase 2 is empty; the group target must still go out before success
  const phases = [ph({ total: 3, converged: 3 }), ph({ total: 0 })];
  t.deepEqual(plan(snap(phases, { phase: 2, groupTargetDue: true }), T0), [{ kind: 'publish', phase: 2 }]);
  t.deepEqual(plan(snap(phases, { phase: 2, groupTargetDue: false }), T0), [{ kind: 'succeed' }]);
  // a deploy to a group with no device yet: one empty phase, the group target, then success
  t.deepEqual(plan(snap([ph({ total: 0 })], { groupTargetDue: true }), T0), [{ kind: 'publish', phase: 1 }]);
  t.deepEqual(plan(snap([ph({ total: 0 })]), T0), [{ kind: 'succeed' }]);
  // not before the last phase: earlier phases move devices with overrides
  t.deepEqual(
    plan(snap([ph({ total: 1, pending: 1 }), ph({ total: 2, queued: 2 })], { groupTargetDue: true }), T0),
    [],
  );
});

test('running with queued devices in the current phase: publish them', (t) => {
  t.deepEqual(plan(snap([ph({ total: 2, queued: 2 }), ph({ total: 8, queued: 8 })]), T0), [
    { kind: 'publish', phase: 1 },
  ]);
  // part of the phase already went out (a crash mid-batch): the rest is still published
  t.deepEqual(plan(snap([ph({ total: 4, queued: 1, pending: 3 }), ph({ total: 8, queued: 8 })]), T0), [
    { kind: 'publish', phase: 1 },
  ]);
});

test('a phase whose devices are still pending waits (no decision, no timer without a timeout)', (t) => {
  t.deepEqual(
    plan(snap([ph({ total: 2, pending: 1, converged: 1 }), ph({ total: 8, queued: 8 })]), T0 + 5),
    [],
  );
});

test('a phase that passes advances; the last one succeeds', (t) => {
  t.deepEqual(plan(snap([ph({ total: 2, converged: 2 }), ph({ total: 8, queued: 8 })]), T0), [
    { kind: 'advance', phase: 2 },
  ]);
  t.deepEqual(
    plan(snap([ph({ total: 2, converged: 2 }), ph({ total: 8, converged: 8 })], { phase: 2 }), T0),
    [{ kind: 'succeed' }],
  );
});

test('success threshold exactly at the edge passes, one device short does not', (t) => {
  const policy = { successThreshold: 90, errorThreshold: 100 };
  // 9 of 10 = 90 % → passes
  t.deepEqual(
    plan(snap([ph({ total: 10, converged: 9, pending: 1 }), ph({ total: 1, queued: 1 })], { policy }), T0),
    [{ kind: 'advance', phase: 2 }],
  );
  // 8 of 10 with 2 pending: waits
  t.deepEqual(
    plan(snap([ph({ total: 10, converged: 8, pending: 2 }), ph({ total: 1, queued: 1 })], { policy }), T0),
    [],
  );
  // 8 of 10 with nothing pending left: cannot pass any more → abort naming the phase and the share
  const d = plan(
    snap([ph({ total: 10, converged: 8, failed: 2 }), ph({ total: 1, queued: 1 })], { policy }),
    T0,
  );
  t.is(d.length, 1);
  t.is(d[0]!.kind, 'abort');
  t.regex(
    (d[0] as { reason: string }).reason,
    /phase 1 cannot reach its success threshold of 90 %.*8 of 10 converged, 2 failed \(80 %\)/,
  );
});

test('fractional thresholds compare in integers (no float drift at the edge)', (t) => {
  // 2 of 3 = 66.666…%; a threshold of 66.666 passes, 66.667 does not
  t.true(
    judgePhase(ph({ total: 3, converged: 2, failed: 1 }), { ...DEFAULT_POLICY, successThreshold: 66.666 })
      .passes,
  );
  t.false(
    judgePhase(ph({ total: 3, converged: 2, failed: 1 }), { ...DEFAULT_POLICY, successThreshold: 66.667 })
      .passes,
  );
});

test('error threshold over the phases so far: exactly at it goes on, one more failure aborts', (t) => {
  const policy = { successThreshold: 50, errorThreshold: 10 };
  // phases 1-2: 2 of 20 failed = 10 % → not crossed
  const at = [
    ph({ total: 5, converged: 5 }),
    ph({ total: 15, converged: 12, failed: 2, pending: 1 }),
    ph({ total: 80, queued: 80 }),
  ];
  t.is(errorsCrossed(at, 2, { ...DEFAULT_POLICY, ...policy }), undefined);
  t.deepEqual(plan(snap(at, { phase: 2, policy }), T0), [{ kind: 'advance', phase: 3 }]);
  // 3 of 20 = 15 % → abort in phase 2, before phase 3 gets anything
  const over = [
    ph({ total: 5, converged: 5 }),
    ph({ total: 15, converged: 11, failed: 3, pending: 1 }),
    ph({ total: 80, queued: 80 }),
  ];
  const d = plan(snap(over, { phase: 2, policy }), T0);
  t.is(d.length, 1);
  t.is(d[0]!.kind, 'abort');
  t.regex(
    (d[0] as { reason: string }).reason,
    /error threshold crossed: 3 of 20 devices \(15 %\) in phases 1-2 failed or rolled back; the limit is 10 %/,
  );
  // later phases' queued devices do not dilute the share: phase 3's 80 devices are not counted
  t.truthy(errorsCrossed(over, 2, { ...DEFAULT_POLICY, ...policy }));
  t.is(errorsCrossed(over, 1, { ...DEFAULT_POLICY, ...policy }), undefined);
});

test('error threshold 0: one failure aborts; errors checked before publishing the rest', (t) => {
  const d = plan(
    snap([ph({ total: 10, queued: 5, pending: 4, failed: 1 }), ph({ total: 10, queued: 10 })]),
    T0,
  );
  t.is(d[0]!.kind, 'abort');
  t.is(d.length, 1);
});

test('superseded devices leave the counts: a phase of only superseded devices passes', (t) => {
  t.deepEqual(plan(snap([ph({ total: 2, superseded: 2 }), ph({ total: 3, queued: 3 })]), T0), [
    { kind: 'advance', phase: 2 },
  ]);
  // 1 converged + 1 superseded of 2 at 100 %: passes (the superseded one is out of the share)
  t.true(judgePhase(ph({ total: 2, converged: 1, superseded: 1 }), DEFAULT_POLICY).passes);
});

test('offline devices stay pending and never count as success; maxPending lets a share stay pending', (t) => {
  const p = ph({ total: 10, converged: 8, pending: 2, offline: 2 });
  // default: every device must converge → waits for the offline ones
  t.deepEqual(plan(snap([p, ph({ total: 1, queued: 1 })]), T0), []);
  // maxPending 20 %: two of ten may stay pending, then 8 of 8 eligible converged → advances
  t.deepEqual(plan(snap([p, ph({ total: 1, queued: 1 })], { policy: { maxPending: 20 } }), T0), [
    { kind: 'advance', phase: 2 },
  ]);
  // maxPending 19 %: only one excused (⌊1.9⌋) → 8 of 9 < 100 % → waits
  t.deepEqual(plan(snap([p, ph({ total: 1, queued: 1 })], { policy: { maxPending: 19 } }), T0), []);
  // a phase of only offline devices never passes, even with every one excused: it needs one converged
  t.false(
    judgePhase(ph({ total: 3, pending: 3, offline: 3 }), { ...DEFAULT_POLICY, maxPending: 100 }).passes,
  );
});

test('soak: passing starts the soak with a wake-up; before its end nothing; at its end it advances', (t) => {
  const policy = { soakMs: 60_000 };
  const phases = [ph({ total: 2, converged: 2 }), ph({ total: 8, queued: 8 })];
  t.deepEqual(plan(snap(phases, { policy }), T0 + 10), [
    { kind: 'soak', since: T0 + 10 },
    { kind: 'wake', at: T0 + 60_010 },
  ]);
  t.deepEqual(plan(snap(phases, { policy, soakSince: T0 + 10 }), T0 + 60_009), [
    { kind: 'wake', at: T0 + 60_010 },
  ]);
  t.deepEqual(plan(snap(phases, { policy, soakSince: T0 + 10 }), T0 + 60_010), [
    { kind: 'advance', phase: 2 },
  ]);
});

test('soak: falling below the threshold resets the soak', (t) => {
  const policy = { soakMs: 60_000 };
  const phases = [ph({ total: 2, converged: 1, pending: 1 }), ph({ total: 8, queued: 8 })];
  t.deepEqual(plan(snap(phases, { policy, soakSince: T0 }), T0 + 30_000), [{ kind: 'soak-reset' }]);
});

test('phase timeout: a wake at its end; at it, abort naming the phase', (t) => {
  const policy = { phaseTimeoutMs: 600_000 };
  const phases = [ph({ total: 4, converged: 2, pending: 2, offline: 1 }), ph({ total: 8, queued: 8 })];
  t.deepEqual(plan(snap(phases, { policy }), T0 + 1), [{ kind: 'wake', at: T0 + 600_000 }]);
  const d = plan(snap(phases, { policy }), T0 + 600_000);
  t.is(d.length, 1);
  t.is(d[0]!.kind, 'abort');
  t.regex(
    (d[0] as { reason: string }).reason,
    /phase 1 did not pass within 10m: 2 of 4 converged, 2 pending \(1 offline\)/,
  );
});

test('approval: a passed phase waits for an operator before the next; an empty next phase needs none', (t) => {
  const policy = { approval: true };
  t.deepEqual(plan(snap([ph({ total: 1, converged: 1 }), ph({ total: 9, queued: 9 })], { policy }), T0), [
    { kind: 'await-approval', phase: 2 },
  ]);
  t.deepEqual(
    plan(
      snap([ph({ total: 1, converged: 1 }), ph({ total: 0 }), ph({ total: 9, queued: 9 })], { policy }),
      T0,
    ),
    [{ kind: 'advance', phase: 2 }],
  );
  // the last phase: success, no approval asked
  t.deepEqual(
    plan(snap([ph({ total: 1, converged: 1 }), ph({ total: 9, converged: 9 })], { policy, phase: 2 }), T0),
    [{ kind: 'succeed' }],
  );
});

test('waiting-approval and paused: nothing moves forward, but failures of moved devices still abort', (t) => {
  for (const state of ['waiting-approval', 'paused'] as const) {
    t.deepEqual(
      plan(snap([ph({ total: 2, converged: 2 }), ph({ total: 8, queued: 8 })], { state }), T0),
      [],
      state,
    );
    t.deepEqual(
      plan(snap([ph({ total: 2, queued: 1, pending: 1 }), ph({ total: 8, queued: 8 })], { state }), T0),
      [],
      state,
    );
    const d = plan(
      snap([ph({ total: 2, converged: 1, failed: 1 }), ph({ total: 8, queued: 8 })], { state }),
      T0,
    );
    t.is(d[0]?.kind, 'abort', state);
  }
});

test('a phase number outside the rollout aborts (corrupt row), never publishes', (t) => {
  const d = plan(snap([ph({ total: 1, queued: 1 })], { phase: 2 }), T0);
  t.is(d[0]!.kind, 'abort');
});

test('restart in each state: a copy of the stored snapshot decides the same (plan() checks it)', (t) => {
  const phases = [ph({ total: 2, converged: 1, pending: 1 }), ph({ total: 8, queued: 8 })];
  for (const state of ROLLOUT_STATES) {
    const s = snap(phases, {
      state,
      soakSince: state === 'running' ? T0 : null,
      policy: { soakMs: 1000, phaseTimeoutMs: 5000 },
    });
    t.notThrows(() => plan(s, T0 + 2000), state);
  }
});

test('operator transitions: allowed ones, and clear Conflicts for the others', (t) => {
  const ok: Array<[RolloutState, Parameters<typeof operatorTransition>[2], RolloutState]> = [
    ['draft', 'start', 'running'],
    ['draft', 'abort', 'aborted'],
    ['running', 'pause', 'paused'],
    ['waiting-approval', 'pause', 'paused'],
    ['paused', 'resume', 'running'],
    ['waiting-approval', 'approve', 'running'],
    ['running', 'abort', 'aborted'],
    ['paused', 'abort', 'aborted'],
    ['waiting-approval', 'abort', 'aborted'],
  ];
  for (const [from, action, to] of ok) t.is(operatorTransition(1, from, action), to, `${from} ${action}`);
  const bad: Array<[RolloutState, Parameters<typeof operatorTransition>[2], RegExp]> = [
    ['running', 'approve', /rollout 1 is running, not waiting for approval/],
    ['paused', 'approve', /is paused, not waiting for approval/],
    ['aborted', 'resume', /rollout 1 was aborted \(too many errors\): it is over and cannot be resumed/],
    ['succeeded', 'abort', /succeeded: it is over and cannot be aborted/],
    ['superseded', 'pause', /was superseded/],
    ['running', 'start', /only a draft can be started/],
    ['paused', 'pause', /already paused/],
    ['draft', 'pause', /is a draft/],
    ['draft', 'resume', /start it instead/],
    ['running', 'resume', /is running, not paused/],
  ];
  for (const [from, action, re] of bad) {
    const e = t.throws(
      () => operatorTransition(1, from, action, 'too many errors'),
      undefined,
      `${from} ${action}`,
    );
    t.regex(e!.message, re);
    t.is((e as { code?: string }).code, 'Conflict');
  }
});
