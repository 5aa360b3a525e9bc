/**
 * Changing the fleet over real HTTP: roles on deploy, deploy/validate/clear/progress, labels, image push
 * by upload (bounded, verified, traversal refused, nothing left behind on failure), image delete refused
 * while deployed, enrollment tokens and the enrollment exchange, revocation — each refusal audited.
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { decodeJson, SignedTargetSchema } from '../../src/transport/messages.js';
import { type ApiSide, Caller, startApi } from '../helpers/fleet-api.js';
import { tempDir } from '../helpers/fleet-harness.js';
import { buildMultiArchImage } from '../helpers/images.js';

const LOCAL = { kind: 'local' as const, name: 'root', role: 'admin' as const, userId: null };

async function setup(t: ExecutionContext, o: Parameters<typeof startApi>[1] = {}) {
  const api = await startApi(t, o);
  const as = (role: 'viewer' | 'operator' | 'admin') =>
    new Caller(api.url, api.ops.createToken(LOCAL, { name: role, role }).token);
  api.stores.devices.applyStatus([
    { deviceId: 'd1', online: true, at: 1, platform: 'linux/amd64', agentVersion: '1', groups: ['g1'] },
  ]);
  return { api, viewer: as('viewer'), operator: as('operator'), admin: as('admin') };
}

/** An oci-archive (a tar of an OCI layout) of a two-platform busybox image. */
async function archive(t: ExecutionContext): Promise<string> {
  const work = await tempDir(t, 'api-img');
  const img = buildMultiArchImage(path.join(work, 'img'), [
    { architecture: 'amd64' },
    { architecture: 'arm64' },
  ]);
  const file = path.join(work, 'img.tar');
  execFileSync('tar', ['-C', img.layout, '-cf', file, '.']);
  return file;
}

async function upload(c: Caller, file: string, tag: string, type = 'application/x-tar') {
  return c.call('POST', `/images?tag=${encodeURIComponent(tag)}`, undefined, {
    raw: await fsp.readFile(file),
    headers: { 'content-type': type },
  });
}

const apps = { web: { services: { web: { image: 'app:1' } } } };

async function blobCount(api: ApiSide): Promise<number> {
  const dir = path.join(api.content.store.root, 'blobs', 'sha256');
  return (await fsp.readdir(dir).catch(() => [])).length;
}

test('a viewer deploying → 403, audited; an operator deploys a signed, retained target', async (t) => {
  const { api, viewer, operator, admin } = await setup(t);
  const file = await archive(t);
  t.is((await upload(operator, file, 'app:1')).status, 201);
  const denied = await viewer.call('POST', '/deployments', { device: 'd1', apps, images: ['app:1'] });
  t.is(denied.status, 403);
  t.is(api.published.length, 0, 'nothing published for the viewer');
  const ok = await operator.call('POST', '/deployments', { device: 'd1', apps, images: ['app:1'] });
  t.is(ok.status, 201, JSON.stringify(ok.body));
  t.is(ok.body.text, 'device 1');
  t.is(ok.body.createdBy, 'token:operator');
  const pub = api.published.at(-1)!;
  t.is(pub.topic, 'berth/v1/test/devices/d1/target');
  t.true(pub.retain);
  const signed = decodeJson(SignedTargetSchema, pub.payload, 1 << 20);
  t.true(signed.ok);
  const audit = (await admin.call('GET', '/audit?action=deployment.create')).body.items as Array<
    Record<string, unknown>
  >;
  t.deepEqual(
    audit.map((a) => [a.actor, a.result, a.status]),
    [
      ['token:operator', 'ok', 201],
      ['token:viewer', 'PermissionDenied', 403],
    ],
  );
});

