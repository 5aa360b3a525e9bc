import test from 'ava';
import { checkSpace, planGc } from '../../src/core/disk.js';
import { restartDecision, restartDelay } from '../../src/core/restart.js';
import { evaluateRollout, planRollback } from '../../src/core/rollback.js';
import type { CurrentContainer } from '../../src/core/state.js';
import { parseTarget, specHash } from '../../src/core/target.js';

const T = parseTarget({
  version: 3,
  apps: {
    a: {
      services: {
        web: { image: 'web:3', healthcheck: { probe: { type: 'tcp', port: 80 } } },
        job: { image: 'job:1', restart: { policy: 'no' } },
      },
    },
  },
});
const PREV = parseTarget({ version: 2, apps: { a: { services: { web: { image: 'web:2' } } } } });

function c(service: 'web' | 'job', extra: Partial<CurrentContainer> = {}): CurrentContainer {
  const svc = T.apps.a!.services[service]!;
  return {
    id: `a_${service}`,
    app: 'a',
    service,
    specHash: specHash(svc),
    image: svc.image,
    status: 'running',
    health: service === 'web' ? 'healthy' : 'none',
    restarts: 0,
    startedAt: 0,
    ...extra,
  };
}

const rollout = { version: 3, convergedAt: 1000, windowMs: 10_000, baselineRestarts: { a_web: 1 } };

test('health window: pending while open, healthy after it when all services held up', (t) => {
  const ok = [c('web', { restarts: 1 }), c('job', { status: 'stopped', exitCode: 0 })];
  t.deepEqual(evaluateRollout(T, ok, rollout, 5000), {
    status: 'pending',
    until: 11_000,
    reason: 'health window open',
  });
  t.deepEqual(evaluateRollout(T, ok, rollout, 11_000), { status: 'healthy' });
  // stopped by hand in the window (local API, a command): the operator's doing, not the version failing
  const byHand = [c('web', { status: 'stopped', exitCode: 137, restarts: 1, stoppedByUser: true }), c('job')];
  t.deepEqual(evaluateRollout(T, byHand, rollout, 11_000), { status: 'healthy' });
});

test('health window: a crash, a restart, an unhealthy check or a missing container fails it', (t) => {
  const cases: Array<[CurrentContainer[], RegExp]> = [
    [[c('web', { status: 'stopped', exitCode: 139, restarts: 1 }), c('job')], /a\/web: exited with code 139/],
    [[c('web', { restarts: 2 }), c('job')], /a\/web: restarted 1 time/],
    [[c('web', { health: 'unhealthy', restarts: 1 }), c('job')], /a\/web: health check failed/],
    [[c('job')], /a\/web: container disappeared/],
    [[c('web', { restarts: 1 }), c('job', { status: 'stopped', exitCode: 2 })], /a\/job: exited with code 2/],
  ];
  for (const [containers, re] of cases) {
    const v = evaluateRollout(T, containers, rollout, 2000);
    t.is(v.status, 'failed');
    t.regex((v as { reason: string }).reason, re);
  }
  const starting = [c('web', { health: 'starting', restarts: 1 }), c('job')];
  t.is(evaluateRollout(T, starting, rollout, 2000).status, 'pending');
  t.like(evaluateRollout(T, starting, rollout, 20_000), {
    status: 'failed',
    reason: 'a/web is starting at the end of the health window',
  });
});

test('rollback goes to the previous target and says why; none without a previous one', (t) => {
  const d = planRollback(T, PREV, 'a/web: health check failed');
  t.is(d?.target, PREV);
  t.is(d?.rolledBackFrom, 3);
  t.regex(d!.reason, /target 3 failed its health window \(a\/web: health check failed\); rolled back to 2/);
  t.is(planRollback(T, undefined, 'x'), undefined);
  t.is(planRollback(T, T, 'x'), undefined);
});

test('space check: the whole target must fit with the reserve, else a NoSpace error naming sizes', (t) => {
  const needs = [
    { image: 'a', downloadBytes: 30 * 2 ** 20, unpackBytes: 60 * 2 ** 20 },
    { image: 'b', downloadBytes: 0, unpackBytes: 0 },
  ];
  t.true(checkSpace(needs, 200 * 2 ** 20, 10 * 2 ** 20).ok);
  const r = checkSpace(needs, 95 * 2 ** 20, 10 * 2 ** 20);
  t.false(r.ok);
  t.is(r.error?.code, 'NoSpace');
  t.regex(
    r.error!.message,
    /need 90\.0 MiB plus 10\.0 MiB reserve, 95\.0 MiB available \(a: 30\.0 MiB to fetch \+ 60\.0 MiB to unpack\)/,
  );
  t.true(checkSpace([], 0, 10).ok, 'nothing to fetch always fits');
});

test('gc plan: sweeps images, blobs and snapshots no kept image references', (t) => {
  const stored = [
    { image: 'web:1', blobs: ['m1', 'c1', 'l-base', 'l1'], snapshots: ['s-base', 's1'] },
    { image: 'web:2', blobs: ['m2', 'c2', 'l-base', 'l2'], snapshots: ['s-base', 's2'] },
    { image: 'web:3', blobs: ['m3', 'c3', 'l-base', 'l3'], snapshots: ['s-base', 's3'] },
  ];
  const blobs = ['m1', 'c1', 'l1', 'm2', 'c2', 'l2', 'm3', 'c3', 'l3', 'l-base', 'stray', 'leased'];
  const snaps = ['s-base', 's1', 's2', 's3', 's-stray'];
  const p = planGc(stored, blobs, snaps, new Set(['web:2', 'web:3']), new Set(['leased']));
  t.deepEqual(p, { images: ['web:1'], blobs: ['c1', 'l1', 'm1', 'stray'], snapshots: ['s-stray', 's1'] });
});

test('restart backoff doubles and is capped', (t) => {
  const b = { baseMs: 100, maxMs: 1000, resetAfterMs: 60_000 };
  t.deepEqual(
    [0, 1, 2, 3, 4, 50].map((n) => restartDelay(n, b)),
    [100, 200, 400, 800, 1000, 1000],
  );
  const crashed: CurrentContainer = {
    ...c('web'),
    status: 'stopped',
    exitCode: 1,
    restarts: 5,
    startedAt: 0,
    finishedAt: 120_000,
  };
  t.deepEqual(
    restartDecision({ policy: 'always', maxRetries: 0 }, crashed, 120_100, b),
    { action: 'start' },
    'a long run resets the count',
  );
  t.like(
    restartDecision(
      { policy: 'unless-stopped', maxRetries: 0 },
      { ...crashed, startedAt: 119_000 },
      120_100,
      b,
    ),
    {
      action: 'wait',
      until: 121_000,
    },
  );
});
