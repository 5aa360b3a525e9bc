/** The fleet's view of a device (pure): status from what it reported, the scope that applies, deploy progress. */
import test from 'ava';
import {
  type DeviceSnapshot,
  deviceProgress,
  deviceStatus,
  effectiveTarget,
  formatTargetRef,
  type ScopeVersion,
  summarizeProgress,
} from '../../src/fleet/view.js';
import type { WireReportedState } from '../../src/transport/reports.js';

const st = (status: string | null, o: Partial<WireReportedState['target']> = {}): WireReportedState => ({
  schema: 1,
  target: { applied: { kind: 'group', id: 'g1', version: 7 }, status, previous: null, ...o },
  apps: {},
});

test('versions read as the operator deployed them', (t) => {
  t.is(formatTargetRef({ kind: 'device', id: 'd1', version: 3 }), 'device 3');
  t.is(formatTargetRef({ kind: 'group', id: 'g1', version: 7 }), 'group g1 7');
  t.is(formatTargetRef(null), '-');
});

test('status from the reported state', (t) => {
  t.is(deviceStatus(undefined), 'unknown');
  t.is(deviceStatus(st('healthy')), 'converged');
  t.is(deviceStatus(st('converged')), 'converged');
  t.is(deviceStatus(st('applying')), 'applying');
  t.is(deviceStatus(st('applying', { waiting: ['update lock held by app hello'] })), 'waiting');
  t.is(deviceStatus(st('failed', { reason: 'x' })), 'failed');
  t.is(deviceStatus(st('healthy', { reason: 'rollback from group g1 8: crashed' })), 'rolled-back');
  t.is(deviceStatus(st('healthy'), { kind: 'device', id: 'd', version: 2, at: 5 }), 'rejected');
});

test('several groups: own target first, else the first group with an uncleared target', (t) => {
  const targets = new Map<string, ScopeVersion>([
    ['group/b', { kind: 'group', id: 'b', version: 2, cleared: false }],
    ['group/c', { kind: 'group', id: 'c', version: 9, cleared: false }],
    ['device/d2', { kind: 'device', id: 'd2', version: 4, cleared: false }],
    ['device/d3', { kind: 'device', id: 'd3', version: 5, cleared: true }],
  ]);
  const of = (s: { kind: string; id: string }) => targets.get(`${s.kind}/${s.id}`);
  t.like(effectiveTarget('d1', ['a', 'b', 'c'], of), { kind: 'group', id: 'b' });
  t.like(effectiveTarget('d1', ['c', 'b'], of), { kind: 'group', id: 'c' });
  t.like(effectiveTarget('d2', ['b'], of), { kind: 'device', id: 'd2' });
  t.like(
    effectiveTarget('d3', ['b'], of),
    { kind: 'group', id: 'b' },
    'a cleared override lets the group apply',
  );
  t.is(effectiveTarget('d4', ['a'], of), undefined);
});

test('deploy progress per device', (t) => {
  const want = { kind: 'device' as const, id: 'd1', version: 3 };
  const snap = (o: Partial<DeviceSnapshot>): DeviceSnapshot => ({
    id: 'd1',
    online: true,
    applied: { kind: 'device', id: 'd1', version: 2 },
    targetStatus: 'healthy',
    ...o,
  });
  t.is(deviceProgress(want, snap({})).state, 'applying');
  t.is(
    deviceProgress(
      want,
      snap({ applied: { kind: 'device', id: 'd1', version: 3 }, targetStatus: 'applying' }),
    ).state,
    'applying',
  );
  t.is(deviceProgress(want, snap({ waiting: ['lock'] })).state, 'waiting');
  t.is(
    deviceProgress(
      want,
      snap({ applied: { kind: 'device', id: 'd1', version: 3 }, targetStatus: 'converged' }),
    ).state,
    'verifying',
    'converged but in its health window: a crash still rolls it back',
  );
  t.is(
    deviceProgress(want, snap({ applied: { kind: 'device', id: 'd1', version: 3 }, targetStatus: 'healthy' }))
      .state,
    'converged',
  );
  t.is(deviceProgress(want, snap({ applied: { kind: 'device', id: 'd1', version: 4 } })).state, 'converged');
  t.is(
    deviceProgress(
      want,
      snap({ rejection: { kind: 'device', id: 'd1', version: 3, at: 1 }, lastError: 'signed with key x' }),
    ).state,
    'rejected',
  );
  t.is(
    deviceProgress(want, snap({ rejection: { kind: 'device', id: 'd1', version: 2, at: 1 } })).state,
    'applying',
    'an older rejection is not this one',
  );
  t.is(deviceProgress(want, snap({ reason: 'rollback from device 3: unhealthy' })).state, 'failed');
  t.is(
    deviceProgress(want, snap({ applied: { kind: 'device', id: 'd1', version: 3 }, targetStatus: 'failed' }))
      .state,
    'failed',
  );
  t.is(
    deviceProgress(
      { kind: 'group', id: 'g', version: 1 },
      snap({ expected: { kind: 'device', id: 'd1', version: 2, cleared: false } }),
    ).state,
    'superseded',
  );
  const sum = summarizeProgress([
    deviceProgress(
      want,
      snap({ applied: { kind: 'device', id: 'd1', version: 3 }, targetStatus: 'healthy' }),
    ),
    deviceProgress(want, snap({ id: 'd2' })),
  ]);
  t.like(sum, { total: 2, converged: 1, pending: 1, done: false, ok: true });
});