test('deploy: unknown device 404 unless allowUnknown; bad bodies 400 naming the field; validate publishes nothing', async (t) => {
  const { api, operator } = await setup(t);
  const file = await archive(t);
  await upload(operator, file, 'app:1');
  const unknown = await operator.call('POST', '/deployments', { device: 'nope', apps, images: ['app:1'] });
  t.is(unknown.status, 404);
  t.regex(unknown.body.message!, /never been seen/);
  const both = await operator.call('POST', '/deployments', {
    device: 'd1',
    group: 'g1',
    apps,
    images: ['app:1'],
  });
  t.is(both.status, 400);
  t.regex(both.body.message!, /^body\.device: /);
  const extra = await operator.call('POST', '/deployments', {
    device: 'd1',
    apps,
    images: ['app:1'],
    force: true,
  });
  t.is(extra.status, 400);
  t.regex(extra.body.message!, /body: unknown field "force"/);
  const badImage = await operator.call('POST', '/deployments', {
    device: 'd1',
    apps,
    images: ['../../etc/passwd'],
  });
  t.is(badImage.status, 400);
  t.regex(badImage.body.message!, /^body\.images\.0: /);
  const missing = await operator.call('POST', '/deployments', {
    device: 'd1',
    apps: { web: { services: { web: { image: 'other:1' } } } },
    images: ['other:1'],
  });
  t.is(missing.status, 404);
  t.regex(missing.body.message!, /other:1/);
  const v = await operator.call('POST', '/deployments/validate', { group: 'g1', apps, images: ['app:1'] });
  t.is(v.status, 200, JSON.stringify(v.body));
  t.deepEqual(v.body.apps, ['web']);
  t.is(api.published.length, 0);
  t.deepEqual((await operator.call('GET', '/deployments')).body.items, [], 'no deployment row from refusals');
  const allowed = await operator.call('POST', '/deployments', {
    device: 'nope',
    apps,
    images: ['app:1'],
    allowUnknown: true,
  });
  t.is(allowed.status, 201);
});

test('deploy a compose file as text to a group; progress; clear a device override', async (t) => {
  const { api, operator } = await setup(t);
  await upload(operator, await archive(t), 'app:1');
  const compose = 'name: web\nservices:\n  web:\n    image: app:1\n';
  const g = await operator.call('POST', '/deployments', {
    group: 'g1',
    file: { name: 'compose.yml', text: compose },
  });
  t.is(g.status, 201, JSON.stringify(g.body));
  t.is(g.body.text, 'group g1 1');
  const p = await operator.call('GET', `/deployments/${g.body.id}/progress`);
  t.is(p.status, 200, JSON.stringify(p.body));
  t.is(p.body.total, 1);
  t.is((p.body.devices as Array<{ deviceId: string }>)[0]!.deviceId, 'd1');
  t.false(p.body.done as boolean);
  const d = await operator.call('POST', '/deployments', { device: 'd1', apps, images: ['app:1'] });
  t.is(d.status, 201);
  t.is(((await operator.call('GET', '/devices/d1')).body.expected as { text: string }).text, 'device 1');
  const cleared = await operator.call('DELETE', '/devices/d1/target');
  t.is(cleared.status, 200, JSON.stringify(cleared.body));
  t.true(cleared.body.cleared as boolean);
  t.is(((await operator.call('GET', '/devices/d1')).body.expected as { text: string }).text, 'group g1 1');
  t.is(api.published.length, 3);
  t.is((await operator.call('GET', '/deployments/999/progress')).status, 404);
});

test('labels: set and remove; bad keys are 400 naming the field', async (t) => {
  const { operator, viewer } = await setup(t);
  const r = await operator.call('PATCH', '/devices/d1/labels', { set: { site: 'berlin', rack: '4' } });
  t.deepEqual(r.body, { labels: { rack: '4', site: 'berlin' } });
  t.deepEqual((await operator.call('PATCH', '/devices/d1/labels', { remove: ['rack'] })).body, {
    labels: { site: 'berlin' },
  });
  const bad = await operator.call('PATCH', '/devices/d1/labels', { set: { '../x': 'y' } });
  t.is(bad.status, 400);
  t.regex(bad.body.message!, /^body\.set/);
  t.is((await viewer.call('PATCH', '/devices/d1/labels', { set: { a: 'b' } })).status, 403);
  t.is((await operator.call('PATCH', '/devices/zz/labels', { set: { a: 'b' } })).status, 404);
});

