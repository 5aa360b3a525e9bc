/**
 * The operator plane's stores (fleet.db): devices (batched status/state, filter/sort/keyset paging),
 * events (bounded history), metrics (downsampled buckets), deployments (intent first, versions never
 * reused), enrollment tokens and credentials, and the adoption of an older berth.db's fleet rows.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import test from 'ava';
import { migrate, openDatabase } from '../../src/db/database.js';
import { MIGRATIONS } from '../../src/db/migrations.js';
import { adoptLegacyTables, type FleetStores, fleetStoresOn } from '../../src/fleet/store/index.js';
import { metricSeries } from '../../src/fleet/store/metrics.js';
import { FLEET_MIGRATIONS } from '../../src/fleet/store/migrations.js';
import type { SignedTarget, TargetScope } from '../../src/transport/messages.js';
import type { WireReportedState } from '../../src/transport/reports.js';

function stores(now = () => 1_000_000_000): FleetStores {
  const db = openDatabase(':memory:', { migrations: FLEET_MIGRATIONS });
  return fleetStoresOn(db, {
    now,
    eventRetention: { maxAgeMs: 10_000, maxPerDevice: 3 },
  });
}

function state(
  applied: WireReportedState['target']['applied'],
  status: string | null,
  o: Partial<WireReportedState['target']> = {},
): WireReportedState {
  return {
    schema: 1,
    target: { applied, status, previous: null, ...o },
    apps: {
      hello: {
        status: 'running',
        services: {
          web: { image: 'sample:v1', state: 'running', health: 'none', restarts: 0, containerId: 'c1' },
        },
      },
    },
  };
}

const fakeSigned = (scope: TargetScope, version: number): SignedTarget => ({
  v: 1,
  target: {
    v: 1,
    fleet: 'f',
    scope,
    version,
    issuedAt: new Date(0).toISOString(),
    images: [],
    apps: {},
  },
  signature: { alg: 'ed25519', keyId: 'k', sig: '' },
});

test('status batches upsert devices; groups keep the order the device gives', (t) => {
  const s = stores();
  s.devices.applyStatus([
    { deviceId: 'd1', online: true, at: 10, platform: 'linux/amd64', agentVersion: '1', groups: ['b', 'a'] },
    { deviceId: 'd2', online: true, at: 11, groups: [] },
  ]);
  s.devices.applyStatus([{ deviceId: 'd1', online: false, at: 20 }]);
  const d1 = s.devices.get('d1')!;
  t.false(d1.online);
  t.is(d1.lastSeen, 20);
  t.is(d1.firstSeen, 10);
  t.is(d1.platform, 'linux/amd64', 'a status without platform keeps the known one');
  t.deepEqual(d1.groups, ['b', 'a']);
  t.deepEqual(s.devices.inGroup('a'), ['d1']);
});

test('device list: filters, sorts and keyset pages through every row exactly once', (t) => {
  const s = stores();
  const batch = [];
  for (let i = 0; i < 230; i++)
    batch.push({
      deviceId: `dev-${String(i).padStart(4, '0')}`,
      online: i % 3 === 0,
      at: 1000 + (i % 17),
      platform: i % 2 ? 'linux/arm64' : 'linux/amd64',
      groups: i % 5 === 0 ? ['g5'] : [],
    });
  s.devices.applyStatus(batch);
  s.devices.enroll('never-seen', { groups: [], labels: { site: 'berlin' }, at: 1 });
  for (let i = 0; i < 230; i += 10)
    s.devices.setLabels(`dev-${String(i).padStart(4, '0')}`, { site: 'berlin' });

  for (const sort of ['id', 'lastSeen', 'platform', 'online'] as const)
    for (const order of ['asc', 'desc'] as const) {
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const p = s.devices.list({ sort, order, limit: 50, cursor });
        t.is(p.total, 231);
        seen.push(...p.items.map((d) => d.id));
        cursor = p.nextCursor;
        pages++;
      } while (cursor);
      t.is(pages, 5, `${sort} ${order}`);
      t.is(new Set(seen).size, 231, `${sort} ${order}: no row twice, none missing`);
      if (sort === 'lastSeen') t.is(seen[seen.length - 1], 'never-seen', 'never seen sorts last both ways');
    }
  const byLastSeen = s.devices.list({ sort: 'lastSeen', order: 'desc', limit: 500 }).items;
  for (let i = 1; i < byLastSeen.length - 1; i++)
    t.true((byLastSeen[i - 1]!.lastSeen ?? 0) >= (byLastSeen[i]!.lastSeen ?? 0));

  t.is(s.devices.list({ online: true }).total, 77);
  t.is(s.devices.list({ group: 'g5' }).total, 46);
  t.is(s.devices.list({ labels: { site: 'berlin' } }).total, 24);
  t.is(s.devices.list({ labels: { site: 'berlin' }, platform: 'linux/amd64' }).total, 23);
  t.is(s.devices.list({ idPrefix: 'dev-01' }).total, 100);
  t.deepEqual(
    s.devices.list({ idPrefix: 'dev-000', limit: 3 }).items.map((d) => d.id),
    ['dev-0000', 'dev-0001', 'dev-0002'],
  );
  t.deepEqual(s.devices.list({ labels: { site: 'berlin' }, limit: 1 }).items[0]!.labels, { site: 'berlin' });
  t.throws(() => s.devices.list({ limit: 501 }), { message: /limit 501/ });
  t.throws(() => s.devices.list({ cursor: 'garbage' }), { message: /cursor/ });
  t.throws(() => s.devices.list({ sort: 'nope' as 'id' }), { message: /sort "nope"/ });
  t.throws(() => s.devices.list({ labels: { 'bad key!': 'x' } }), { message: /label key/ });
});

test('reported state: summary columns, services, rollback and rejection shown as the device reports', (t) => {
  const s = stores();
  s.devices.applyStatus([{ deviceId: 'd1', online: true, at: 1 }]);
  s.devices.applyState([
    { deviceId: 'd1', at: 2, state: state({ kind: 'device', id: 'd1', version: 3 }, 'healthy') },
  ]);
  let d = s.devices.detail('d1')!;
  t.is(d.status, 'converged');
  t.deepEqual(d.applied, { kind: 'device', id: 'd1', version: 3 });
  t.is(d.services.length, 1);
  t.is(d.services[0]!.image, 'sample:v1');
  t.is(s.devices.list({ image: 'sample:v1' }).total, 1);

  s.devices.applyState([
    {
      deviceId: 'd1',
      at: 3,
      state: state({ kind: 'device', id: 'd1', version: 3 }, 'applying', {
        reason: 'rollback from device 4: web restarted 3 times',
        previous: null,
      }),
    },
  ]);
  d = s.devices.detail('d1')!;
  t.is(d.status, 'rolled-back');
  t.is(d.lastError, 'rollback from device 4: web restarted 3 times');

  s.devices.applyRejections([
    { deviceId: 'd1', kind: 'device', id: 'd1', version: 5, reason: 'signed with key x', at: 4 },
  ]);
  t.is(s.devices.get('d1')!.status, 'rejected');
  t.is(s.devices.list({ status: 'rejected' }).total, 1);
  // an older state arriving later does not hide the rejection
  s.devices.applyState([
    { deviceId: 'd1', at: 5, state: state({ kind: 'device', id: 'd1', version: 3 }, 'healthy') },
  ]);
  t.is(s.devices.get('d1')!.status, 'rejected');
  // applying that scope at that version clears it
  s.devices.applyState([
    { deviceId: 'd1', at: 6, state: state({ kind: 'device', id: 'd1', version: 5 }, 'converged') },
  ]);
  d = s.devices.detail('d1')!;
  t.is(d.status, 'converged');
  t.is(d.rejection, null);
  t.is(d.lastError, null);
});

test('revoked devices: status, state and info from them are ignored', (t) => {
  const s = stores();
  s.devices.applyStatus([{ deviceId: 'd1', online: true, at: 1 }]);
  s.devices.markRevoked('d1', 5);
  s.devices.applyStatus([{ deviceId: 'd1', online: true, at: 6 }]);
  s.devices.applyState([{ deviceId: 'd1', at: 6, state: state(null, null) }]);
  s.devices.applyInfo([{ deviceId: 'd1', at: 6, json: '{}' }]);
  const d = s.devices.detail('d1')!;
  t.false(d.online);
  t.is(d.revokedAt, 5);
  t.is(d.state, null);
  t.is(d.info, null);
  t.throws(() => s.devices.enroll('d1', { groups: [], labels: {}, at: 7 }), { message: /revoked/ });
});

test('labels: set, replace, remove; bad keys and values refused without a partial write', (t) => {
  const s = stores();
  s.devices.enroll('d1', { groups: ['g'], labels: { a: '1' }, at: 1 });
  t.deepEqual(s.devices.setLabels('d1', { site: 'berlin', a: '2' }), { a: '2', site: 'berlin' });
  t.deepEqual(s.devices.setLabels('d1', {}, ['a']), { site: 'berlin' });
  t.throws(() => s.devices.setLabels('d1', { ok: 'x', 'no spaces': 'y' }), { message: /label key/ });
  t.throws(() => s.devices.setLabels('d1', { ok: 'has space' }), { message: /value/ });
  t.deepEqual(s.devices.labelsOf('d1'), { site: 'berlin' });
  t.throws(() => s.devices.setLabels('nobody', { a: 'b' }), { message: /no device nobody/ });
});

test('events: paged newest first; pruned by count per device and by age', (t) => {
  const s = stores();
  const ev = (deviceId: string, i: number, receivedAt: number) => ({
    deviceId,
    type: 'converged',
    at: i,
    receivedAt,
    json: JSON.stringify({ type: 'converged', n: i }),
  });
  s.events.append([ev('d1', 1, 100), ev('d1', 2, 100), ev('d2', 1, 100)]);
  s.events.append([ev('d1', 3, 20_000), ev('d1', 4, 20_000), ev('d1', 5, 20_000)]);
  const p1 = s.events.list({ deviceId: 'd1', limit: 2 });
  t.deepEqual(
    p1.items.map((e) => e.event.n),
    [5, 4],
  );
  t.is(p1.total, 5);
  const p2 = s.events.list({ deviceId: 'd1', limit: 2, cursor: p1.nextCursor });
  t.deepEqual(
    p2.items.map((e) => e.event.n),
    [3, 2],
  );
  t.is(s.events.prune(20_500), 3, 'd1 keeps its newest 3 (cap), d2 loses its old one (age)');
  t.deepEqual(
    s.events.list({ deviceId: 'd1' }).items.map((e) => e.event.n),
    [5, 4, 3],
  );
  t.is(s.events.count('d2'), 0);
});

test('metrics: samples fold into buckets per resolution; queries and pruning', (t) => {
  const now = 10 * 3600_000;
  const s = stores(() => now);
  s.metrics.record([
    { deviceId: 'd1', at: now - 120_000 + 1000, values: { cpuPercent: 10 } },
    { deviceId: 'd1', at: now - 120_000 + 2000, values: { cpuPercent: 30 } },
    { deviceId: 'd1', at: now - 60_000 + 1000, values: { cpuPercent: 50, 'memory.usedBytes': 7 } },
  ]);
  const [cpu] = s.metrics.query({ deviceId: 'd1', series: ['cpuPercent'], from: now - 3600_000, to: now });
  t.is(cpu!.resolutionMs, 60_000);
  t.deepEqual(
    cpu!.points.map((p) => [p.avg, p.min, p.max, p.last, p.count]),
    [
      [20, 10, 30, 30, 2],
      [50, 50, 50, 50, 1],
    ],
  );
  const hourly = s.metrics.query({ deviceId: 'd1', from: now - 7200_000, to: now, resolutionMs: 3600_000 });
  t.deepEqual(
    hourly.map((x) => x.series),
    ['cpuPercent', 'memory.usedBytes'],
  );
  t.is(hourly[0]!.points[0]!.count, 3);
  t.deepEqual(s.metrics.seriesOf('d1'), ['cpuPercent', 'memory.usedBytes']);
  t.throws(() => s.metrics.query({ deviceId: 'd1', from: 0, to: 700 * 3600_000, resolutionMs: 60_000 }), {
    message: /more than/,
  });
  t.true(s.metrics.prune(now + 3 * 24 * 3600_000) >= 3, 'minute buckets past 2 days go');
  t.is(s.metrics.query({ deviceId: 'd1', from: now - 3600_000, to: now, resolutionMs: 60_000 }).length, 0);
});

test('metricSeries: flattened, container figures under their service, bounded', (t) => {
  const v = metricSeries(
    {
      at: 1,
      seq: 2,
      cpuPercent: 3,
      memory: { usedBytes: 4, totalBytes: 5 },
      disk: { mount: '/', usedBytes: 6 },
      temperatureC: null,
      containers: { abc: { cpuPercent: 7 }, def0123456789xyz: { memoryBytes: 8 } },
    },
    (id) => (id === 'abc' ? 'hello.web' : undefined),
  );
  t.deepEqual(v, {
    cpuPercent: 3,
    'memory.usedBytes': 4,
    'memory.totalBytes': 5,
    'disk.usedBytes': 6,
    'service.hello.web.cpuPercent': 7,
    'container.def012345678.memoryBytes': 8,
  });
  const many: Record<string, number> = {};
  for (let i = 0; i < 500; i++) many[`k${i}`] = i;
  t.is(Object.keys(metricSeries(many)).length, 64);
});

test('deployments: reserve → commit is current with previous; failed versions are never reused', (t) => {
  const s = stores();
  const scope = { kind: 'device', id: 'd1' } as const;
  const a = s.deployments.reserve(scope, (v) => fakeSigned(scope, v), { now: 1 });
  t.is(a.row.version, 1);
  t.is(s.deployments.current(scope), undefined, 'pending is not current');
  t.deepEqual(
    s.deployments.pending().map((r) => r.id),
    [a.row.id],
  );
  s.deployments.commit(a.row.id, 2);
  t.like(s.deployments.current(scope), { version: 1, previousVersion: null, cleared: false });
  const b = s.deployments.reserve(scope, (v) => fakeSigned(scope, v), { now: 3 });
  s.deployments.fail(b.row.id);
  t.like(s.deployments.current(scope), { version: 1 });
  const c = s.deployments.reserve(scope, (v) => fakeSigned(scope, v), {
    now: 4,
    cleared: true,
    createdBy: 'ann',
  });
  t.is(c.row.version, 3, 'the failed version 2 stays used');
  s.deployments.commit(c.row.id, 5);
  t.like(s.deployments.current(scope), { version: 3, previousVersion: 1, cleared: true });
  t.deepEqual(
    s.deployments.currentSigned().map((x) => x.target.version),
    [3],
  );
  t.deepEqual(
    s.deployments.list().items.map((r) => [r.version, r.state]),
    [
      [3, 'published'],
      [2, 'failed'],
      [1, 'published'],
    ],
  );
  // a signer that signs something else is refused, and nothing is written
  t.throws(() => s.deployments.reserve(scope, () => fakeSigned(scope, 99), { now: 6 }), {
    message: /does not match/,
  });
  t.is(s.deployments.nextVersion(scope), 4);
  // images in use: only current, uncleared targets count
  const g = { kind: 'group', id: 'g' } as const;
  const withImage = (v: number) => {
    const x = fakeSigned(g, v);
    x.target.images = [{ name: 'web:1', digest: `sha256:${'b'.repeat(64)}` }];
    return x;
  };
  const d = s.deployments.reserve(g, withImage, { now: 7 });
  t.deepEqual(s.deployments.imageInUse('web:1'), [], 'pending does not count');
  s.deployments.commit(d.row.id, 8);
  t.deepEqual(s.deployments.imageInUse('web:1'), [g]);
  t.deepEqual(s.deployments.imageInUse('web:2'), []);
});

test('enrollment tokens: uses, expiry, revocation and a wrong secret are refused; refund gives a use back', (t) => {
  const s = stores();
  const hash = (x: string) => createHash('sha256').update(x).digest('hex');
  const check = (secret: string) => (h: string) => timingSafeEqual(Buffer.from(h), Buffer.from(hash(secret)));
  s.enrollment.createToken({
    id: 't1',
    secretHash: hash('s1'),
    groups: ['g'],
    labels: { k: 'v' },
    expiresAt: 100,
    maxUses: 2,
    now: 0,
  });
  t.is(s.enrollment.consume('t1', 10, check('s1')).uses, 1);
  t.throws(() => s.enrollment.consume('t1', 10, check('wrong')), { message: /unknown token/ });
  t.throws(() => s.enrollment.consume('nope', 10, check('s1')), { message: /unknown token/ });
  t.is(s.enrollment.consume('t1', 10, check('s1')).uses, 2);
  t.throws(() => s.enrollment.consume('t1', 10, check('s1')), { message: /used 2 of 2/ });
  s.enrollment.refund('t1');
  t.is(s.enrollment.consume('t1', 10, check('s1')).uses, 2);
  t.throws(() => s.enrollment.consume('t1', 100, check('s1')), { message: /expired/ });
  s.enrollment.revokeToken('t1', 11);
  t.throws(() => s.enrollment.consume('t1', 12, check('s1')), { message: /revoked/ });
  t.is(s.enrollment.token('t1')!.uses, 2, 'refused attempts take no use');
});

test('credentials: one per device; pending and revoking are listed for recovery', (t) => {
  const s = stores();
  s.enrollment.addCredential({ deviceId: 'd1', username: 'd1', passwordHash: 'h', tokenId: null, now: 1 });
  t.throws(
    () =>
      s.enrollment.addCredential({
        deviceId: 'd1',
        username: 'd1',
        passwordHash: 'h',
        tokenId: null,
        now: 2,
      }),
    { message: /already enrolled/ },
  );
  t.is(s.enrollment.activeByUsername('d1'), undefined, 'pending is not active');
  s.enrollment.setCredentialState('d1', 'active', 3);
  t.is(s.enrollment.activeByUsername('d1')!.deviceId, 'd1');
  t.deepEqual(s.enrollment.inFlight(), []);
  s.enrollment.setCredentialState('d1', 'revoking', 4);
  t.deepEqual(
    s.enrollment.inFlight().map((c) => c.state),
    ['revoking'],
  );
});

test("an older berth.db's fleet rows are adopted once", (t) => {
  const legacy = openDatabase(':memory:');
  migrate(legacy, MIGRATIONS);
  legacy
    .prepare(
      `INSERT INTO fleet_devices (id, online, last_seen, platform, agent_version, groups_json) VALUES ('d1', 1, 5, 'linux/amd64', '0.1', '["g1","g2"]')`,
    )
    .run();
  for (const v of [1, 2])
    legacy
      .prepare(
        'INSERT INTO fleet_deployments (scope_kind, scope_id, version, signed_json, created_at) VALUES (?, ?, ?, ?, ?)',
      )
      .run('group', 'g1', v, JSON.stringify(fakeSigned({ kind: 'group', id: 'g1' }, v)), v);
  legacy
    .prepare(
      `INSERT INTO fleet_images (name, digest, media_type, size, total_size, platforms, pushed_at) VALUES ('a:1', 'sha256:${'a'.repeat(64)}', 'x', 1, 2, 'linux/amd64', 3)`,
    )
    .run();
  const s = stores();
  adoptLegacyTables(s.db, legacy);
  adoptLegacyTables(s.db, legacy);
  t.deepEqual(s.devices.get('d1')!.groups, ['g1', 'g2']);
  t.false(s.devices.get('d1')!.online, 'presence comes back with the next status');
  t.like(s.deployments.current({ kind: 'group', id: 'g1' }), { version: 2, previousVersion: 1 });
  t.is(s.deployments.nextVersion({ kind: 'group', id: 'g1' }), 3);
  t.is(s.images.list().length, 1);
  t.is(s.deployments.list().items.length, 2, 'adopted once');
});
