/** deploy --wait with an agent release (src/fleet/view.ts deviceProgress): done only when the device runs it. */
import test from 'ava';
import { type DeviceSnapshot, deviceProgress } from '../../src/fleet/view.js';

const want = { kind: 'device' as const, id: 'd1', version: 3, agent: '0.2.0' };
const converged: DeviceSnapshot = {
  id: 'd1',
  online: true,
  applied: { kind: 'device', id: 'd1', version: 3 },
  targetStatus: 'healthy',
};

test('apps converged, agent not yet: applying, with where the agent update stands', (t) => {
  t.like(deviceProgress(want, { ...converged, agentVersion: '0.1.0' }), {
    state: 'applying',
    detail: 'agent 0.2.0: not started',
  });
  t.like(
    deviceProgress(want, {
      ...converged,
      agentVersion: '0.1.0',
      agentUpdate: { version: '0.2.0', phase: 'downloading' },
    }),
    { state: 'applying', detail: 'agent 0.2.0: downloading' },
  );
  t.like(deviceProgress(want, { ...converged, agentVersion: '0.2.0' }), { state: 'converged' });
  t.like(deviceProgress({ ...want, agent: undefined }, { ...converged, agentVersion: '0.1.0' }), {
    state: 'converged',
  });
});

test('the agent update rolled back or refused: failed, naming why', (t) => {
  for (const phase of ['rolled-back', 'refused']) {
    const p = deviceProgress(want, {
      ...converged,
      agentVersion: '0.1.0',
      agentUpdate: { version: '0.2.0', phase, reason: 'exited with code 1' },
    });
    t.is(p.state, 'failed');
    t.is(p.detail, `agent 0.2.0 ${phase}: exited with code 1`);
  }
  // an older failure of another version does not count
  t.is(
    deviceProgress(want, {
      ...converged,
      agentVersion: '0.1.0',
      agentUpdate: { version: '0.1.5', phase: 'rolled-back' },
    }).state,
    'applying',
  );
});
