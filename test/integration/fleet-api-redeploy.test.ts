/**
 * Release history and redeploy through the real HTTP API on a real fleet server (embedded, authenticated
 * broker) with simulated devices that verify every signed target as the agent does and report what they run:
 * deploy v1, deploy v2, redeploy v1 → the device runs v1's apps under version 3; a group redeploy is a
 * one-phase rollout; each refusal by name, with nothing published; the audit row with the reason.
 */
import { createPublicKey } from 'node:crypto';
import test, { type ExecutionContext } from 'ava';
import { IdentityService } from '../../src/fleet/identity/service.js';
import { IdentityStore } from '../../src/fleet/identity/store.js';
import { loadFleetPrivateKey } from '../../src/fleet/keys.js';
import { signTarget } from '../../src/transport/targets.js';
import { startSimulator } from '../helpers/device-sim.js';
import { type Answer, Caller, serveApiOn } from '../helpers/fleet-api.js';
import { FLEET, startFleet, waitFor } from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';

const LOCAL = { kind: 'local' as const, name: 'root', role: 'admin' as const, userId: null };
const apps = (tag: string) => ({ web: { services: { main: { image: `app:${tag}` } } } });

async function setup(t: ExecutionContext) {
  const fleet = await startFleet(t);
  for (const [i, tag] of ['1', '2', '3', '4'].entries()) {
    const img = await putTestImage(fleet.store, { layerSizes: [1000 + i * 100] });
    await fleet.addImage(`app:${tag}`, img.digest, img.mediaType);
  }
  const sim = await startSimulator({
    url: fleet.server.brokerUrl,
    fleet: FLEET,
    ids: ['solo', 'l1', 'l2'],
    groups: (id) => (id === 'solo' ? [] : ['lab']),
    publicKey: createPublicKey(await loadFleetPrivateKey(fleet.dir)),
    account: fleet.server.fleetAccount,
    connections: 1,
    applyMs: 10,
    windowMs: 10,
  });
  t.teardown(() => sim.stop());
  await sim.ready();
  await waitFor(() => fleet.stores.devices.list({ online: true }).total === 3, 20_000, 'devices online');
  const api = await serveApiOn(t, fleet);
  const identity = new IdentityService(new IdentityStore(fleet.stores.db));
  const as = (role: 'viewer' | 'operator' | 'admin') =>
    new Caller(api.server.url, identity.createToken(LOCAL, { name: role, role }).token);
  const operator = as('operator');
  /** deploy and wait until every device of the scope converged on it */
  const converged = async (dep: Answer) => {
    t.is(dep.status, 201, JSON.stringify(dep.body));
    await waitFor(
      async () => {
        const p = (await operator.call('GET', `/deployments/${dep.body.id}/progress`)).body;
        return p.done === true && p.ok === true && (p.total as number) > 0;
      },
      20_000,
      `${dep.body.text} converged`,
    );
    return dep.body as { id: number; version: number; text: string; rolloutId?: number };
  };
  return { fleet, sim, identity, operator, viewer: as('viewer'), admin: as('admin'), converged };
}

test('deploy v1, v2, redeploy v1: the device runs v1 as version 3; history marks it current; audited with the reason', async (t) => {
  const { fleet, sim, operator, viewer, admin, converged } = await setup(t);
  const v1 = await converged(
    await operator.call('POST', '/deployments', { device: 'solo', apps: apps('1'), images: ['app:1'] }),
  );
  const v2 = await converged(
    await operator.call('POST', '/deployments', { device: 'solo', apps: apps('2'), images: ['app:2'] }),
  );
  t.is(sim.state('solo')?.apps.web?.services.main?.image, 'app:2');
  // a viewer may read the history but not redeploy
  t.is((await viewer.call('POST', `/deployments/${v1.id}/redeploy`, {})).status, 403);
  const r = await operator.call('POST', `/deployments/${v1.id}/redeploy`, {
    device: 'solo',
    reason: 'v2 breaks the door sensor',
  });
  t.is(r.status, 201, JSON.stringify(r.body));
  t.like(r.body, {
    scope: { kind: 'device', id: 'solo' },
    version: 3,
    redeployOf: v1.id,
    state: 'published',
  });
  t.deepEqual(r.body.images, [{ name: 'app:1', digest: fleet.stores.images.get('app:1')!.digest }]);
  await converged(r);
  t.like(fleet.stores.devices.get('solo')!.applied, { kind: 'device', id: 'solo', version: 3 });
  t.is(sim.state('solo')?.apps.web?.services.main?.image, 'app:1');
  // history: newest first, the current one marked, the redeploy says what it re-published
  const list = await viewer.call('GET', '/deployments?device=solo');
  t.is(list.status, 200);
  t.deepEqual(
    (list.body.items as Array<Record<string, unknown>>).map((d) => [d.version, d.current, d.redeployOf]),
    [
      [3, true, v1.id],
      [2, false, null],
      [1, false, null],
    ],
  );
  t.is(v2.version, 2);
  const audit = (await admin.call('GET', '/audit?action=deployment.redeploy')).body.items as Array<
    Record<string, unknown>
  >;
  t.deepEqual(
    audit.map((a) => [a.actor, a.result, a.status, a.target, a.message]),
    [
      [
        'token:operator',
        'ok',
        201,
        'device solo 3',
        `redeploy of deployment ${v1.id}: v2 breaks the door sensor`,
      ],
      [
        'token:viewer',
        'PermissionDenied',
        403,
        `${v1.id}`,
        'token:viewer (viewer) may not do this: it needs the operator role',
      ],
    ].map((row) => row as unknown[]),
  );
});

