/**
 * The read side of the fleet API over real HTTP: devices filtered/sorted/paged on the server, detail with
 * the deployment that applies, events, metrics, images, deployments; bad queries named.
 */
import test, { type ExecutionContext } from 'ava';
import type { WireReportedState } from '../../src/transport/reports.js';
import { Caller, startApi } from '../helpers/fleet-api.js';

function state(version: number, status: string, service = 'running'): WireReportedState {
  return {
    schema: 1,
    target: { applied: { kind: 'group', id: 'g1', version }, status, previous: null },
    apps: {
      hello: {
        status: 'running',
        services: { web: { image: 'sample:v1', state: service as 'running', health: 'none', restarts: 0 } },
      },
    },
  };
}

async function seeded(t: ExecutionContext) {
  const api = await startApi(t);
  const s = api.stores;
  const batch = [];
  for (let i = 0; i < 30; i++)
    batch.push({
      deviceId: `dev-${String(i).padStart(2, '0')}`,
      online: i % 3 !== 0,
      at: 1_000 + i,
      platform: i % 2 ? 'linux/arm64' : 'linux/amd64',
      agentVersion: '1',
      groups: ['g1'],
    });
  s.devices.applyStatus(batch);
  s.devices.applyState(
    batch.map((b, i) => ({
      deviceId: b.deviceId,
      state: state(1, i < 10 ? 'converged' : 'applying'),
      at: 2_000,
    })),
  );
  s.devices.setLabels('dev-05', { site: 'berlin' });
  s.devices.setLabels('dev-07', { site: 'berlin' });
  s.events.append([
    {
      deviceId: 'dev-05',
      type: 'converged',
      at: 3_000,
      receivedAt: 3_001,
      json: '{"type":"converged","at":3000}',
    },
    {
      deviceId: 'dev-06',
      type: 'converged',
      at: 3_000,
      receivedAt: 3_002,
      json: '{"type":"converged","at":3000}',
    },
  ]);
  const now = Date.now();
  s.metrics.record([{ deviceId: 'dev-05', at: now - 60_000, values: { cpuPercent: 12 } }]);
  const tok = api.ops.createToken(
    { kind: 'local', name: 'x', role: 'admin', userId: null },
    { name: 'v', role: 'viewer' },
  );
  return { api, viewer: new Caller(api.url, tok.token) };
}

test('devices: filter, sort and keyset paging happen on the server', async (t) => {
  const { viewer } = await seeded(t);
  const first = await viewer.call(
    'GET',
    '/devices?online=true&platform=linux/arm64&sort=lastSeen&order=desc&limit=5',
  );
  t.is(first.status, 200, JSON.stringify(first.body));
  const items = first.body.items as Array<{ id: string; online: boolean; platform: string }>;
  t.deepEqual(
    items.map((d) => d.id),
    ['dev-29', 'dev-25', 'dev-23', 'dev-19', 'dev-17'],
  );
  t.is(first.body.total, 10);
  const next = first.body.next as string;
  const second = await viewer.call(
    'GET',
    `/devices?online=true&platform=linux/arm64&sort=lastSeen&order=desc&limit=5&cursor=${encodeURIComponent(next)}`,
  );
  t.deepEqual(
    (second.body.items as Array<{ id: string }>).map((d) => d.id),
    ['dev-13', 'dev-11', 'dev-07', 'dev-05', 'dev-01'],
  );
  t.is(second.body.next, null);
  const labelled = await viewer.call('GET', '/devices?label=site=berlin&status=converged');
  t.deepEqual(
    (labelled.body.items as Array<{ id: string }>).map((d) => d.id),
    ['dev-05', 'dev-07'],
  );
  const d = (labelled.body.items as Array<{ applied: { text: string }; status: string }>)[0]!;
  t.is(d.applied.text, 'group g1 1', 'the operator version, never a composite number');
});

test('devices: bad queries are 400 naming the parameter; an unknown device is 404', async (t) => {
  const { viewer } = await seeded(t);
  const sort = await viewer.call('GET', '/devices?sort=password');
  t.is(sort.status, 400);
  t.regex(sort.body.message!, /^query\.sort: /);
  const cursor = await viewer.call('GET', '/devices?cursor=bogus');
  t.is(cursor.status, 400);
  t.regex(cursor.body.message!, /cursor/);
  const extra = await viewer.call('GET', '/devices?online=true&drop=table');
  t.is(extra.status, 400);
  t.regex(extra.body.message!, /query: unknown field "drop"/);
  const missing = await viewer.call('GET', '/devices/nope');
  t.is(missing.status, 404);
  const bad = await viewer.call('GET', '/devices/..%2Fetc');
  t.is(bad.status, 400);
  t.regex(bad.body.message!, /^path\.id: /);
});

