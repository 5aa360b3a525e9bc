/**
 * The fleet API's front door over real HTTP: credentials, roles, CSRF, tokens, rate limit, input limits,
 * the OpenAPI document, and an audit row for every changing call — refused ones included.
 */
import test, { type ExecutionContext } from 'ava';
import { Caller, startApi } from '../helpers/fleet-api.js';

const PW = 'admin-password-1';

async function withAdmin(t: ExecutionContext, o: Parameters<typeof startApi>[1] = {}) {
  const api = await startApi(t, o);
  await api.identity.addUser('root', 'admin', PW);
  const admin = new Caller(
    api.url,
    api.ops.createToken(
      { kind: 'local', name: 't', role: 'admin', userId: null },
      { name: 'root-cli', role: 'admin' },
    ).token,
  );
  return { api, admin };
}

test('health and the OpenAPI 3.1 document need no credentials; every route is in it with its role', async (t) => {
  const { api } = await withAdmin(t);
  const anon = new Caller(api.url);
  t.is((await anon.call('GET', '/health')).status, 200);
  const doc = (await anon.call('GET', '/openapi.json')).body as {
    openapi: string;
    paths: Record<string, Record<string, { 'x-berth-role': string; requestBody?: unknown }>>;
    components: { schemas: Record<string, unknown> };
  };
  t.is(doc.openapi, '3.1.0');
  t.is(doc.paths['/api/v1/users']?.post?.['x-berth-role'], 'admin');
  t.truthy(doc.paths['/api/v1/users']?.post?.requestBody);
  t.is(doc.paths['/api/v1/devices/{id}/commands']?.post?.['x-berth-role'], 'operator');
  t.truthy(doc.components.schemas.User);
  // every $ref points at a component that exists
  const refs = JSON.stringify(doc).match(/"\$ref":"([^"]+)"/g) ?? [];
  t.true(refs.length > 0);
  for (const r of refs) {
    const id = r.replace(/.*#\/components\/schemas\//, '').replace(/"$/, '');
    t.truthy(doc.components.schemas[id], r);
  }
});

test('no credentials → 401; a viewer on an admin route → 403; both audited', async (t) => {
  const { api, admin } = await withAdmin(t);
  const anon = new Caller(api.url);
  const r = await anon.call('POST', '/users', { name: 'x', role: 'viewer', password: 'password-1' });
  t.is(r.status, 401);
  t.is(r.body.code, 'Unauthenticated');
  t.deepEqual(Object.keys(r.body).sort(), ['code', 'details', 'message']);
  t.is(
    (await admin.call('POST', '/users', { name: 'vic', role: 'viewer', password: 'viewer-pass' })).status,
    201,
  );
  const vic = new Caller(api.url);
  t.is((await vic.login('vic', 'viewer-pass')).status, 200);
  const forbidden = await vic.call('POST', '/users', { name: 'y', role: 'admin', password: 'password-1' });
  t.is(forbidden.status, 403);
  t.is(forbidden.body.code, 'PermissionDenied');
  const audit = (await admin.call('GET', '/audit?action=user.create')).body.items as Array<
    Record<string, unknown>
  >;
  t.deepEqual(
    audit.map((a) => [a.actor, a.result, a.status]),
    [
      ['user:vic', 'PermissionDenied', 403],
      ['token:root-cli', 'ok', 201],
      ['anonymous', 'Unauthenticated', 401],
    ],
  );
  t.is(audit[0]!.source, '127.0.0.1');
});

test('a stolen session cookie without the CSRF token → 403; with it the call works; logout ends it', async (t) => {
  const { api } = await withAdmin(t);
  const browser = new Caller(api.url);
  const login = await browser.login('root', PW);
  t.is(login.status, 200);
  const setCookie = login.headers.getSetCookie()[0]!;
  t.regex(setCookie, /HttpOnly/);
  t.regex(setCookie, /SameSite=Strict/);
  const who = await browser.call('GET', '/session');
  t.is(who.body.user, 'root');
  t.is(who.body.csrfToken, browser.csrf);
  const thief = new Caller(api.url);
  thief.cookie = browser.cookie;
  const stolen = await thief.call('POST', '/users', { name: 'evil', role: 'admin', password: 'password-1' });
  t.is(stolen.status, 403);
  t.regex(stolen.body.message!, /CSRF/);
  thief.csrf = 'guessed-wrong';
  t.is(
    (await thief.call('POST', '/users', { name: 'evil', role: 'admin', password: 'password-1' })).status,
    403,
  );
  t.is(
    (await browser.call('POST', '/users', { name: 'good', role: 'viewer', password: 'password-1' })).status,
    201,
  );
  t.is((await browser.call('DELETE', '/session')).status, 204);
  t.is((await browser.call('GET', '/session')).status, 401);
  t.deepEqual(
    api.identity.users().map((u) => u.name),
    ['good', 'root'],
    'the refused calls made no user',
  );
});

test('API tokens: shown once, act with their role, 401 once revoked or expired', async (t) => {
  let now = Date.now();
  const { api, admin } = await withAdmin(t, { identity: { now: () => now } });
  const made = await admin.call('POST', '/tokens', { name: 'ci', role: 'operator' });
  t.is(made.status, 201);
  const token = made.body.token as string;
  const info = made.body.info as { id: string };
  const ci = new Caller(api.url, token);
  t.is((await ci.call('GET', '/session')).body.role, 'operator');
  const list = (await admin.call('GET', '/tokens')).body.items as Array<Record<string, unknown>>;
  t.false(JSON.stringify(list).includes(token.slice(-20)), 'listing never shows the secret');
  t.is((await admin.call('DELETE', `/tokens/${info.id}`)).status, 200);
  const revoked = await ci.call('GET', '/session');
  t.is(revoked.status, 401);
  t.regex(revoked.body.message!, /revoked/);

  const short = await admin.call('POST', '/tokens', {
    name: 'short',
    role: 'viewer',
    expiresAt: new Date(now + 60_000).toISOString(),
  });
  const sc = new Caller(api.url, short.body.token as string);
  t.is((await sc.call('GET', '/session')).status, 200);
  now += 61_000;
  t.is((await sc.call('GET', '/session')).status, 401);
  t.is((await new Caller(api.url, 'berth_000000000000_notatoken').call('GET', '/session')).status, 401);
});

