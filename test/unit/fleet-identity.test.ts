import test from 'ava';
import { openDatabase } from '../../src/db/database.js';
import { FailureLimiter } from '../../src/fleet/identity/rate-limit.js';
import { lesserRole, roleAllows } from '../../src/fleet/identity/roles.js';
import { IDENTITY_MIGRATION } from '../../src/fleet/identity/schema.js';
import { hashPassword, parseApiToken, verifyPassword } from '../../src/fleet/identity/secrets.js';
import { type Actor, IdentityService } from '../../src/fleet/identity/service.js';
import { IdentityStore } from '../../src/fleet/identity/store.js';
import { isBerthError } from '../../src/lib/errors.js';

function setup(opts: ConstructorParameters<typeof IdentityService>[1] = {}) {
  const db = openDatabase(':memory:', { migrations: [IDENTITY_MIGRATION] });
  const store = new IdentityStore(db);
  let now = 1_000_000;
  const id = new IdentityService(store, { now: () => now, ...opts });
  return { db, store, id, advance: (ms: number) => (now += ms), now: () => now };
}

const LOCAL: Actor = { kind: 'local', name: 'root', role: 'admin', userId: null };

test('roles: each includes the one below; a token never outranks its creator', (t) => {
  t.true(roleAllows('admin', 'operator'));
  t.true(roleAllows('operator', 'viewer'));
  t.false(roleAllows('viewer', 'operator'));
  t.false(roleAllows('operator', 'admin'));
  t.is(lesserRole('admin', 'viewer'), 'viewer');
});

test('passwords: scrypt hash verifies the right password only; a corrupt hash verifies nothing', async (t) => {
  const h = await hashPassword('correct horse');
  t.regex(h, /^scrypt\$32768\$8\$1\$/);
  t.true(await verifyPassword('correct horse', h));
  t.false(await verifyPassword('correct horsE', h));
  t.false(await verifyPassword('correct horse', h.replace(/\$[^$]+$/, '$AAAA')));
  t.false(await verifyPassword('x', 'plain'));
});

test('FailureLimiter: max failures in the window lock a key until the oldest leaves the window', (t) => {
  let now = 0;
  const l = new FailureLimiter({ max: 3, windowMs: 1000 }, () => now);
  for (let i = 0; i < 3; i++) {
    t.is(l.retryAfter('a'), 0);
    l.fail('a');
    now += 100;
  }
  t.is(l.retryAfter('a'), 700); // first failure at 0 leaves the window at 1000; now = 300
  t.is(l.retryAfter('b'), 0, 'other keys are not affected');
  now = 1000;
  t.is(l.retryAfter('a'), 0);
  l.reset('a');
  t.is(l.retryAfter('a'), 0);
});

test('FailureLimiter: the number of keys is capped', (t) => {
  const l = new FailureLimiter({ max: 1, windowMs: 1000, maxKeys: 2 }, () => 0);
  l.fail('a');
  l.fail('b');
  l.fail('c');
  t.is(l.retryAfter('a'), 0, 'oldest key dropped');
  t.true(l.retryAfter('c') > 0);
});

test('login: right password opens a session; wrong ones are 401, then rate-limited even for the right one', async (t) => {
  const { id } = setup({ loginMaxFailures: 3 });
  await id.addUser('alice', 'operator', 'password-1');
  const s = await id.login('alice', 'password-1', '10.0.0.1');
  const actor = id.sessionActor(s.cookie);
  t.is(actor?.name, 'alice');
  t.is(actor?.role, 'operator');
  t.is(actor?.csrf, s.csrf);
  for (let i = 0; i < 3; i++) {
    const e = await t.throwsAsync(id.login('alice', 'nope-nope', '10.0.0.1'));
    t.true(isBerthError(e, 'Unauthenticated'));
  }
  const limited = await t.throwsAsync(id.login('alice', 'password-1', '10.0.0.1'));
  t.true(isBerthError(limited, 'RateLimited'), String(limited));
  const unknown = await t.throwsAsync(id.login('mallory', 'whatever1', '10.0.0.2'));
  t.true(isBerthError(unknown, 'Unauthenticated'));
});

test('sessions end at logout, when idle too long, and when the password changes', async (t) => {
  const { id, advance } = setup({ sessionIdleMs: 1000, sessionMaxMs: 100_000 });
  await id.addUser('bob', 'viewer', 'password-1');
  const a = await id.login('bob', 'password-1', 'x');
  const actor = id.sessionActor(a.cookie)!;
  id.logout(actor);
  t.is(id.sessionActor(a.cookie), undefined);
  const b = await id.login('bob', 'password-1', 'x');
  advance(1001);
  t.is(id.sessionActor(b.cookie), undefined, 'idle session expired');
  const c = await id.login('bob', 'password-1', 'x');
  await id.setPassword('bob', 'password-2');
  t.is(id.sessionActor(c.cookie), undefined, 'password change ends sessions');
});