test('device detail, events, metrics, images and deployments', async (t) => {
  const { viewer } = await seeded(t);
  const d = await viewer.call('GET', '/devices/dev-05');
  t.is(d.status, 200, JSON.stringify(d.body));
  t.is((d.body.services as Array<{ service: string; state: string }>)[0]!.state, 'running');
  t.deepEqual(d.body.labels, { site: 'berlin' });
  t.is(d.body.expected, null, 'nothing deployed to it or its groups yet');
  const ev = await viewer.call('GET', '/events?device=dev-05');
  t.deepEqual(
    (ev.body.items as Array<{ type: string; deviceId: string }>).map((e) => [e.deviceId, e.type]),
    [['dev-05', 'converged']],
  );
  t.is(ev.body.total, 1);
  const all = await viewer.call('GET', '/events?limit=1');
  t.is((all.body.items as unknown[]).length, 1);
  t.truthy(all.body.next);
  const m = await viewer.call('GET', '/devices/dev-05/metrics?series=cpuPercent');
  t.is(m.status, 200, JSON.stringify(m.body));
  const series = m.body.series as Array<{ series: string; points: Array<{ avg: number }> }>;
  t.is(series[0]!.series, 'cpuPercent');
  t.is(series[0]!.points[0]!.avg, 12);
  t.is((await viewer.call('GET', '/devices/nope/metrics')).status, 404);
  t.deepEqual((await viewer.call('GET', '/images')).body, { items: [] });
  t.deepEqual((await viewer.call('GET', '/deployments')).body, { items: [], total: null, next: null });
});

test('device detail: the reconcile retry the device reports pending, its time as ISO; null when none', async (t) => {
  const { api, viewer } = await seeded(t);
  const at = Date.parse('2026-12-06T09:01:12.000Z');
  const pending = state(1, 'applying');
  pending.target.retry = { at, attempt: 9, lastError: 'Unavailable: fetch web:2: fleet overloaded' };
  api.stores.devices.applyState([{ deviceId: 'dev-12', state: pending, at: 5_000 }]);
  const d = await viewer.call('GET', '/devices/dev-12');
  t.is(d.status, 200, JSON.stringify(d.body));
  t.deepEqual(d.body.retry, {
    at: '2026-12-06T09:01:12.000Z',
    attempt: 9,
    lastError: 'Unavailable: fetch web:2: fleet overloaded',
  });
  // waiting (an update lock, say) without an error, then a report with nothing pending
  pending.target.retry = { at, attempt: 2 };
  api.stores.devices.applyState([{ deviceId: 'dev-12', state: pending, at: 6_000 }]);
  t.like((await viewer.call('GET', '/devices/dev-12')).body.retry, { attempt: 2, lastError: null });
  api.stores.devices.applyState([{ deviceId: 'dev-12', state: state(1, 'converged'), at: 7_000 }]);
  t.is((await viewer.call('GET', '/devices/dev-12')).body.retry, null);
  t.is((await viewer.call('GET', '/devices/dev-05')).body.retry, null);
});

test('device times past what a date can hold are refused at ingest, by name; the device’s pages keep answering', async (t) => {
  const { api, viewer } = await seeded(t);
  const { Ingest } = await import('../../src/fleet/ingest.js');
  const { FleetBus } = await import('../../src/fleet/bus.js');
  const { deviceTopic } = await import('../../src/transport/topics.js');
  const { FLEET, testLog } = await import('../helpers/fleet-harness.js');
  const warnings: string[] = [];
  const log = testLog();
  const ingest = new Ingest({
    fleet: FLEET,
    stores: api.stores,
    bus: new FleetBus(),
    log: Object.assign(Object.create(log), {
      warn: (o: { reason?: string }, msg: string) => warnings.push(`${msg}: ${o.reason}`),
    }),
  });
  // JavaScript dates end at 8.64e15 ms: a device sending a time past that (a broken clock, or on purpose)
  // would make every page that shows it fail to render its date
  const far = 9e15;
  const send = (channel: 'state' | 'event' | 'metrics', body: unknown) =>
    ingest.receive(deviceTopic(FLEET, 'dev-12', channel), Buffer.from(JSON.stringify(body)));
  const pending = state(1, 'applying');
  pending.target.retry = { at: far, attempt: 3 };
  send('state', pending);
  send('event', { type: 'converged', at: far });
  send('metrics', { at: far, cpuPercent: 1 });
  send('event', { type: 'converged', at: 4_000 }); // a sane one still gets in
  ingest.stop();
  t.is(warnings.length, 3, warnings.join('\n'));
  for (const w of warnings) t.regex(w, /at\b.*(less than or equal|too big|8640000000000000)/i);
  const d = await viewer.call('GET', '/devices/dev-12');
  t.is(d.status, 200, JSON.stringify(d.body));
  const ev = await viewer.call('GET', '/events?device=dev-12');
  t.is(ev.status, 200, JSON.stringify(ev.body));
  t.is((ev.body.items as unknown[]).length, 1);
});
