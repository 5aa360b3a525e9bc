/** GET /api/v1/summary: the overview's counts, from the devices the fleet knows (revoked apart). */
import test from 'ava';
import { Caller, startApi } from '../helpers/fleet-api.js';

test('device counts by presence, platform and agent version; revoked devices counted apart; viewer and up', async (t) => {
  const api = await startApi(t);
  const at = Date.now();
  api.stores.devices.applyStatus([
    { deviceId: 'a1', online: true, at, platform: 'linux/arm64', agentVersion: '1.0' },
    { deviceId: 'a2', online: true, at, platform: 'linux/arm64', agentVersion: '1.1' },
    { deviceId: 'a3', online: false, at, platform: 'linux/amd64', agentVersion: '1.1' },
    { deviceId: 'a4', online: false, at },
    { deviceId: 'gone', online: true, at, platform: 'linux/amd64', agentVersion: '1.1' },
  ]);
  api.stores.devices.markRevoked('gone', at);
  const anonymous = new Caller(api.url);
  t.is((await anonymous.call('GET', '/summary')).status, 401);
  await api.identity.addUser('vera', 'viewer', 'viewer-password-1');
  const viewer = new Caller(api.url);
  await viewer.login('vera', 'viewer-password-1');
  const r = await viewer.call('GET', '/summary');
  t.is(r.status, 200);
  t.like(r.body, { total: 4, online: 2, revoked: 1 });
  t.deepEqual(r.body.byPlatform, [
    { key: 'linux/arm64', count: 2 },
    { key: null, count: 1 },
    { key: 'linux/amd64', count: 1 },
  ]);
  t.deepEqual(r.body.byAgentVersion, [
    { key: '1.1', count: 2 },
    { key: null, count: 1 },
    { key: '1.0', count: 1 },
  ]);
  t.deepEqual(r.body.byStatus, [{ key: 'unknown', count: 4 }]);
});