test('refusals: unknown id, another scope, failed, pending, cleared, already current, image gone or changed — nothing published', async (t) => {
  const { fleet, operator, admin } = await setup(t);
  const deploy = (tag: string) =>
    operator.call('POST', '/deployments', { device: 'solo', apps: apps(tag), images: [`app:${tag}`] });
  const v1 = (await deploy('1')).body as { id: number };
  const v3img = (await deploy('3')).body as { id: number };
  const v4img = (await deploy('4')).body as { id: number };
  const v2 = (await deploy('2')).body as { id: number };
  // a failed and a pending deployment of group g9 (the publish failed / never finished)
  const key = await loadFleetPrivateKey(fleet.dir);
  const reserve = (version?: number) =>
    fleet.stores.deployments.reserve(
      { kind: 'group', id: 'g9' },
      (v) =>
        signTarget(
          {
            v: 1,
            fleet: FLEET,
            scope: { kind: 'group', id: 'g9' },
            version: version ?? v,
            issuedAt: new Date().toISOString(),
            images: [],
            apps: {},
          },
          key,
        ),
      { now: Date.now() },
    ).row;
  const failed = reserve();
  fleet.stores.deployments.fail(failed.id);
  const pending = reserve();
  // app:3 is deleted since (not current any more, so the fleet lets it go); app:4 now names other content
  t.is((await operator.call('DELETE', '/images/app%3A3')).status, 204);
  const other = await putTestImage(fleet.store, { layerSizes: [4242] });
  await fleet.addImage('app:4', other.digest, other.mediaType);
  const cleared = (await operator.call('DELETE', '/devices/solo/target')).body as { id: number };
  const redeployed = (await operator.call('POST', `/deployments/${v1.id}/redeploy`, {})).body as {
    id: number;
  };
  t.is(redeployed.id > 0, true);
  const count = () => fleet.stores.deployments.list({ limit: 500 }).items.length;
  const before = count();
  const refused = async (id: number, body: unknown, status: number, code: string, message: RegExp) => {
    const r = await operator.call('POST', `/deployments/${id}/redeploy`, body);
    t.is(r.status, status, JSON.stringify(r.body));
    t.is(r.body.code, code);
    t.regex(r.body.message ?? '', message);
  };
  await refused(999, {}, 404, 'NotFound', /^no deployment 999$/);
  await refused(v2.id, { group: 'lab' }, 409, 'Conflict', /belongs to device solo, not group lab/);
  await refused(v2.id, { device: 'other' }, 409, 'Conflict', /belongs to device solo, not device other/);
  await refused(failed.id, {}, 409, 'Conflict', /group g9 1\) was never published/);
  await refused(pending.id, {}, 409, 'Conflict', /group g9 2\) was not published yet \(pending\)/);
  await refused(cleared.id, {}, 409, 'Conflict', /cleared the device's own target/);
  await refused(redeployed.id, {}, 409, 'Conflict', /is the current version of device solo already/);
  await refused(v1.id, {}, 409, 'Conflict', /device solo runs that release already/);
  await refused(
    v3img.id,
    {},
    404,
    'NotFound',
    /image app:3 of deployment \d+ \(device solo 2\) is no longer in the fleet/,
  );
  await refused(
    v4img.id,
    {},
    409,
    'Conflict',
    /image app:4 is now sha256:[0-9a-f]{64}, deployment \d+ \(device solo 3\) pinned/,
  );
  await refused(v1.id, { reason: 'x'.repeat(501) }, 400, 'InvalidInput', /body\.reason/);
  await refused(v1.id, { group: 'lab', force: true }, 400, 'InvalidInput', /unknown field "force"|force/);
  // the deploy path itself holds a redeploy to the digests it pinned (an image re-pushed after the check)
  t.throws(
    () =>
      fleet.server.services.deploy.validate(
        { apps: apps('1'), images: ['app:1'], digests: { 'app:1': other.digest } },
        { kind: 'device', id: 'solo' },
      ),
    { message: /image app:1 is now sha256:[0-9a-f]{64}, not sha256:[0-9a-f]{64}: the release changed/ },
  );
  t.is(count(), before, 'nothing was published');
  const failures = (await admin.call('GET', '/audit?action=deployment.redeploy&failed=true')).body
    .items as unknown[];
  t.is(failures.length, 12);
});

test('a group redeploy is a one-phase rollout like a group deploy; the group converges to v1 as version 3', async (t) => {
  const { fleet, sim, operator, converged } = await setup(t);
  const v1 = await converged(
    await operator.call('POST', '/deployments', { group: 'lab', apps: apps('1'), images: ['app:1'] }),
  );
  await converged(
    await operator.call('POST', '/deployments', { group: 'lab', apps: apps('2'), images: ['app:2'] }),
  );
  const r = await operator.call('POST', `/deployments/${v1.id}/redeploy`, { group: 'lab' });
  t.is(r.status, 201, JSON.stringify(r.body));
  t.like(r.body, { scope: { kind: 'group', id: 'lab' }, version: 3, text: 'group lab 3', redeployOf: v1.id });
  const rolloutId = r.body.rolloutId as number;
  t.true(Number.isInteger(rolloutId));
  const rollout = await operator.call('GET', `/rollouts/${rolloutId}`);
  t.is(rollout.status, 200);
  t.like(rollout.body, { selection: { kind: 'group', group: 'lab' }, createdBy: 'token:operator' });
  t.is((rollout.body.phases as unknown[]).length, 1);
  await converged(r);
  await waitFor(
    async () => (await operator.call('GET', `/rollouts/${rolloutId}`)).body.state === 'succeeded',
    20_000,
    'rollout succeeded',
  );
  for (const id of ['l1', 'l2']) {
    t.like(fleet.stores.devices.get(id)!.applied, { kind: 'group', id: 'lab', version: 3 });
    t.is(sim.state(id)?.apps.web?.services.main?.image, 'app:1');
  }
});
