/**
 * Deployments and the fleet's view, with simulated devices speaking the real protocol over the real
 * (embedded, authenticated) broker — each on its own connection with the credentials enrollment gave it:
 * group targets, several groups per device, a device override and clearing it, progress per device
 * (converged / rolled back / superseded), deploys the agent would refuse (too big) or that go nowhere
 * (unknown device) refused before anything is published, and what the ingest stores (state, events,
 * metrics, last error) and tells the bus.
 */
import { createPublicKey } from 'node:crypto';
import test from 'ava';
import type { FleetEvent } from '../../src/fleet/bus.js';
import { loadFleetPrivateKey } from '../../src/fleet/keys.js';
import { deviceTopic, groupTargetTopic, prefix } from '../../src/transport/topics.js';
import { startSimulator } from '../helpers/device-sim.js';
import { FLEET, type FleetSide, startFleet, waitFor } from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';

async function fleetWithImage(t: Parameters<typeof startFleet>[0]): Promise<FleetSide> {
  const fleet = await startFleet(t);
  const img = await putTestImage(fleet.store, { layerSizes: [1000] });
  await fleet.addImage('app:1', img.digest, img.mediaType);
  await fleet.addImage('app:2', img.digest, img.mediaType);
  return fleet;
}

const apps = (tag: string) => ({ web: { services: { main: { image: `app:${tag}` } } } });

test('group targets, several groups per device, an override and clearing it; progress per device; rollbacks shown', async (t) => {
  const fleet = await fleetWithImage(t);
  const publicKey = createPublicKey(await loadFleetPrivateKey(fleet.dir));
  const events: FleetEvent[] = [];
  fleet.server.bus.subscribe((e) => events.push(e));
  // 12 devices follow g1; devices 1-4 follow canary first. Every 4th device's updates fail their window.
  const sim = await startSimulator({
    url: fleet.server.brokerUrl,
    fleet: FLEET,
    count: 12,
    groups: (_id, i) => (i < 4 ? ['canary', 'g1'] : ['g1']),
    publicKey,
    perDevice: (id) => fleet.credentials(id, { groups: [] }),
    failShare: 0.25,
    metricsMs: 200,
  });
  t.teardown(() => sim.stop());
  await sim.ready();
  await waitFor(() => fleet.stores.devices.list({ online: true }).total === 12, 10_000, 'all online');
  t.is(fleet.stores.devices.list({ group: 'canary' }).total, 4);

  const { deploy } = fleet.server.services;
  const g1v1 = await deploy.deploy({ apps: apps('1'), images: ['app:1'] }, { kind: 'group', id: 'g1' });
  t.is(g1v1.version, 1);
  await waitFor(
    () => deploy.progress({ kind: 'group', id: 'g1', version: 1 }).done,
    10_000,
    'g1 1 everywhere',
  );
  let p = deploy.progress({ kind: 'group', id: 'g1', version: 1 });
  t.like(p, { total: 12, converged: 12, failed: 0, ok: true });
  t.is(fleet.stores.devices.list({ status: 'converged' }).total, 12);

  // canary first for devices 1-4: they leave g1 for it; the others stay on g1 1
  await deploy.deploy({ apps: apps('2'), images: ['app:2'] }, { kind: 'group', id: 'canary' });
  await waitFor(() => deploy.progress({ kind: 'group', id: 'canary', version: 1 }).done, 10_000, 'canary');
  p = deploy.progress({ kind: 'group', id: 'canary', version: 1 });
  t.like(p, { total: 4, converged: 3, failed: 1, done: true, ok: false });
  // sim-00004 fails its updates (every 4th): it is back on g1 1, and says why
  const s1 = fleet.stores.devices.get('sim-00004')!;
  t.is(s1.status, 'rolled-back');
  t.deepEqual(s1.applied, { kind: 'group', id: 'g1', version: 1 });
  t.regex(s1.lastError ?? '', /^rollback from group canary 1: /);
  t.like(
    p.devices.find((d) => d.deviceId === 'sim-00004'),
    { state: 'failed' },
  );
  t.like(fleet.stores.devices.get('sim-00002')!, {
    status: 'converged',
    applied: { kind: 'group', id: 'canary', version: 1 },
    previous: { kind: 'group', id: 'g1', version: 1 },
  });
  // for g1's progress, the canary devices now follow another target
  t.is(
    deploy
      .progress({ kind: 'group', id: 'g1', version: 1 })
      .devices.filter((d) => d.state === 'superseded')
      .map((d) => d.deviceId)
      .join(','),
    'sim-00001,sim-00002,sim-00003',
  );

  // a device's own target overrides its groups; clearing it gives the group back
  const own = await deploy.deploy(
    { apps: apps('2'), images: ['app:2'] },
    { kind: 'device', id: 'sim-00006' },
  );
  await waitFor(
    () => fleet.stores.devices.get('sim-00006')?.applied?.kind === 'device',
    10_000,
    'override applied',
  );
  t.is(own.version, 1);
  t.like(fleet.stores.devices.get('sim-00006')!.applied, { kind: 'device', id: 'sim-00006', version: 1 });
  const cleared = await deploy.clear('sim-00006');
  t.is(cleared.version, 2, 'a clear is the next version of the scope');
  t.true(cleared.cleared);
  await waitFor(
    () => fleet.stores.devices.get('sim-00006')?.applied?.kind === 'group',
    10_000,
    'group applies again',
  );
  t.like(fleet.stores.devices.get('sim-00006')!.applied, { kind: 'group', id: 'g1', version: 1 });
  await t.throwsAsync(deploy.clear('sim-00006'), { message: /no target of its own/ });

  // what the ingest kept and told
  fleet.server.ingest.flush();
  const evs = fleet.stores.events.list({ deviceId: 'sim-00004', limit: 50 }).items.map((e) => e.type);
  t.true(
    evs.includes('rollback') && evs.includes('converged') && evs.includes('target-accepted'),
    evs.join(','),
  );
  await waitFor(() => fleet.stores.metrics.seriesOf('sim-00004').includes('cpuPercent'), 5000, 'metrics');
  t.true(events.some((e) => e.type === 'deployment' && e.scope.id === 'canary'));
  t.true(events.some((e) => e.type === 'device.online'));
  t.true(
    events.some(
      (e) => e.type === 'deployment.progress' && e.deviceId === 'sim-00004' && e.state === 'failed',
    ),
    'the bus heard the rollback as progress',
  );
  t.true(events.some((e) => e.type === 'device.event' && e.deviceId === 'sim-00004'));
  // stopping: each device's last will marks it offline
  await sim.stop();
  await waitFor(() => fleet.stores.devices.list({ online: false }).total === 12, 10_000, 'all offline');
});