test('tokens: shown once, stored hashed, capped by the creator, expiring, revocable', async (t) => {
  const { id, store, advance } = setup();
  await id.addUser('op', 'operator', 'password-1');
  const s = await id.login('op', 'password-1', 'x');
  const op = id.sessionActor(s.cookie)!;
  const e = t.throws(() => id.createToken(op, { name: 'too-much', role: 'admin' }));
  t.true(isBerthError(e, 'PermissionDenied'));
  const made = id.createToken(op, { name: 'ci', role: 'viewer', expiresAt: 1_000_000 + 5000 });
  t.truthy(parseApiToken(made.token));
  const row = store.token(made.info.id)!;
  t.false(row.secretHash.includes(parseApiToken(made.token)!.secret), 'secret not stored');
  t.is(id.tokenActor(made.token)?.role, 'viewer');
  // another last character (a fixed 'A' was the same one in 1 of 64 tokens: CI saw it)
  const wrong = `${made.token.slice(0, -1)}${made.token.endsWith('A') ? 'B' : 'A'}`;
  t.not(wrong, made.token);
  t.is(id.tokenActor(wrong), undefined, 'wrong secret');
  advance(5000);
  t.is(id.tokenActor(made.token), undefined, 'expired');

  const local = id.createToken(LOCAL, { name: 'admin-cli', role: 'admin' });
  t.is(id.tokenActor(local.token)?.role, 'admin');
  id.revokeToken(LOCAL, local.info.id);
  t.is(id.tokenActor(local.token), undefined, 'revoked');
  t.is(id.tokens(LOCAL).find((x) => x.id === local.info.id)?.state, 'revoked');
});

test('a token acts with at most its creator’s current role; deleting the creator kills it', async (t) => {
  const { id } = setup();
  await id.addUser('root', 'admin', 'password-1');
  await id.addUser('carol', 'admin', 'password-1');
  const s = await id.login('carol', 'password-1', 'x');
  const carol = id.sessionActor(s.cookie)!;
  const tok = id.createToken(carol, { name: 'deploy', role: 'admin' });
  id.setRole('carol', 'viewer');
  t.is(id.tokenActor(tok.token)?.role, 'viewer');
  id.deleteUser('carol');
  t.is(id.tokenActor(tok.token), undefined);
});

test('the last admin can be neither demoted nor deleted', async (t) => {
  const { id } = setup();
  await id.addUser('root', 'admin', 'password-1');
  t.true(
    isBerthError(
      t.throws(() => id.setRole('root', 'viewer')),
      'Conflict',
    ),
  );
  t.true(
    isBerthError(
      t.throws(() => id.deleteUser('root')),
      'Conflict',
    ),
  );
  t.is(id.user('root').role, 'admin');
});

test('setup token: one use, only while there are no users; bad input leaves no user behind', async (t) => {
  const { id } = setup();
  const token = id.beginSetup()!;
  t.truthy(token);
  t.true(
    isBerthError(
      await t.throwsAsync(id.completeSetup('setup_wrong', 'root', 'password-1')),
      'Unauthenticated',
    ),
  );
  t.true(isBerthError(await t.throwsAsync(id.completeSetup(token, '../root', 'password-1')), 'InvalidInput'));
  t.true(isBerthError(await t.throwsAsync(id.completeSetup(token, 'root', 'short')), 'InvalidInput'));
  t.false(id.hasUsers());
  const u = await id.completeSetup(token, 'root', 'password-1');
  t.is(u.role, 'admin');
  t.true(
    isBerthError(await t.throwsAsync(id.completeSetup(token, 'root2', 'password-1')), 'Unauthenticated'),
  );
  t.is(id.beginSetup(), undefined);
});

test('audit rows page backwards and filter by failure', (t) => {
  const { id } = setup();
  for (let i = 0; i < 5; i++)
    id.audit({
      actor: 'user:a',
      role: 'admin',
      action: 'x.create',
      target: `t${i}`,
      source: '1.2.3.4',
      result: i % 2 ? 'PermissionDenied' : 'ok',
      status: i % 2 ? 403 : 200,
      message: null,
    });
  const first = id.auditLog({ limit: 2 });
  t.deepEqual(
    first.map((r) => r.target),
    ['t4', 't3'],
  );
  const next = id.auditLog({ limit: 2, before: first[1]!.id });
  t.deepEqual(
    next.map((r) => r.target),
    ['t2', 't1'],
  );
  t.deepEqual(
    id.auditLog({ limit: 10, failed: true }).map((r) => r.target),
    ['t3', 't1'],
  );
});

test('prune drops ended sessions and audit rows past their retention', async (t) => {
  const { id, store, advance } = setup({ sessionIdleMs: 1000, auditRetentionMs: 5000 });
  await id.addUser('a', 'viewer', 'password-1');
  await id.login('a', 'password-1', 'x');
  id.audit({
    actor: 'x',
    role: null,
    action: 'a',
    target: null,
    source: 's',
    result: 'ok',
    status: 200,
    message: null,
  });
  advance(2000);
  id.audit({
    actor: 'y',
    role: null,
    action: 'a',
    target: null,
    source: 's',
    result: 'ok',
    status: 200,
    message: null,
  });
  advance(4000);
  t.deepEqual(id.prune(), { sessions: 1, audit: 1 });
  t.deepEqual(
    store.audit({ limit: 10 }).map((r) => r.actor),
    ['y'],
  );
});
