/** The reconcile retry policy (src/lib/backoff.ts), driven by a manual clock; and how its state is shown. */
import test from 'ava';
import { describeAgentState } from '../../src/cli/agent-status.js';
import { buildReportedState } from '../../src/core/report.js';
import { RetryPolicy } from '../../src/lib/backoff.js';
import { ReportedStateSchema } from '../../src/transport/reports.js';
import { ManualClock } from '../helpers/manual-clock.js';

test('retry policy: doubles from 1 s, capped at 60 s, jittered between half and all; reset starts over', (t) => {
  const clock = new ManualClock();
  let r = 1;
  const policy = new RetryPolicy({ initialMs: 1000, maxMs: 60_000, random: () => r });
  const delays: number[] = [];
  for (let i = 0; i < 10; i++) {
    const s = policy.fail(clock.now(), 'Unavailable: fleet overloaded');
    delays.push(s.at - clock.now());
    t.is(s.attempt, i + 1);
    t.is(s.lastError, 'Unavailable: fleet overloaded');
    clock.advance(s.at - clock.now());
  }
  t.deepEqual(delays, [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000]);
  r = 0;
  t.is(policy.fail(clock.now()).at - clock.now(), 30_000, 'jitter: half the step at least');
  t.is(policy.state?.lastError, undefined, 'a wait has no error');

  policy.reset(); // the cause may be gone: the next failure is a first one again
  t.is(policy.state?.attempt, 11, 'the pending retry stays on view until the next try');
  r = 1;
  t.like(policy.fail(clock.now(), 'x'), { at: clock.now() + 1000, attempt: 1 });
  t.is(policy.fail(clock.now(), 'x', clock.now() + 300).at, clock.now() + 300, 'a wait ending sooner wins');
  policy.succeed();
  t.is(policy.state, undefined);
  t.is(policy.fail(clock.now()).at, clock.now() + 1000);
});

test('the next retry and its last error reach the reported state, pass the fleet’s schema, and read for a person', (t) => {
  const now = Date.UTC(2026, 0, 1);
  const retry = { at: now + 42_000, attempt: 9, lastError: 'Unavailable: fetch web:2: fleet overloaded' };
  const state = buildReportedState({
    target: undefined,
    targetStatus: 'applying',
    retry,
    containers: [],
    lastErrors: new Map(),
    apps: [],
  });
  t.deepEqual(state.target.retry, retry);
  const wire = ReportedStateSchema.safeParse(JSON.parse(JSON.stringify(state)));
  t.true(wire.success, wire.success ? '' : wire.error.message);
  t.like(wire.data?.target.retry, { attempt: 9 });
  t.false(
    ReportedStateSchema.safeParse({ ...state, target: { ...state.target, retry: { ...retry, x: 1 } } })
      .success,
    'strict: nothing but at, attempt, lastError',
  );
  const lines = describeAgentState(state, now);
  t.true(
    lines.includes(`retry:     in 42 s (attempt 9, at ${new Date(retry.at).toISOString()})`),
    lines.join('\n'),
  );
  t.true(lines.includes('lastError: Unavailable: fetch web:2: fleet overloaded'));
});