test('refused before anything is published: an unknown device (unless allowed), a revoked one, a target agents would drop', async (t) => {
  const fleet = await fleetWithImage(t);
  const { deploy } = fleet.server.services;
  const seen: string[] = [];
  const watcher = fleet.server.conn!;
  watcher.on('message', (topic) => seen.push(topic));
  await watcher.subscribe(`${prefix(FLEET)}/+/+/target`, 1);

  await t.throwsAsync(
    deploy.deploy({ apps: apps('1'), images: ['app:1'] }, { kind: 'device', id: 'dev-typo' }),
    {
      message: /device dev-typo has never been seen by the fleet .*--allow-unknown/,
    },
  );
  t.is(fleet.stores.deployments.list().items.length, 0, 'nothing recorded');

  // 10,000 services as a compose file makes them (environment, labels): 3+ MB signed; every agent would
  // drop it (1 MiB cap on a target message)
  const services: Record<string, unknown> = {};
  for (let i = 0; i < 10_000; i++)
    services[`svc${i}`] = {
      image: 'app:1',
      env: { SERVICE_NAME: `svc${i}`, LOG_LEVEL: 'info', UPSTREAM: `http://svc${i + 1}:8080` },
      labels: { 'com.example.team': 'platform', 'com.example.tier': 'backend' },
      restart: { policy: 'always' },
      stopTimeoutMs: 10_000,
    };
  await t.throwsAsync(
    deploy.deploy({ apps: { big: { services } }, images: ['app:1'] }, { kind: 'group', id: 'g1' }),
    {
      message:
        /target for group g1 is [\d.]+ MiB signed; agents refuse target messages over 1\.0 MiB \(nothing was published\)/,
    },
  );
  // the agent's schema, before signing
  await t.throwsAsync(
    deploy.deploy(
      { apps: { web: { services: { main: { image: 'app:1', bogus: 1 } } } }, images: ['app:1'] },
      {
        kind: 'group',
        id: 'g1',
      },
    ),
    { message: /target for group g1 is invalid: .*bogus/ },
  );
  await t.throwsAsync(deploy.deploy({ apps: apps('9'), images: ['app:9'] }, { kind: 'group', id: 'g1' }), {
    message: /image app:9 is not in the fleet/,
  });
  t.is(fleet.stores.deployments.list().items.length, 0, 'none of them recorded');

  // asked for: the unknown device's target waits retained
  const row = await deploy.deploy(
    { apps: apps('1'), images: ['app:1'] },
    { kind: 'device', id: 'dev-new' },
    { allowUnknown: true },
  );
  await waitFor(() => seen.includes(deviceTopic(FLEET, 'dev-new', 'target')), 5000, 'published');
  t.like(row, { version: 1, state: 'published' });
  t.like(deploy.progress({ kind: 'device', id: 'dev-new', version: 1 }).devices[0], {
    state: 'applying',
    detail: 'never seen',
  });
  t.false(seen.includes(groupTargetTopic(FLEET, 'g1')), 'the refused group targets never went out');

  // a revoked device gets nothing any more
  await fleet.credentials('dev-gone');
  await fleet.server.services.devices.revoke('dev-gone');
  await t.throwsAsync(
    deploy.deploy(
      { apps: apps('1'), images: ['app:1'] },
      { kind: 'device', id: 'dev-gone' },
      { allowUnknown: true },
    ),
    { message: /revoked/ },
  );
});

test('labels: set, filter, remove', async (t) => {
  const fleet = await startFleet(t);
  await fleet.credentials('d1');
  await fleet.credentials('d2');
  const { devices } = fleet.server.services;
  t.deepEqual(devices.setLabels('d1', { site: 'berlin', tier: 'edge' }), { site: 'berlin', tier: 'edge' });
  devices.setLabels('d2', { site: 'paris' });
  t.deepEqual(
    fleet.stores.devices.list({ labels: { site: 'berlin' } }).items.map((d) => d.id),
    ['d1'],
  );
  t.deepEqual(devices.setLabels('d1', {}, ['tier']), { site: 'berlin' });
  t.throws(() => devices.setLabels('d1', { 'bad key': 'x' }), { message: /label key/ });
  t.throws(() => devices.setLabels('nobody', { a: 'b' }), { message: /no device nobody/ });
});
