/** What a redeploy may publish and what it becomes (src/fleet/services/redeploy.ts, pure). */
import test from 'ava';
import {
  planRedeploy,
  type RedeploySource,
  redeployNote,
  sameRelease,
} from '../../src/fleet/services/redeploy.js';
import type { SignedTarget } from '../../src/transport/messages.js';

const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;

function signed(
  version: number,
  images: Array<{ name: string; digest: string }>,
  apps: unknown,
): SignedTarget {
  return {
    v: 1,
    target: {
      v: 1,
      fleet: 'f',
      scope: { kind: 'group', id: 'lab' },
      version,
      issuedAt: new Date(version * 1000).toISOString(),
      images,
      apps: apps as SignedTarget['target']['apps'],
    },
    signature: { alg: 'ed25519', keyId: 'k', sig: 'AA==' },
  } as SignedTarget;
}

const appsV1 = { web: { services: { web: { image: 'app:1', env: { A: '1', B: '2' } } } } };
const source = (o: Partial<RedeploySource> = {}): RedeploySource => ({
  id: 5,
  scope: { kind: 'group', id: 'lab' },
  version: 1,
  cleared: false,
  state: 'published',
  signed: signed(1, [{ name: 'app:1', digest: A }], appsV1),
  ...o,
});
const fleetHas = (m: Record<string, string>) => (name: string) => m[name];

test('a published release becomes its apps and images, pinned to the digests it published', (t) => {
  const current = { id: 9, cleared: false, signed: signed(2, [{ name: 'app:2', digest: B }], {}) };
  t.deepEqual(planRedeploy(source(), { current, imageDigest: fleetHas({ 'app:1': A }) }), {
    apps: appsV1,
    images: ['app:1'],
    digests: { 'app:1': A },
  });
  // no current target at all (a scope whose override was cleared since) is fine too
  t.is(planRedeploy(source(), { imageDigest: fleetHas({ 'app:1': A }) }).images[0], 'app:1');
});

test('refusals name what was wrong', (t) => {
  const has = fleetHas({ 'app:1': A });
  t.throws(() => planRedeploy(source({ state: 'failed' }), { imageDigest: has }), {
    message: /deployment 5 \(group lab 1\) was never published/,
  });
  t.throws(() => planRedeploy(source({ state: 'pending' }), { imageDigest: has }), {
    message: /not published yet \(pending\)/,
  });
  t.throws(
    () => planRedeploy(source({ scope: { kind: 'device', id: 'd1' }, cleared: true }), { imageDigest: has }),
    { message: /deployment 5 \(device d1 1\) cleared the device's own target/ },
  );
  t.throws(() => planRedeploy(source(), { expect: { kind: 'group', id: 'prod' }, imageDigest: has }), {
    message: /belongs to group lab, not group prod/,
  });
  t.throws(() => planRedeploy(source(), { imageDigest: fleetHas({}) }), {
    message: /image app:1 of deployment 5 \(group lab 1\) is no longer in the fleet/,
  });
  const moved = t.throws(() => planRedeploy(source(), { imageDigest: fleetHas({ 'app:1': B }) }));
  t.regex(moved?.message ?? '', new RegExp(`image app:1 is now ${B}, deployment 5 .* pinned ${A}`));
  t.is((moved as { code?: string }).code, 'Conflict');
});

test('the release the scope runs already is refused: the same deployment, or another with the same content', (t) => {
  const has = fleetHas({ 'app:1': A });
  t.throws(
    () =>
      planRedeploy(source(), {
        current: { id: 5, cleared: false, signed: source().signed },
        imageDigest: has,
      }),
    { message: /is the current version of group lab already/ },
  );
  // version 3 re-published version 1: redeploying 1 again changes nothing
  const same = signed(3, [{ name: 'app:1', digest: A }], {
    web: { services: { web: { env: { B: '2', A: '1' }, image: 'app:1' } } },
  });
  t.throws(
    () => planRedeploy(source(), { current: { id: 7, cleared: false, signed: same }, imageDigest: has }),
    {
      message: /runs that release already \(its current version 3/,
    },
  );
  // a cleared current target is no release: going back to one is allowed
  t.notThrows(() =>
    planRedeploy(source(), { current: { id: 7, cleared: true, signed: same }, imageDigest: has }),
  );
});

test('sameRelease: apps and image digests decide, not version, time or order', (t) => {
  const a = signed(
    1,
    [
      { name: 'x:1', digest: A },
      { name: 'y:1', digest: B },
    ],
    appsV1,
  );
  const b = signed(
    4,
    [
      { name: 'y:1', digest: B },
      { name: 'x:1', digest: A },
    ],
    appsV1,
  );
  t.true(sameRelease(a, b));
  t.false(
    sameRelease(
      a,
      signed(
        1,
        [
          { name: 'x:1', digest: A },
          { name: 'y:1', digest: A },
        ],
        appsV1,
      ),
    ),
  );
  t.false(sameRelease(a, signed(1, a.target.images, { web: { services: {} } })));
});

test('the audit note: which deployment, and the reason on one line', (t) => {
  t.is(redeployNote(5, undefined), 'redeploy of deployment 5');
  t.is(redeployNote(5, '  v2 breaks\nthe door  '), 'redeploy of deployment 5: v2 breaks the door');
});
