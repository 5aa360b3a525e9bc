/**
 * Enrollment tokens, exchanged through the fleet's enrollment service on real brokers: a token is good for
 * its number of uses until it expires or is revoked; every refusal (used up, expired, revoked, wrong secret,
 * a taken or revoked device id, a bad request) leaves nothing behind — no credential, no device, no use
 * taken. When the broker cannot take the credentials (Mosquitto gone mid-enrollment) the enrollment is
 * undone whole; so is one a crash left half-way, at the next start.
 */
import { randomBytes } from 'node:crypto';
import test from 'ava';
import { connectAsync } from 'mqtt';
import type { FleetSide } from '../helpers/fleet-harness.js';
import { startFleet } from '../helpers/fleet-harness.js';
import { Mosquitto } from '../helpers/mosquitto.js';

/** What a refusal must leave as it was: credentials, devices, the token's uses. */
function footprint(fleet: FleetSide, tokenId: string) {
  const db = fleet.stores.db;
  return {
    credentials: (db.prepare('SELECT COUNT(*) AS n FROM device_credentials').get() as { n: number }).n,
    devices: (db.prepare('SELECT COUNT(*) AS n FROM devices').get() as { n: number }).n,
    uses: fleet.stores.enrollment.token(tokenId)?.uses,
  };
}

