/**
 * The rollout routes over real HTTP (no broker here: the driver does not run, so a started rollout stays in
 * phase 1 with its devices queued — what is tested is the API's contract): roles, audit, pre-checks with
 * coded errors naming the problem (platforms, selector, phases, thresholds), create/list/show/devices,
 * operator actions in wrong states → 409 naming the state, the SSE `rollout` event, the OpenAPI document.
 */
import test, { type ExecutionContext } from 'ava';
import { FleetBus } from '../../src/fleet/bus.js';
import { describeFleetImage } from '../../src/fleet/image-record.js';
import { Caller, startApi } from '../helpers/fleet-api.js';
import { testLog } from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';

const LOCAL = { kind: 'local' as const, name: 'root', role: 'admin' as const, userId: null };
const apps = { web: { services: { web: { image: 'app:1' } } } };

async function setup(t: ExecutionContext) {
  const bus = new FleetBus(testLog());
  const api = await startApi(t, { bus });
  const as = (role: 'viewer' | 'operator' | 'admin') =>
    new Caller(api.url, api.ops.createToken(LOCAL, { name: role, role }).token);
  const img = await putTestImage(api.content.store, { layerSizes: [500] });
  api.stores.images.put(await describeFleetImage(api.content.store, 'app:1', img.digest, img.mediaType));
  api.stores.devices.applyStatus(
    Array.from({ length: 10 }, (_, i) => ({
      deviceId: `d${i + 1}`,
      online: true,
      at: 1,
      platform: 'linux/amd64',
      agentVersion: '1',
      groups: ['g1'],
    })),
  );
  for (let i = 1; i <= 10; i++) api.stores.devices.setLabels(`d${i}`, { site: i <= 4 ? 'berlin' : 'paris' });
  return { api, bus, viewer: as('viewer'), operator: as('operator'), admin: as('admin') };
}

