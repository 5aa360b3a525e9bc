/**
 * Staged rollouts end to end with simulated devices over the real (embedded, authenticated) broker and a
 * real fleet server in this process: the rollout service plans and stores, the driver (event-driven from the
 * fleet bus) publishes phase by phase. An observer subscribed to every target topic counts what each device
 * was sent (live deliveries, retained copies left out), so "no device of a later phase ever receives the bad
 * target" and "exactly one content publish per device" are measured on the wire, not read from our own rows.
 */
import { createPublicKey } from 'node:crypto';
import test from 'ava';
import type { FleetEvent } from '../../src/fleet/bus.js';
import { IdentityService } from '../../src/fleet/identity/service.js';
import { IdentityStore } from '../../src/fleet/identity/store.js';
import { loadFleetPrivateKey } from '../../src/fleet/keys.js';
import { startSimulator } from '../helpers/device-sim.js';
import { serveApiOn } from '../helpers/fleet-api.js';
import { FLEET, type FleetSide, startFleet, waitFor } from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';
import { ManualClock } from '../helpers/manual-clock.js';
import { observeTargets } from '../helpers/target-wire.js';

const apps = (tag: string) => ({ web: { services: { main: { image: `app:${tag}` } } } });

async function fleetWithImages(
  t: Parameters<typeof startFleet>[0],
  o: Parameters<typeof startFleet>[1] = {},
): Promise<FleetSide> {
  const fleet = await startFleet(t, o);
  // two different images so the two releases differ in content
  const a = await putTestImage(fleet.store, { layerSizes: [1000] });
  const b = await putTestImage(fleet.store, { layerSizes: [1200] });
  await fleet.addImage('app:1', a.digest, a.mediaType);
  await fleet.addImage('app:2', b.digest, b.mediaType);
  return fleet;
}

/** Counts live target deliveries per scope, on the fleet account (the embedded broker). */
function observe(t: Parameters<typeof startFleet>[0], fleet: FleetSide) {
  const account = fleet.server.fleetAccount!;
  return observeTargets(t, { url: fleet.server.brokerUrl, fleet: FLEET, ...account });
}

async function groupFleet(
  t: Parameters<typeof startFleet>[0],
  count: number,
  failShare: number,
  o: Parameters<typeof startFleet>[1] = {},
) {
  const fleet = await fleetWithImages(t, o);
  const publicKey = createPublicKey(await loadFleetPrivateKey(fleet.dir));
  const sim = await startSimulator({
    url: fleet.server.brokerUrl,
    fleet: FLEET,
    count,
    groups: () => ['g1'],
    publicKey,
    account: fleet.server.fleetAccount,
    connections: 4,
    failShare,
    applyMs: 20,
    windowMs: 40,
  });
  t.teardown(() => sim.stop());
  await sim.ready();
  await waitFor(() => fleet.stores.devices.list({ online: true }).total === count, 20_000, 'all online');
  const { deploy } = fleet.server.services;
  await deploy.deploy({ apps: apps('1'), images: ['app:1'] }, { kind: 'group', id: 'g1' });
  await waitFor(
    () => deploy.progress({ kind: 'group', id: 'g1', version: 1 }).done,
    20_000,
    'g1 1 everywhere',
  );
  t.like(deploy.progress({ kind: 'group', id: 'g1', version: 1 }), { total: count, converged: count });
  const events: FleetEvent[] = [];
  fleet.server.bus.subscribe((e) => events.push(e));
  return { fleet, sim, events, wire: await observe(t, fleet) };
}