test('image push by upload: listed with every platform; traversal in the name, wrong type, oversized and corrupt uploads leave nothing', async (t) => {
  const { api, operator, viewer } = await setup(t, { maxUploadBytes: 64 * 1024 });
  const file = await archive(t);
  const size = (await fsp.stat(file)).size;
  t.true(size > 64 * 1024, `archive is ${size} bytes`);
  const big = await upload(operator, file, 'app:1');
  t.is(big.status, 400);
  t.regex(big.body.message!, /upload limit/);
  // without a Content-Length (chunked), the limit is enforced while the bytes stream in
  const bytes = await fsp.readFile(file);
  const chunked = await fetch(`${api.url}/api/v1/images?tag=app:1`, {
    method: 'POST',
    headers: { authorization: `Bearer ${operator.token}`, 'content-type': 'application/x-tar' },
    body: new ReadableStream({
      start(c) {
        for (let i = 0; i < bytes.length; i += 8192) c.enqueue(bytes.subarray(i, i + 8192));
        c.close();
      },
    }),
    duplex: 'half',
  } as RequestInit);
  t.is(chunked.status, 400);
  t.regex(((await chunked.json()) as { message: string }).message, /upload limit/);
  t.is(await blobCount(api), 0, 'an oversized upload leaves no blob');
  const traversal = await upload(operator, file, '../../etc/passwd');
  t.is(traversal.status, 400);
  t.regex(traversal.body.message!, /^query\.tag: /);
  const json = await upload(operator, file, 'app:1', 'application/json');
  t.is(json.status, 400);
  t.regex(json.body.message!, /content-type/);
  t.is((await upload(viewer, file, 'app:1')).status, 403);
});

test('image push: a corrupt archive is 400 and leaves nothing; delete is refused while deployed', async (t) => {
  const { api, operator } = await setup(t);
  const file = await archive(t);
  const bytes = await fsp.readFile(file);
  const corrupt = Buffer.from(bytes);
  corrupt.fill(0x41, Math.floor(bytes.length / 2), Math.floor(bytes.length / 2) + 4096);
  const bad = await operator.call('POST', '/images?tag=app:1', undefined, {
    raw: corrupt,
    headers: { 'content-type': 'application/x-tar' },
  });
  t.is(bad.status, 400, JSON.stringify(bad.body));
  t.is(await blobCount(api), 0);
  t.deepEqual((await operator.call('GET', '/images')).body, { items: [] });
  const ok = await upload(operator, file, 'app:1');
  t.is(ok.status, 201, JSON.stringify(ok.body));
  t.deepEqual(ok.body.platforms, ['linux/amd64', 'linux/arm64']);
  await operator.call('POST', '/deployments', { group: 'g1', apps, images: ['app:1'] });
  const refused = await operator.call('DELETE', `/images/${encodeURIComponent('app:1')}`);
  t.is(refused.status, 409);
  t.regex(refused.body.message!, /group g1/);
  await upload(operator, file, 'spare:1');
  t.is((await operator.call('DELETE', `/images/${encodeURIComponent('spare:1')}`)).status, 204);
  t.deepEqual(
    ((await operator.call('GET', '/images')).body.items as Array<{ name: string }>).map((i) => i.name),
    ['app:1'],
  );
});

test('enrollment: token made once, exchanged by a device, refused past its uses; revoke a device', async (t) => {
  const { operator, viewer, admin } = await setup(t);
  const made = await operator.call('POST', '/enrollment-tokens', {
    groups: ['g1'],
    labels: { site: 'x' },
    expiresInMs: 3600_000,
    maxUses: 1,
  });
  t.is(made.status, 201, JSON.stringify(made.body));
  const token = made.body.token as string;
  t.is((await viewer.call('POST', '/enrollment-tokens', { expiresInMs: 60_000 })).status, 403);
  const device = new Caller(operator.base);
  const first = await device.call('POST', '/enroll', { token, deviceId: 'new-1', platform: 'linux/arm64' });
  t.is(first.status, 201, JSON.stringify(first.body));
  t.is(first.body.deviceId, 'new-1');
  t.deepEqual(first.body.groups, ['g1']);
  t.regex(first.body.fleetPublicKey as string, /BEGIN PUBLIC KEY/);
  const again = await device.call('POST', '/enroll', { token, deviceId: 'new-2' });
  t.is(again.status, 403);
  const junk = await device.call('POST', '/enroll', { token: 'bet_nope', deviceId: 'x', extra: 1 });
  t.is(junk.status, 400);
  const listed = (await operator.call('GET', '/enrollment-tokens')).body.items as Array<{ uses: number }>;
  t.is(listed[0]!.uses, 1);
  t.false(JSON.stringify(listed).includes(token.slice(-10)), 'the secret is never listed');
  const revoked = await operator.call('POST', '/devices/new-1/revoke');
  t.is(revoked.status, 200, JSON.stringify(revoked.body));
  t.truthy(revoked.body.revokedAt);
  const audit = (await admin.call('GET', '/audit?action=device.enroll')).body.items as Array<
    Record<string, unknown>
  >;
  t.deepEqual(
    audit.map((a) => a.result),
    ['InvalidInput', 'PermissionDenied', 'ok'],
  );
});