test('a token is good for its uses until it expires or is revoked; every refusal leaves no row behind', async (t) => {
  let clock = Date.now();
  const fleet = await startFleet(t, { now: () => clock });
  const { enrollment } = fleet.server.services;
  const { token, row } = enrollment.create({
    groups: ['g1', 'g2'],
    labels: { site: 'berlin' },
    expiresInMs: 3600_000,
    maxUses: 2,
  });
  t.regex(token, /^bet_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
  t.false(JSON.stringify(fleet.stores.enrollment.tokens()).includes(token.slice(17)), 'only a hash is kept');

  const a = await enrollment.exchange({ token, deviceId: 'dev-a', platform: 'linux/arm64' });
  t.like(a, { deviceId: 'dev-a', fleet: 'test', broker: fleet.server.brokerUrl, username: 'dev-a' });
  t.deepEqual(a.groups, ['g1', 'g2']);
  t.deepEqual(a.labels, { site: 'berlin' });
  t.regex(a.fleetPublicKey, /BEGIN PUBLIC KEY/);
  t.like(fleet.stores.devices.get('dev-a')!, { groups: ['g1', 'g2'], labels: { site: 'berlin' } });
  // the credentials it got work on the broker
  const c = await connectAsync(fleet.server.brokerUrl, {
    username: a.username,
    password: a.password,
    reconnectPeriod: 0,
  });
  await c.endAsync();

  const before = footprint(fleet, row.id);
  // the same device id again: taken
  await t.throwsAsync(enrollment.exchange({ token, deviceId: 'dev-a' }), { message: /already enrolled/ });
  t.deepEqual(footprint(fleet, row.id), before, 'a refused id takes no use');
  // a wrong secret, an unknown token, a malformed one, a bad request
  const wrong = `${token.slice(0, 17)}${'A'.repeat(43)}`;
  await t.throwsAsync(enrollment.exchange({ token: wrong, deviceId: 'dev-x' }), { message: /unknown token/ });
  await t.throwsAsync(enrollment.exchange({ token: 'bet_000000000000_x', deviceId: 'dev-x' }), {
    message: /unknown token/,
  });
  await t.throwsAsync(enrollment.exchange({ token, deviceId: '../etc' }), { message: /deviceId/ });
  await t.throwsAsync(enrollment.exchange({ token, deviceId: 'dev-x', extra: 1 }), {
    message: /enroll request/,
  });
  t.deepEqual(footprint(fleet, row.id), before);

  await enrollment.exchange({ token, deviceId: 'dev-b' });
  const used = footprint(fleet, row.id);
  t.is(used.uses, 2);
  await t.throwsAsync(enrollment.exchange({ token, deviceId: 'dev-c' }), { message: /used 2 of 2 times/ });
  t.deepEqual(footprint(fleet, row.id), used, 'past its uses: nothing written');

  const timed = enrollment.create({ expiresInMs: 60_000 });
  clock += 60_001;
  await t.throwsAsync(enrollment.exchange({ token: timed.token, deviceId: 'dev-d' }), { message: /expired/ });
  t.deepEqual(footprint(fleet, timed.row.id), { ...used, uses: 0 }, 'past its expiry: nothing written');

  const revoked = enrollment.create({ expiresInMs: 60_000 });
  enrollment.revoke(revoked.row.id);
  await t.throwsAsync(enrollment.exchange({ token: revoked.token, deviceId: 'dev-e' }), {
    message: /revoked/,
  });
  t.deepEqual(footprint(fleet, revoked.row.id), { ...used, uses: 0 });

  // a revoked device's id cannot come back with a fresh token
  await fleet.server.services.devices.revoke('dev-b');
  const fresh = enrollment.create({ expiresInMs: 60_000 });
  await t.throwsAsync(enrollment.exchange({ token: fresh.token, deviceId: 'dev-b' }), { message: /revoked/ });
  t.is(fleet.stores.enrollment.token(fresh.row.id)!.uses, 0);

  // bad token parameters are refused when the token is made
  t.throws(() => enrollment.create({ expiresInMs: 0 }), { message: /expires/ });
  t.throws(() => enrollment.create({ expiresInMs: 1000, maxUses: 0 }), { message: /uses/ });
  t.throws(() => enrollment.create({ expiresInMs: 1000, groups: ['a/b'] }), { message: /group/ });
  t.throws(() => enrollment.create({ expiresInMs: 1000, labels: { 'a b': 'c' } }), { message: /label key/ });
});

test('Mosquitto (dynsec): the broker gone mid-enrollment undoes it whole; a crash half-way is undone at start', async (t) => {
  const admin = { username: 'berth-fleet', password: randomBytes(12).toString('hex') };
  const m = await Mosquitto.start([], { dynsec: admin });
  t.teardown(() => m.stop());
  const fleet = await startFleet(t, {
    mqtt: { url: m.url, protocolVersion: 5, ...admin, backoff: { initialMs: 50, maxMs: 300 } },
    brokerAuth: 'dynsec',
  });
  const { enrollment } = fleet.server.services;
  const { token, row } = enrollment.create({ expiresInMs: 600_000, maxUses: 1 });
  const before = footprint(fleet, row.id);

  await m.kill();
  await t.throwsAsync(enrollment.exchange({ token, deviceId: 'dev-1' }), {
    message: /enrolling dev-1: the broker did not take the credentials/,
  });
  t.deepEqual(footprint(fleet, row.id), before, 'undone: no credential, no device, the use given back');

  await m.restart();
  await fleet.server.conn!.waitConnected(15_000);
  const ok = await enrollment.exchange({ token, deviceId: 'dev-1' });
  const c = await connectAsync(m.url, { username: ok.username, password: ok.password, reconnectPeriod: 0 });
  await c.endAsync();
  t.is(fleet.stores.enrollment.credential('dev-1')!.state, 'active');

  // a crash between "recorded" and "on the broker": the rows as the first step writes them, then recovery
  const t2 = enrollment.create({ expiresInMs: 600_000, maxUses: 1 });
  fleet.stores.enrollment.consume(t2.row.id, Date.now(), () => true);
  fleet.stores.enrollment.addCredential({
    deviceId: 'dev-2',
    username: 'dev-2',
    passwordHash: 'x',
    tokenId: t2.row.id,
    now: Date.now(),
  });
  fleet.stores.devices.enroll('dev-2', { groups: [], labels: {}, at: Date.now() });
  const r = await enrollment.recover();
  t.deepEqual(r.undone, ['dev-2']);
  t.is(fleet.stores.enrollment.credential('dev-2'), undefined);
  t.false(fleet.stores.devices.exists('dev-2'));
  t.is(fleet.stores.enrollment.token(t2.row.id)!.uses, 0);
});