test('200 devices, 5 % failing: stops in the phase that crosses the error threshold, moved devices get their previous target back, no later device gets the release', async (t) => {
  const { fleet, events, wire } = await groupFleet(t, 200, 0.05);
  const { rollouts } = fleet.server.services;
  const created = await rollouts.create({
    target: { apps: apps('2'), images: ['app:2'] },
    selection: { group: 'g1' },
    phases: ['5%', '25%', '100%'],
    policy: { successThreshold: 90, errorThreshold: 3 },
    createdBy: 'test',
  });
  await waitFor(() => rollouts.view(created.id).row.state === 'aborted', 30_000, 'aborted');
  await waitFor(() => rollouts.view(created.id).row.rollback === 'done', 30_000, 'rolled back');
  const v = rollouts.view(created.id);
  const k = v.row.phase;
  t.true(k >= 1 && k < 3, `stopped in phase ${k}`);
  t.regex(
    v.row.reason ?? '',
    /^error threshold crossed: \d+ of \d+ devices .* failed or rolled back; the limit is 3 %/,
  );
  const rows = fleet.stores.rollouts.devices(created.id);
  const moved = rows.filter((x) => x.phase <= k);
  const later = rows.filter((x) => x.phase > k);
  t.true(later.length > 0);
  // no device of a later phase was sent anything; the group target never moved
  for (const x of later) t.is(wire.content.get(`device ${x.deviceId}`), undefined, x.deviceId);
  t.is(wire.content.get('group g1'), undefined, 'the group target was not touched');
  await waitFor(() => moved.every((x) => wire.clears.has(`device ${x.deviceId}`)), 10_000, 'clears seen');
  // each moved device got the release once, then its override cleared (its previous target: the group's)
  for (const x of moved) {
    t.deepEqual(wire.content.get(`device ${x.deviceId}`), ['app:2'], x.deviceId);
    t.is(wire.clears.get(`device ${x.deviceId}`), 1, `${x.deviceId} cleared once`);
  }
  // …and runs group g1 1 again, failed and converged ones alike
  await waitFor(
    () => moved.every((x) => fleet.stores.devices.get(x.deviceId)?.applied?.kind === 'group'),
    20_000,
    'every moved device back on the group target',
  );
  for (const x of moved)
    t.like(fleet.stores.devices.get(x.deviceId)!.applied, { kind: 'group', id: 'g1', version: 1 });
  t.like(v.rollback, { moved: moved.length, returned: moved.length });
  const failed = v.counts.slice(0, k).reduce((a, c) => a + c.failed, 0);
  t.true(failed >= 1);
  // the bus told it: created, started, aborted, rolled-back; device outcomes; progress
  const changes = events.filter((e) => e.type === 'rollout').map((e) => (e as { change: string }).change);
  t.true(
    ['started', 'aborted', 'rolled-back'].every((c) => changes.includes(c)),
    changes.join(','),
  );
  t.true(events.some((e) => e.type === 'rollout.device' && e.outcome === 'failed'));
  await waitFor(() => events.some((e) => e.type === 'rollout.progress'), 5000, 'progress event');
  // an aborted rollout cannot be resumed or approved: clear errors, nothing published
  const before = [...wire.content.values()].flat().length;
  await t.throwsAsync(rollouts.resume(created.id), {
    message: /was aborted .*cannot be resumed; create a new rollout/,
  });
  await t.throwsAsync(rollouts.approve(created.id), { message: /cannot be approved/ });
  t.is([...wire.content.values()].flat().length, before);
});