test('20 wrong passwords → 429 with Retry-After, even for the right password; every try audited', async (t) => {
  const { api, admin } = await withAdmin(t);
  const c = new Caller(api.url);
  const statuses: number[] = [];
  for (let i = 0; i < 20; i++) statuses.push((await c.login('root', `wrong-${i}-password`)).status);
  t.true(
    statuses.slice(0, 10).every((s) => s === 401),
    statuses.join(),
  );
  t.true(
    statuses.slice(10).every((s) => s === 429),
    statuses.join(),
  );
  const right = await c.login('root', PW);
  t.is(right.status, 429);
  t.truthy(right.headers.get('retry-after'));
  const audit = (await admin.call('GET', '/audit?action=session.login&limit=50')).body.items as Array<
    Record<string, unknown>
  >;
  t.is(audit.length, 21);
  t.is(audit.filter((a) => a.result === 'RateLimited').length, 11);
  t.true(audit.every((a) => a.target === 'root'));
});

test('bad input → 400 naming the field: malformed JSON, oversized body, deep nesting, unknown and bad fields', async (t) => {
  const { api, admin } = await withAdmin(t);
  const bad = async (body: unknown, o: Parameters<Caller['call']>[3] = {}) =>
    admin.call('POST', '/users', body, o);
  const malformed = await bad(undefined, { raw: '{"name": "x",' });
  t.is(malformed.status, 400);
  t.regex(malformed.body.message!, /^body: not valid JSON/);
  const huge = await bad(undefined, { raw: JSON.stringify({ name: 'x'.repeat(20_000) }) });
  t.is(huge.status, 400);
  t.regex(huge.body.message!, /^body: larger than the 8192 byte limit/);
  const deep = await bad(undefined, { raw: `${'['.repeat(100)}${']'.repeat(100)}` });
  t.is(deep.status, 400);
  t.regex(deep.body.message!, /nested deeper/);
  const unknown = await bad({ name: 'bob', role: 'viewer', password: 'password-1', admin: true });
  t.is(unknown.status, 400);
  t.regex(unknown.body.message!, /body: unknown field "admin"/);
  const role = await bad({ name: 'bob', role: 'root', password: 'password-1' });
  t.is(role.status, 400);
  t.regex(role.body.message!, /^body\.role: /);
  t.deepEqual((role.body.details as { issues: Array<{ path: string }> }).issues[0]!.path, 'body.role');
  const traversal = await bad({ name: '../etc', role: 'viewer', password: 'password-1' });
  t.is(traversal.status, 400);
  t.regex(traversal.body.message!, /^body\.name: /);
  const form = await bad(undefined, {
    raw: 'name=x',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  t.is(form.status, 400);
  t.regex(form.body.message!, /content-type/);
  const query = await admin.call('GET', '/audit?limit=100000');
  t.is(query.status, 400);
  t.regex(query.body.message!, /^query\.limit: /);
  t.deepEqual(
    api.identity.users().map((u) => u.name),
    ['root'],
    'nothing half-written',
  );
  const audit = (await admin.call('GET', '/audit?action=user.create&failed=true')).body.items as unknown[];
  t.is(audit.length, 7, 'each refused call is audited');
});

test('unknown routes are 404 JSON errors', async (t) => {
  const { admin } = await withAdmin(t);
  const r = await admin.call('GET', '/nope');
  t.is(r.status, 404);
  t.is(r.body.code, 'NotFound');
});

test('users: the last admin stays; a user changes their own password with the current one only', async (t) => {
  const { api, admin } = await withAdmin(t);
  t.is((await admin.call('PATCH', '/users/root', { role: 'viewer' })).status, 409);
  await admin.call('POST', '/users', { name: 'op', role: 'operator', password: 'op-password' });
  const op = new Caller(api.url);
  await op.login('op', 'op-password');
  t.is((await op.call('PATCH', '/users/op', { password: 'new-password' })).status, 400);
  t.is(
    (await op.call('PATCH', '/users/op', { password: 'new-password', currentPassword: 'nope-nope' })).status,
    401,
  );
  t.is((await op.call('PATCH', '/users/op', { role: 'admin' })).status, 403);
  t.is((await op.call('PATCH', '/users/root', { password: 'new-password' })).status, 403);
  t.is(
    (await op.call('PATCH', '/users/op', { password: 'new-password', currentPassword: 'op-password' }))
      .status,
    200,
  );
  t.is((await op.call('GET', '/session')).status, 401, 'a password change ends the sessions');
  t.is((await new Caller(api.url).login('op', 'new-password')).status, 200);
});

test('setup: the one-time token makes the first admin, once', async (t) => {
  const api = await startApi(t);
  const token = api.identity.beginSetup()!;
  const c = new Caller(api.url);
  t.is((await c.call('POST', '/setup', { token: 'setup_nope', name: 'root', password: PW })).status, 401);
  t.is((await c.call('POST', '/setup', { token, name: 'root', password: PW })).status, 201);
  t.is((await c.call('POST', '/setup', { token, name: 'root2', password: PW })).status, 401);
  t.is((await c.login('root', PW)).status, 200);
});