test('create, list, show, devices; a viewer may read but not create (403, audited)', async (t) => {
  const { viewer, operator, admin } = await setup(t);
  const body = { group: 'g1', apps, images: ['app:1'], phases: [2, '50%', '100%'], name: 'first' };
  const denied = await viewer.call('POST', '/rollouts', body);
  t.is(denied.status, 403);
  const created = await operator.call('POST', '/rollouts', body);
  t.is(created.status, 201, JSON.stringify(created.body));
  t.like(created.body, {
    name: 'first',
    state: 'running',
    phase: 1,
    total: 10,
    selection: { kind: 'group', group: 'g1' },
    createdBy: 'token:operator',
    group: { id: 'g1', deployment: null },
  });
  const phases = created.body.phases as Array<Record<string, unknown>>;
  t.deepEqual(
    phases.map((p) => [p.index, p.spec, p.size, p.state, p.queued]),
    [
      [1, '2', 2, 'running', 2],
      [2, '50%', 3, 'queued', 3],
      [3, '100%', 5, 'queued', 5],
    ],
  );
  const id = created.body.id as number;
  const list = await viewer.call('GET', '/rollouts?active=true');
  t.is(list.status, 200);
  t.deepEqual(
    (list.body.items as Array<{ id: number }>).map((r) => r.id),
    [id],
  );
  t.is((await viewer.call('GET', '/rollouts?state=succeeded')).body.total, 0);
  const show = await viewer.call('GET', `/rollouts/${id}`);
  t.like(show.body, { id, state: 'running' });
  const devs = await viewer.call('GET', `/rollouts/${id}/devices?phase=1`);
  t.is(devs.status, 200);
  t.is((devs.body.items as unknown[]).length, 2);
  t.like((devs.body.items as Array<Record<string, unknown>>)[0], {
    phase: 1,
    outcome: 'queued',
    target: null,
  });
  const paged = await viewer.call('GET', `/rollouts/${id}/devices?limit=4`);
  t.is(paged.body.total, 10);
  t.truthy(paged.body.next);
  const rest = await viewer.call(
    'GET',
    `/rollouts/${id}/devices?limit=10&cursor=${paged.body.next as string}`,
  );
  t.is((rest.body.items as unknown[]).length, 6);
  t.is((await viewer.call('GET', '/rollouts/999')).status, 404);
  const audit = (await admin.call('GET', '/audit?action=rollout.create')).body.items as Array<
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

test('operator actions: wrong states are 409 naming the state; abort; nothing published without a driver', async (t) => {
  const { api, operator } = await setup(t);
  const draft = await operator.call('POST', '/rollouts', {
    selector: 'site=berlin',
    apps,
    images: ['app:1'],
    draft: true,
  });
  t.is(draft.status, 201, JSON.stringify(draft.body));
  t.like(draft.body, {
    state: 'draft',
    phase: 0,
    total: 4,
    selection: { kind: 'selector', selector: 'site=berlin' },
  });
  const id = draft.body.id as number;
  const conflict = async (path: string, re: RegExp) => {
    const r = await operator.call('POST', `/rollouts/${id}/${path}`, path === 'abort' ? {} : undefined);
    t.is(r.status, 409, `${path}: ${JSON.stringify(r.body)}`);
    t.is(r.body.code, 'Conflict');
    t.regex(r.body.message!, re);
  };
  await conflict('approve', /is draft, not waiting for approval/);
  await conflict('resume', /is a draft: start it instead/);
  await conflict('pause', /is a draft/);
  t.like((await operator.call('POST', `/rollouts/${id}/start`)).body, { state: 'running', phase: 1 });
  await conflict('start', /only a draft can be started/);
  t.like((await operator.call('POST', `/rollouts/${id}/pause`)).body, { state: 'paused' });
  t.like((await operator.call('POST', `/rollouts/${id}/resume`)).body, { state: 'running' });
  const aborted = await operator.call('POST', `/rollouts/${id}/abort`, { reason: 'changed my mind' });
  t.like(aborted.body, { state: 'aborted', reason: 'aborted by token:operator: changed my mind' });
  await conflict('resume', /was aborted .*cannot be resumed; create a new rollout/);
  await conflict('approve', /cannot be approved/);
  t.is(api.published.length, 0);
});

test('pre-checks: clear coded errors, nothing stored', async (t) => {
  const { api, operator } = await setup(t);
  // a device whose platform no manifest serves is named
  api.stores.devices.applyStatus([
    { deviceId: 'pi', online: true, at: 1, platform: 'linux/arm64', agentVersion: '1', groups: ['g1'] },
  ]);
  const bad = async (body: Record<string, unknown>, status: number, re: RegExp) => {
    const r = await operator.call('POST', '/rollouts/validate', { apps, images: ['app:1'], ...body });
    t.is(r.status, status, `${JSON.stringify(body)} → ${JSON.stringify(r.body)}`);
    t.regex(r.body.message ?? '', re, JSON.stringify(body));
  };
  await bad(
    { group: 'g1' },
    400,
    /image app:1 has no manifest for linux\/arm64 \(it has linux\/amd64\): 1 device pi/,
  );
  await bad({ selector: 'site=berlin tier=lab' }, 400, /at position 13/);
  await bad({ selector: 'nosuch=x' }, 400, /has no device to roll out to/);
  await bad({ group: 'g1', selector: 'site=berlin' }, 400, /exactly one of group, selector, devices, all/);
  await bad({ devices: ['d1', 'ghost'] }, 404, /devices not in the fleet: ghost/);
  await bad({ devices: ['d1'], phases: ['50%'] }, 400, /last phase must be 100%/);
  await bad({ devices: ['d1'], errorThreshold: 150 }, 400, /errorThreshold/);
  await bad({ devices: ['d1'], canaries: ['d2'] }, 400, /canaries: d2 is not one of the selected devices/);
  await bad(
    { devices: ['d1'], images: ['nope:1'], apps: { a: { services: { s: { image: 'nope:1' } } } } },
    404,
    /nope:1/,
  );
  t.is(api.stores.rollouts.list({}).total, 0);
  // a good one: the preview
  const ok = await operator.call('POST', '/rollouts/validate', {
    selector: 'site=paris',
    apps,
    images: ['app:1'],
    phases: ['1', '100%'],
    canaries: ['d9'],
  });
  t.is(ok.status, 200, JSON.stringify(ok.body));
  t.like(ok.body, { ok: true, selection: 'labels site=paris', devices: 6, excludedTotal: 0 });
  t.deepEqual(ok.body.phases, [
    { index: 1, spec: '1', size: 1 },
    { index: 2, spec: '100%', size: 5 },
  ]);
  t.is(api.stores.rollouts.list({}).total, 0);
});

test('SSE carries rollout events; the OpenAPI document has the rollout routes', async (t) => {
  const { api, operator, viewer } = await setup(t);
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const res = await fetch(`${api.url}/api/v1/events/stream?type=rollout`, {
    headers: { authorization: `Bearer ${viewer.token!}` },
    signal: ac.signal,
  });
  t.is(res.status, 200);
  const reader = res.body!.getReader();
  const created = await operator.call('POST', '/rollouts', {
    devices: ['d1', 'd2'],
    apps,
    images: ['app:1'],
  });
  t.is(created.status, 201);
  let text = '';
  while (!/event: rollout\ndata: .*"change":"started"/.test(text)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  const events = text
    .split('\n')
    .filter((l) => l.startsWith('data: '))
    .map((l) => JSON.parse(l.slice(6)) as Record<string, unknown>);
  t.like(
    events.find((e) => e.change === 'created'),
    { type: 'rollout', rolloutId: created.body.id, state: 'draft' },
  );
  t.like(
    events.find((e) => e.change === 'started'),
    { type: 'rollout', state: 'running', phase: 1 },
  );
  const doc = (await viewer.call('GET', '/openapi.json')).body as {
    paths: Record<string, Record<string, unknown>>;
  };
  for (const p of [
    '/rollouts',
    '/rollouts/{id}',
    '/rollouts/{id}/devices',
    '/rollouts/validate',
    '/rollouts/{id}/abort',
  ])
    t.truthy(doc.paths[`/api/v1${p}`] ?? doc.paths[p], p);
});
