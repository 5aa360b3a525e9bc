/**
 * Agent releases over the fleet API (real HTTP): listed newest first and shown to viewers; removed by
 * operators only, audited, refused while a current target names the release (409), 404 for one not there,
 * a version that is not one refused before anything runs (400).
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { HttpFleetClient } from '../../src/fleet/client/http.js';
import { decodeJson, SignedTargetSchema, type Target } from '../../src/transport/messages.js';
import { type ApiSide, Caller, startApi } from '../helpers/fleet-api.js';
import { tempDir } from '../helpers/fleet-harness.js';
import { fakeAgent, removeFakeAgents } from '../helpers/self-update.js';

test.after.always(removeFakeAgents);

/** `fleet release push` of a one-arch (x64) release made of a fake agent executable. */
async function pushRelease(api: ApiSide, work: string, version: string): Promise<void> {
  const dir = path.join(work, version);
  await fsp.mkdir(dir);
  const exe = path.join(dir, 'berth-linux-x64');
  await fsp.copyFile(await fakeAgent(version, 'GOOD'), exe);
  const bytes = await fsp.readFile(exe);
  await fsp.writeFile(
    `${exe}.json`,
    JSON.stringify({
      arch: 'x64',
      ociPlatform: 'linux/amd64',
      version,
      size: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      database: { schema: 8, minSchema: 0 },
      config: { format: 1, minFormat: 1 },
    }),
  );
  await api.services.releases.push(dir, version);
}

const ADMIN = { kind: 'local' as const, name: 'x', role: 'admin' as const, userId: null };

test('releases: list and show for viewers; remove for operators, audited, refused while in use', async (t) => {
  const work = await tempDir(t, 'api-rel');
  const api = await startApi(t);
  for (const version of ['0.2.0', '0.10.0']) await pushRelease(api, work, version);
  const admin = ADMIN;
  const viewer = new Caller(api.url, api.ops.createToken(admin, { name: 'v', role: 'viewer' }).token);
  const operator = new Caller(api.url, api.ops.createToken(admin, { name: 'o', role: 'operator' }).token);

  const list = await viewer.call('GET', '/releases');
  t.is(list.status, 200);
  t.deepEqual(
    (list.body.items as Array<{ version: string }>).map((r) => r.version),
    ['0.10.0', '0.2.0'],
    'semantic order, not text order',
  );
  const one = await viewer.call('GET', '/releases/0.2.0');
  t.is(one.status, 200);
  t.like(one.body, { version: '0.2.0', database: { schema: 8 } });
  t.truthy((one.body.artifacts as Record<string, unknown>)['linux/amd64']);
  t.is((await viewer.call('GET', '/releases/0.3.0')).status, 404);
  t.is((await viewer.call('GET', '/releases/..%2Fx')).status, 400);

  t.is((await viewer.call('DELETE', '/releases/0.2.0')).status, 403, 'viewers cannot remove');
  // a current target names 0.2.0
  const scope = { kind: 'device' as const, id: 'd1' };
  const manifest = api.stores.releases.get('0.2.0')!.manifest;
  const { row } = api.stores.deployments.reserve(
    scope,
    (version) => ({
      v: 1,
      target: {
        v: 1,
        fleet: 'test',
        scope,
        version,
        issuedAt: new Date().toISOString(),
        images: [],
        apps: {},
        agent: { version: '0.2.0', release: manifest },
      },
      signature: { alg: 'ed25519', keyId: 'x', sig: '' },
    }),
    { now: Date.now() },
  );
  api.stores.deployments.commit(row.id, Date.now());
  const busy = await operator.call('DELETE', '/releases/0.2.0');
  t.is(busy.status, 409);
  t.regex(busy.body.message ?? '', /named by the current target of device d1/);
  const gone = await operator.call('DELETE', '/releases/0.10.0');
  t.is(gone.status, 200);
  t.is((await viewer.call('GET', '/releases/0.10.0')).status, 404);
  const audit = api.ops.audit(admin, { limit: 10, action: 'release.remove' });
  t.is(audit.items.length, 3, 'refused calls are audited too');
});

test('POST /deployments with agent: alone it keeps the current apps; a missing release or platform is refused, nothing published', async (t) => {
  const work = await tempDir(t, 'api-rel-dep');
  const api = await startApi(t);
  await pushRelease(api, work, '0.2.0');
  api.stores.devices.applyStatus([
    { deviceId: 'd1', online: true, at: 1, platform: 'linux/amd64', agentVersion: '0.1.0', groups: [] },
    { deviceId: 'pi', online: true, at: 1, platform: 'linux/arm64', agentVersion: '0.1.0', groups: [] },
  ]);
  const operator = new Caller(api.url, api.ops.createToken(ADMIN, { name: 'o', role: 'operator' }).token);
  const apps = { hello: { services: { web: { image: 'busybox:1', networkMode: 'none' } } } };
  const first = await operator.call('POST', '/deployments', { device: 'd1', apps, images: [] });
  t.is(first.status, 201, JSON.stringify(first.body));

  const targets = () =>
    api.published
      .filter((p) => p.topic.endsWith('/target'))
      .map((p) => {
        const d = decodeJson(SignedTargetSchema, p.payload, 1 << 20);
        if (!d.ok) throw new Error(d.reason);
        return d.value.target as Target;
      });
  const before = targets().length;
  const bad = await operator.call('POST', '/deployments', { device: 'd1', agent: { version: '1.0' } });
  t.is(bad.status, 400, 'a version must be x.y.z');
  const missing = await operator.call('POST', '/deployments', { device: 'd1', agent: { version: '0.9.0' } });
  t.is(missing.status, 404, JSON.stringify(missing.body));
  t.regex(missing.body.message ?? '', /0\.9\.0/);
  const arch = await operator.call('POST', '/deployments', { device: 'pi', agent: { version: '0.2.0' } });
  t.is(arch.status, 400, JSON.stringify(arch.body));
  t.regex(arch.body.message ?? '', /no executable for linux\/arm64 \(pi\)/);
  t.is(targets().length, before, 'nothing published for a refused deploy');

  const dep = await operator.call('POST', '/deployments', {
    device: 'd1',
    agent: { version: '0.2.0', allowDowngrade: true },
  });
  t.is(dep.status, 201, JSON.stringify(dep.body));
  t.like(dep.body, { scope: { kind: 'device', id: 'd1' }, version: 2 });
  const target = targets().at(-1)!;
  t.deepEqual(target.apps, apps, 'the apps of the current target stay');
  t.like(target.agent, {
    version: '0.2.0',
    allowDowngrade: true,
    release: { digest: api.stores.releases.get('0.2.0')!.manifest.digest },
  });
  const check = await operator.call('POST', '/deployments/validate', {
    device: 'd1',
    apps,
    images: [],
    agent: { version: '0.2.0' },
  });
  t.is(check.status, 200, JSON.stringify(check.body));

  // the remote CLI's client: list, show, remove (refused while the current target names it)
  const client = new HttpFleetClient({
    server: api.url,
    token: api.ops.createToken(ADMIN, { name: 'c', role: 'operator' }).token,
  });
  t.teardown(() => client.close());
  t.deepEqual(
    (await client.releases()).map((r) => r.version),
    ['0.2.0'],
  );
  t.is((await client.release('0.2.0')).database.schema, 8);
  await t.throwsAsync(client.deleteRelease('0.2.0'), { message: /named by the current target of device d1/ });
  t.truthy(api.stores.releases.get('0.2.0'));
});
