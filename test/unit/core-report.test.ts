import test from 'ava';
import { buildReportedState, changedKeys, DEFAULT_THRESHOLDS, flatten } from '../../src/core/report.js';
import type { CurrentContainer } from '../../src/core/state.js';
import { parseTarget, specHash } from '../../src/core/target.js';

const T = parseTarget({
  version: 4,
  apps: { a: { services: { web: { image: 'web:2' }, db: { image: 'db:1' } } } },
});
const c = (service: 'web' | 'db', extra: Partial<CurrentContainer> = {}): CurrentContainer => ({
  id: `a_${service}`,
  app: 'a',
  service,
  specHash: specHash(T.apps.a!.services[service]!),
  image: T.apps.a!.services[service]!.image,
  status: 'running',
  health: 'healthy',
  restarts: 0,
  ...extra,
});

test('reported state: per app/service image, state, health, restarts, last error; rollout status', (t) => {
  const r = buildReportedState({
    target: { ...T, origin: { kind: 'group', id: 'g1', version: 7 } },
    targetStatus: 'converged',
    targetReason: 'rollback from group g1 8: a/web: exited with code 1',
    previous: { ...T, version: 3, origin: { kind: 'device', id: 'd1', version: 2 } },
    containers: [c('web', { restarts: 2 }), c('db', { status: 'stopped', exitCode: 1, health: 'none' })],
    lastErrors: new Map([['a_db', 'start a/db: boom']]),
    apps: [{ name: 'a', status: 'running' }],
  });
  t.deepEqual(r, {
    schema: 1,
    target: {
      applied: { kind: 'group', id: 'g1', version: 7 },
      status: 'converged',
      reason: 'rollback from group g1 8: a/web: exited with code 1',
      previous: { kind: 'device', id: 'd1', version: 2 },
    },
    apps: {
      a: {
        status: 'running',
        services: {
          db: {
            image: 'db:1',
            state: 'stopped',
            health: 'none',
            restarts: 0,
            containerId: 'a_db',
            exitCode: 1,
            lastError: 'start a/db: boom',
          },
          web: { image: 'web:2', state: 'running', health: 'healthy', restarts: 2, containerId: 'a_web' },
        },
      },
    },
  });
});

test('reported state: an old container still running shows the service as updating; missing ones as absent', (t) => {
  const old = c('web', { id: 'a_web_old', specHash: 'other', image: 'web:1' });
  const r = buildReportedState({ target: T, containers: [old], lastErrors: new Map(), apps: [] });
  t.like(r.apps.a!.services.web, { state: 'updating', image: 'web:1' });
  t.like(r.apps.a!.services.db, { state: 'absent', image: 'db:1' });
  t.is(r.apps.a!.status, 'applying');
  t.false('waiting' in r.target, 'no waiting key while nothing waits');
  t.deepEqual(r.target.applied, { kind: 'local', id: 'local', version: 4 }, 'a target from a file is local');
  t.is(r.target.previous, null);
  const held = buildReportedState({
    target: T,
    containers: [old],
    lastErrors: new Map(),
    apps: [],
    waiting: ['wait: update lock held by app a'],
  });
  t.deepEqual(held.target.waiting, ['wait: update lock held by app a'], 'why the update does not progress');
});

test('flatten and changedKeys: thresholds are absolute and relative, other changes always count', (t) => {
  const a = flatten({
    cpuPercent: 20,
    memory: { usedBytes: 100 * 2 ** 20 },
    temperatureC: 50,
    disk: { mount: '/' },
    c: { x: { memoryBytes: 10 } },
  });
  t.deepEqual(Object.keys(a).sort(), [
    'c.x.memoryBytes',
    'cpuPercent',
    'disk.mount',
    'memory.usedBytes',
    'temperatureC',
  ]);
  t.deepEqual(
    changedKeys(a, { ...a, cpuPercent: 25, temperatureC: 52 }, DEFAULT_THRESHOLDS),
    [],
    'small moves ignored',
  );
  t.deepEqual(changedKeys(a, { ...a, cpuPercent: 45 }), ['cpuPercent']);
  t.deepEqual(changedKeys(a, { ...a, 'memory.usedBytes': 300 * 2 ** 20 }), ['memory.usedBytes']);
  t.deepEqual(changedKeys(a, { ...a, 'disk.mount': '/data' }), ['disk.mount']);
  const { 'c.x.memoryBytes': _gone, ...without } = a;
  t.deepEqual(changedKeys(a, without), ['c.x.memoryBytes'], 'a container going away counts');
  t.deepEqual(changedKeys(undefined, { k: 1 }), ['k'], 'the first sample always counts');
  t.deepEqual(changedKeys({ n: 100 }, { n: 109 }, { relative: 0.1, absolute: {} }), []);
  t.deepEqual(changedKeys({ n: 100 }, { n: 111 }, { relative: 0.1, absolute: {} }), ['n']);
});