test('approval and pause/resume; success moves the group target; every device gets the release exactly once', async (t) => {
  const { fleet, wire } = await groupFleet(t, 20, 0);
  const { rollouts } = fleet.server.services;
  const r = await rollouts.create({
    name: 'canary then all',
    target: { apps: apps('2'), images: ['app:2'] },
    selection: { group: 'g1' },
    phases: [2, '100%'],
    canaries: ['sim-00007'],
    policy: { approval: true },
  });
  await waitFor(() => rollouts.view(r.id).row.state === 'waiting-approval', 20_000, 'waiting for approval');
  const rows = fleet.stores.rollouts.devices(r.id);
  t.like(
    rows.find((x) => x.deviceId === 'sim-00007'),
    { phase: 1, canary: true },
  );
  const phase1 = rows.filter((x) => x.phase === 1).map((x) => x.deviceId);
  t.is(phase1.length, 2);
  t.like(rollouts.view(r.id).counts[0], { total: 2, converged: 2 });
  t.like(rollouts.view(r.id).counts[1], { total: 18, queued: 18 });
  // paused while waiting: approve is refused; resume judges phase 1 again and asks again
  await rollouts.pause(r.id, 'test');
  await t.throwsAsync(rollouts.approve(r.id), { message: /rollout \d+ is paused, not waiting for approval/ });
  await t.throwsAsync(rollouts.pause(r.id), { message: /already paused/ });
  t.is(wire.content.get('group g1'), undefined);
  await rollouts.resume(r.id, 'test');
  await waitFor(() => rollouts.view(r.id).row.state === 'waiting-approval', 20_000, 'asks again');
  await rollouts.approve(r.id, 'test');
  await waitFor(() => rollouts.view(r.id).row.state === 'succeeded', 20_000, 'succeeded');
  await waitFor(() => rollouts.view(r.id).row.settle === 'done', 20_000, 'settled');
  // the broker hands the observer its copies a little after the server's PUBACKs
  await waitFor(() => phase1.every((id) => wire.clears.get(`device ${id}`) === 1), 10_000, 'clears seen');
  // the group target is the release (one publish); phase 1's overrides are cleared (no content)
  t.deepEqual(wire.content.get('group g1'), ['app:2']);
  for (const id of phase1) {
    t.deepEqual(wire.content.get(`device ${id}`), ['app:2'], id);
    t.is(wire.clears.get(`device ${id}`), 1, id);
  }
  const others = rows.filter((x) => x.phase === 2);
  for (const x of others) t.is(wire.content.get(`device ${x.deviceId}`), undefined, x.deviceId);
  await waitFor(
    () =>
      rows.every(
        (x) =>
          fleet.stores.devices.get(x.deviceId)?.applied?.kind === 'group' &&
          fleet.stores.devices.get(x.deviceId)?.applied?.version === 2,
      ),
    20_000,
    'every device on group g1 2',
  );
  // a second rollout to the same devices supersedes nothing here (the first is over); a draft is not published
  const draft = await rollouts
    .create({
      target: { apps: apps('1'), images: ['app:1'] },
      selection: { selector: 'nosuch=label' },
      draft: true,
    })
    .catch((e: Error) => e);
  t.true(draft instanceof Error && /has no device to roll out to/.test(draft.message));
});

test('a last phase with no device left still sets the group target: the cleared overrides fall back to the release', async (t) => {
  // 3 devices, phases 3,100%: every device is moved in phase 1 (overrides) and phase 2 is empty
  const { fleet, wire } = await groupFleet(t, 3, 0);
  const { rollouts } = fleet.server.services;
  const r = await rollouts.create({
    target: { apps: apps('2'), images: ['app:2'] },
    selection: { group: 'g1' },
    phases: [3, '100%'],
  });
  t.deepEqual(
    rollouts.view(r.id).counts.map((c) => c.total),
    [3, 0],
  );
  await waitFor(() => rollouts.view(r.id).row.settle === 'done', 20_000, 'succeeded and settled');
  t.is(rollouts.view(r.id).row.state, 'succeeded');
  const ids = fleet.stores.rollouts.devices(r.id).map((x) => x.deviceId);
  await waitFor(() => ids.every((id) => wire.clears.get(`device ${id}`) === 1), 10_000, 'clears seen');
  // the group target is the release (once); each device got the release once, then a clear
  t.deepEqual(wire.content.get('group g1'), ['app:2']);
  for (const id of ids) t.deepEqual(wire.content.get(`device ${id}`), ['app:2'], id);
  // after the clears the devices follow the group target — the release, not the old group target
  await waitFor(
    () => ids.every((id) => fleet.stores.devices.get(id)?.applied?.version === 2),
    20_000,
    'every device on group g1 2',
  );
  for (const id of ids)
    t.like(fleet.stores.devices.get(id)!.applied, { kind: 'group', id: 'g1', version: 2 });
});

