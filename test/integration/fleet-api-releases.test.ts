/**
 * Agent releases over the fleet API (real HTTP): listed newest first and shown to viewers; removed by
 * operators only, audited, refused while a current target names the release (409), 404 for one not there,
 * a version that is not one refused before anything runs (400).
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { Caller, startApi } from '../helpers/fleet-api.js';
import { tempDir } from '../helpers/fleet-harness.js';
import { fakeAgent, removeFakeAgents } from '../helpers/self-update.js';

test.after.always(removeFakeAgents);

test('releases: list and show for viewers; remove for operators, audited, refused while in use', async (t) => {
  const work = await tempDir(t, 'api-rel');
  const api = await startApi(t);
  const service = api.services.releases;
  for (const version of ['0.2.0', '0.10.0']) {
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
    await service.push(dir, version);
  }
  const admin = { kind: 'local' as const, name: 'x', role: 'admin' as const, userId: null };
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