test('soak and phase timeout in the running driver: it wakes itself on its (injected) clock, not before', async (t) => {
  const clock = new ManualClock(Date.now());
  const { fleet, wire } = await groupFleet(t, 4, 0, { clock });
  const { rollouts } = fleet.server.services;
  const driver = fleet.server.services.rolloutDriver!;
  // soak: phase 1 converges, then must hold 10 minutes (clock time) before phase 2 — the group target
  const soak = await rollouts.create({
    target: { apps: apps('2'), images: ['app:2'] },
    selection: { group: 'g1' },
    phases: [2, '100%'],
    policy: { soakMs: 600_000 },
  });
  await waitFor(() => rollouts.view(soak.id).row.soakSince !== null, 20_000, 'phase 1 soaking');
  await driver.idle();
  t.like(rollouts.view(soak.id).row, { state: 'running', phase: 1, soakSince: clock.now() });
  clock.advance(600_000 - 1);
  await driver.idle();
  t.like(rollouts.view(soak.id).row, { state: 'running', phase: 1 }, 'still soaking 1 ms before its end');
  t.is(wire.content.get('group g1'), undefined);
  clock.advance(1);
  await waitFor(() => rollouts.view(soak.id).row.phase === 2, 20_000, 'phase 2 after the soak');
  await waitFor(() => wire.content.get('group g1')?.length === 1, 10_000, 'the group target');
  // the last phase soaks too before the rollout succeeds
  await waitFor(
    () => rollouts.view(soak.id).row.soakSince !== null && rollouts.view(soak.id).counts[1]!.converged === 2,
    20_000,
    'phase 2 soaking',
  );
  await driver.idle();
  t.is(rollouts.view(soak.id).row.state, 'running');
  clock.advance(600_000);
  await waitFor(() => rollouts.view(soak.id).row.state === 'succeeded', 20_000, 'succeeded after its soak');
  t.deepEqual(wire.content.get('group g1'), ['app:2']);

  // phase timeout: a device that never answers keeps phase 1 pending; an hour after it started, it aborts
  fleet.stores.devices.applyStatus([
    {
      deviceId: 'ghost',
      online: false,
      at: Date.now(),
      platform: 'linux/amd64',
      agentVersion: '1',
      groups: [],
    },
  ]);
  const timed = await rollouts.create({
    target: { apps: apps('1'), images: ['app:1'] },
    selection: { devices: ['sim-00001', 'ghost'] },
    policy: { phaseTimeoutMs: 3600_000 },
  });
  await waitFor(() => rollouts.view(timed.id).counts[0]!.converged === 1, 20_000, 'sim-00001 converged');
  await driver.idle();
  const end = rollouts.view(timed.id).row.phaseStartedAt! + 3600_000;
  clock.advance(end - clock.now() - 1);
  await driver.idle();
  t.is(rollouts.view(timed.id).row.state, 'running', '1 ms before the timeout');
  clock.advance(1);
  await waitFor(() => rollouts.view(timed.id).row.state === 'aborted', 20_000, 'aborted at the timeout');
  t.regex(
    rollouts.view(timed.id).row.reason ?? '',
    /^phase 1 did not pass within 1h: 1 of 2 converged, 1 pending \(1 offline\)$/,
  );
  // and rolled back: sim-00001's override cleared (its group target applies again)
  await waitFor(() => wire.clears.get('device sim-00001') === 1, 10_000, 'sim-00001 cleared');
});

test('rollout.progress and rollout.device reach an API client over the HTTP event stream', async (t) => {
  const { fleet } = await groupFleet(t, 4, 0);
  const api = await serveApiOn(t, fleet);
  const identity = new IdentityService(new IdentityStore(fleet.stores.db));
  const { token } = identity.createToken(
    { kind: 'local', name: 'root', role: 'admin', userId: null },
    { name: 'sse', role: 'viewer' },
  );
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const res = await fetch(
    `${api.server.url}/api/v1/events/stream?type=rollout.progress&type=rollout.device`,
    { headers: { authorization: `Bearer ${token}` }, signal: ac.signal },
  );
  t.is(res.status, 200);
  const r = await fleet.server.services.rollouts.create({
    target: { apps: apps('2'), images: ['app:2'] },
    selection: { group: 'g1' },
    phases: [1, '100%'],
  });
  const seen: Array<Record<string, unknown> & { type: string }> = [];
  const done = () =>
    seen.some(
      (e) =>
        e.type === 'rollout.progress' &&
        e.rolloutId === r.id &&
        e.state === 'succeeded' &&
        (e.phases as Array<{ converged: number }>).reduce((a, p) => a + p.converged, 0) === 4,
    ) &&
    new Set(
      seen
        .filter((e) => e.type === 'rollout.device' && e.outcome === 'converged' && e.rolloutId === r.id)
        .map((e) => e.deviceId),
    ).size === 4;
  const reader = res.body!.getReader();
  let text = '';
  const deadline = setTimeout(() => ac.abort(), 30_000);
  try {
    while (!done()) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      text += new TextDecoder().decode(value);
      const blocks = text.split('\n\n');
      text = blocks.pop()!;
      for (const b of blocks) {
        const type = /^event: (.*)$/m.exec(b)?.[1];
        const data = /^data: (.*)$/m.exec(b)?.[1];
        if (type && data) seen.push({ ...(JSON.parse(data) as Record<string, unknown>), type });
      }
    }
  } catch (err) {
    t.log(`stream ended: ${(err as Error).message}`);
  } finally {
    clearTimeout(deadline);
  }
  t.true(done(), JSON.stringify(seen.slice(-5)));
  // only what was asked for, and each phase counted
  t.deepEqual([...new Set(seen.map((e) => e.type))].sort(), ['rollout.device', 'rollout.progress']);
  const last = seen.filter((e) => e.type === 'rollout.progress').at(-1)!;
  t.like(last, { rolloutId: r.id, state: 'succeeded', phase: 2 });
  t.like(last.phases, [
    { index: 1, size: 1, converged: 1 },
    { index: 2, size: 3, converged: 3 },
  ]);
  t.like(
    seen.find((e) => e.type === 'rollout.device'),
    { rolloutId: r.id, phase: 1 },
  );
});

test('a newer rollout for the same devices supersedes the older one', async (t) => {
  const { fleet } = await groupFleet(t, 10, 0);
  const { rollouts } = fleet.server.services;
  const old = await rollouts.create({
    target: { apps: apps('2'), images: ['app:2'] },
    selection: { group: 'g1' },
    phases: [2, '100%'],
    policy: { approval: true },
  });
  await waitFor(() => rollouts.view(old.id).row.state === 'waiting-approval', 20_000, 'old waits');
  const ids = fleet.stores.rollouts.devices(old.id).map((x) => x.deviceId);
  const newer = await rollouts.create({
    target: { apps: apps('1'), images: ['app:1'] },
    selection: { devices: ids.slice(0, 3) },
  });
  t.like(rollouts.view(old.id).row, { state: 'superseded', supersededBy: newer.id });
  await waitFor(() => rollouts.view(newer.id).row.state === 'succeeded', 20_000, 'newer succeeded');
  await t.throwsAsync(rollouts.approve(old.id), { message: /was superseded/ });
});

test('pre-checks: nothing is stored or published for a bad rollout', async (t) => {
  const fleet = await fleetWithImages(t);
  const { rollouts } = fleet.server.services;
  const base = { target: { apps: apps('2'), images: ['app:2'] }, selection: { all: true } };
  await t.throwsAsync(rollouts.create({ ...base }), { message: /has no device to roll out to/ });
  await t.throwsAsync(rollouts.create({ ...base, selection: { selector: 'site=' + 'x'.repeat(200) } }), {
    message: /selector/,
  });
  await t.throwsAsync(rollouts.create({ ...base, selection: { selector: 'site=berlin tier=lab' } }), {
    message: /at position 13/,
  });
  await t.throwsAsync(rollouts.create({ ...base, selection: { group: 'g', all: true } }), {
    message: /exactly one of/,
  });
  await t.throwsAsync(rollouts.create({ ...base, selection: { devices: ['nope'] } }), {
    message: /devices not in the fleet: nope/,
  });
  await t.throwsAsync(rollouts.create({ ...base, phases: ['10%'] }), { message: /last phase must be 100%/ });
  await t.throwsAsync(rollouts.create({ ...base, policy: { errorThreshold: 101 } }), {
    message: /errorThreshold: 101 is not a percentage from 0 to 100/,
  });
  t.is(fleet.stores.rollouts.list({}).items.length, 0);
});
