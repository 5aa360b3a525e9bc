import test from 'ava';
import { plan } from '../../src/core/planner.js';
import type { CurrentContainer, CurrentState } from '../../src/core/state.js';
import { describeStep, isIdleStep, type Step } from '../../src/core/steps.js';
import {
  containerName,
  parseTarget,
  specHash,
  type Target,
  type TargetInput,
} from '../../src/core/target.js';

const T0 = 1_000_000;

const target = (apps: TargetInput['apps'], version = 1): Target => parseTarget({ version, apps });

function running(
  t: Target,
  app: string,
  service: string,
  extra: Partial<CurrentContainer> = {},
): CurrentContainer {
  const svc = t.apps[app]!.services[service]!;
  const h = specHash(svc);
  return {
    id: containerName(app, service, h),
    app,
    service,
    specHash: h,
    image: svc.image,
    status: 'running',
    startedAt: T0 - 1000,
    health: 'none',
    restarts: 0,
    labels: svc.labels,
    dependsOn: Object.keys(svc.dependsOn),
    ...extra,
  };
}

/** The device's state after a target fully applied: images ready, resources and containers present. */
function converged(t: Target): CurrentState {
  const s: CurrentState = { containers: [], images: {}, volumes: [], networks: [], locks: {} };
  for (const [app, a] of Object.entries(t.apps)) {
    for (const v of Object.keys(a.volumes)) s.volumes.push({ app, name: v });
    const nets = new Set(Object.keys(a.networks));
    for (const [svc, spec] of Object.entries(a.services)) {
      s.images[spec.image] = { fetched: true, unpacked: true };
      s.containers.push(running(t, app, svc));
      if (spec.networkMode === 'bridge' && spec.networks.length === 0) nets.add('default');
    }
    for (const n of nets) s.networks.push({ app, name: n });
  }
  return s;
}

/** A pure model of the device applying a step, to drive plans to convergence in tests. */
function apply(s: CurrentState, step: Step, now: number): CurrentState {
  const c = (id: string) => s.containers.find((x) => x.id === id)!;
  switch (step.kind) {
    case 'fetch':
      s.images[step.image] = { fetched: true, unpacked: false };
      break;
    case 'unpack':
      s.images[step.image] = { fetched: true, unpacked: true };
      break;
    case 'removeImage':
      delete s.images[step.image];
      break;
    case 'cleanup':
      for (const i of step.images) delete s.images[i];
      break;
    case 'createVolume':
      s.volumes.push({ app: step.app, name: step.name });
      break;
    case 'removeVolume':
      s.volumes = s.volumes.filter((v) => !(v.app === step.app && v.name === step.name));
      break;
    case 'createNetwork':
      s.networks.push({ app: step.app, name: step.name });
      break;
    case 'removeNetwork':
      s.networks = s.networks.filter((v) => !(v.app === step.app && v.name === step.name));
      break;
    case 'create':
      s.containers.push({
        id: step.name,
        app: step.app,
        service: step.service,
        specHash: step.specHash,
        image: step.spec.image,
        status: 'created',
        createdAt: now,
        health: 'none',
        restarts: 0,
        labels: step.spec.labels,
        dependsOn: Object.keys(step.spec.dependsOn),
      });
      break;
    case 'start':
      Object.assign(c(step.id), {
        status: 'running',
        startedAt: now,
        restarts: c(step.id).restarts + (step.restart ? 1 : 0),
      });
      break;
    case 'stop':
    case 'kill':
      Object.assign(c(step.id), {
        status: 'stopped',
        finishedAt: now,
        exitCode: step.kind === 'kill' ? 137 : 0,
      });
      break;
    case 'remove':
      s.containers = s.containers.filter((x) => x.id !== step.id);
      break;
    case 'updateMetadata':
      c(step.id).labels = step.labels;
      break;
    case 'wait':
    case 'noop':
      break;
  }
  return s;
}

/** Plan → apply the whole batch → re-plan until converged; returns the batches as strings. */
function converge(
  s: CurrentState,
  t: Target,
  opts: { now?: number; maxRounds?: number; keepImages?: string[] } = {},
) {
  const batches: string[][] = [];
  const now = opts.now ?? T0;
  for (let i = 0; i < (opts.maxRounds ?? 50); i++) {
    const steps = plan(s, t, { now, keepImages: opts.keepImages ?? ['i:1'] }); // i:1 = previous target
    if (steps.length === 0) return { batches, state: s, converged: true };
    batches.push(steps.map(describeStep));
    if (steps.every(isIdleStep)) return { batches, state: s, converged: false };
    for (const st of steps) apply(s, st, now);
  }
  throw new Error(`no convergence: ${JSON.stringify(batches.slice(-3))}`);
}

const empty = (): CurrentState => ({ containers: [], images: {}, volumes: [], networks: [], locks: {} });

const V1 = target({
  shop: {
    services: {
      db: { image: 'db:1', volumes: [{ type: 'volume', source: 'data', target: '/data' }] },
      web: { image: 'web:1', dependsOn: ['db'] },
    },
    volumes: { data: {} },
  },
});

test('fresh install: resources, fetch and unpack, then db before web', (t) => {
  const r = converge(empty(), V1);
  t.true(r.converged);
  const id = (svc: string) => containerName('shop', svc, specHash(V1.apps.shop!.services[svc]!));
  t.deepEqual(r.batches, [
    ['createVolume shop/data', 'createNetwork shop/default', 'fetch db:1', 'fetch web:1'],
    ['unpack db:1', 'unpack web:1'],
    ['create shop/db (' + id('db') + ')', 'wait: shop/web: waiting for db to run'],
    ['start shop/db (' + id('db') + ')', 'wait: shop/web: waiting for db to run'],
    ['create shop/web (' + id('web') + ')'],
    ['start shop/web (' + id('web') + ')'],
  ]);
  t.deepEqual(plan(r.state, V1, { now: T0 }), [], 'a converged device plans nothing');
});

test('noop: a converged device has an empty plan', (t) => {
  t.deepEqual(plan(converged(V1), V1, { now: T0 }), []);
});

test('update changing one service only touches that service (download-then-kill order)', (t) => {
  const V2 = target(
    {
      shop: {
        ...structuredClone(V1.apps.shop!),
        services: { ...V1.apps.shop!.services, web: { ...V1.apps.shop!.services.web!, image: 'web:2' } },
      },
    },
    2,
  );
  const r = converge(converged(V1), V2, { keepImages: ['web:1'] });
  t.true(r.converged);
  const flat = r.batches.flat();
  t.false(
    flat.some((s) => s.includes('shop/db')),
    flat.join('\n'),
  );
  t.deepEqual(
    flat.map((s) => s.split(' (')[0]),
    ['fetch web:2', 'unpack web:2', 'stop shop/web', 'remove shop/web', 'create shop/web', 'start shop/web'],
  );
  t.deepEqual(
    Object.keys(r.state.images).sort(),
    ['db:1', 'web:1', 'web:2'],
    'previous image kept for rollback',
  );
});

test('cleanup collects images that no kept target references', (t) => {
  const V2 = target(
    {
      shop: {
        ...V1.apps.shop!,
        services: { ...V1.apps.shop!.services, web: { ...V1.apps.shop!.services.web!, image: 'web:2' } },
      },
    },
    2,
  );
  const s = converged(V2);
  s.images['web:1'] = { fetched: true, unpacked: true };
  s.images['web:0'] = { fetched: true, unpacked: false };
  const steps = plan(s, V2, { now: T0, keepImages: ['web:1'] });
  t.deepEqual(steps, [{ kind: 'cleanup', images: ['web:0'], keepImages: ['db:1', 'web:1', 'web:2'] }]);
  t.deepEqual(plan(s, V2, { now: T0, keepImages: ['web:1'], cleanup: false }), []);
});

const one = (strategy: string, image: string, extra: Record<string, unknown> = {}) =>
  target(
    { a: { services: { s: { image, update: { strategy, ...extra } } } } } as TargetInput['apps'],
    image === 'i:1' ? 1 : 2,
  );

const order = (r: { batches: string[][] }) =>
  r.batches.map((b) => b.map((s) => s.split(' (')[0]).join(' + '));

test('strategy download-then-kill: fetch and unpack while the old one runs, then kill, then start', (t) => {
  const r = converge(converged(one('download-then-kill', 'i:1')), one('download-then-kill', 'i:2'));
  t.deepEqual(order(r), ['fetch i:2', 'unpack i:2', 'stop a/s', 'remove a/s', 'create a/s', 'start a/s']);
});

test('strategy kill-then-download: kill first, then fetch', (t) => {
  const r = converge(converged(one('kill-then-download', 'i:1')), one('kill-then-download', 'i:2'));
  t.deepEqual(order(r), ['stop a/s', 'remove a/s', 'fetch i:2', 'unpack i:2', 'create a/s', 'start a/s']);
});

test('strategy delete-then-download: kill, delete the old image, then fetch', (t) => {
  const r = converge(converged(one('delete-then-download', 'i:1')), one('delete-then-download', 'i:2'));
  t.deepEqual(order(r), [
    'stop a/s',
    'remove a/s + removeImage i:1',
    'fetch i:2',
    'unpack i:2',
    'create a/s',
    'start a/s',
  ]);
  t.false('i:1' in r.state.images);
});

test('strategy hand-over: new starts before the old one stops; old stopped once the new one is healthy', (t) => {
  const s = converged(one('hand-over', 'i:1'));
  const v2 = one('hand-over', 'i:2', { handoverTimeoutMs: 5000 });
  const r = converge(s, v2);
  t.false(r.converged);
  t.deepEqual(order(r), [
    'fetch i:2',
    'unpack i:2',
    'create a/s',
    'start a/s',
    'wait: a/s: hand-over until healthy',
  ]);
  t.is(r.state.containers.filter((c) => c.status === 'running').length, 2, 'both run during the hand-over');
  // the new one reports healthy: old is stopped gracefully
  r.state.containers.find((c) => c.image === 'i:2')!.health = 'healthy';
  const r2 = converge(r.state, v2);
  t.deepEqual(order(r2), ['stop a/s', 'remove a/s']);
  t.true(r2.converged);
});

test('strategy hand-over: old killed when the hand-over timeout passes without health', (t) => {
  const v2 = one('hand-over', 'i:2', { handoverTimeoutMs: 5000 });
  const r = converge(converged(one('hand-over', 'i:1')), v2);
  const wait = plan(r.state, v2, { now: T0 })[0]!;
  t.deepEqual(wait, { kind: 'wait', reason: 'a/s: hand-over until healthy', until: T0 + 5000 });
  const r2 = converge(r.state, v2, { now: T0 + 5000 });
  t.deepEqual(order(r2), ['kill a/s', 'remove a/s']);
});

test('strategy hand-over: handover-complete written by the new container ends it (an older file does not)', (t) => {
  const v2 = one('hand-over', 'i:2', { handoverTimeoutMs: 60_000 });
  const r = converge(converged(one('hand-over', 'i:1')), v2);
  const fresh = r.state.containers.find((c) => c.image === 'i:2')!;
  // left over from an earlier hand-over: older than the new container
  const stale = { ...r.state, handovers: { a: fresh.createdAt! - 1 } };
  t.deepEqual(
    plan(stale, v2, { now: T0 + 100 }).map((x) => x.kind),
    ['wait'],
  );
  const signalled = { ...r.state, handovers: { a: fresh.createdAt! + 50 } };
  const r2 = converge(signalled, v2, { now: T0 + 100 });
  t.deepEqual(order(r2), ['stop a/s', 'remove a/s'], 'stopped gracefully, long before the timeout');
});

test('update lock held defers the kill; override in the target forces it', (t) => {
  const s = converged(one('download-then-kill', 'i:1'));
  s.locks.a = true;
  const r = converge(s, one('download-then-kill', 'i:2'));
  t.false(r.converged);
  t.deepEqual(order(r), ['fetch i:2', 'unpack i:2', 'wait: update lock held by app a']);
  t.is(r.state.containers[0]!.status, 'running', 'still running while locked');
  const forced = converge(r.state, one('download-then-kill', 'i:2', { overrideLock: true }));
  t.true(forced.converged);
  t.deepEqual(order(forced), ['stop a/s', 'remove a/s', 'create a/s', 'start a/s']);
  // kill-then-download with the lock held does not even start downloading
  const s2 = converged(one('kill-then-download', 'i:1'));
  s2.locks.a = true;
  t.deepEqual(plan(s2, one('kill-then-download', 'i:2'), { now: T0 }), [
    { kind: 'wait', reason: 'update lock held by app a' },
  ]);
});

test('depends_on with condition healthy waits for the dependency health', (t) => {
  const v = target({
    a: { services: { db: { image: 'db' }, web: { image: 'web', dependsOn: { db: 'healthy' } } } },
  });
  const s = converged(v);
  s.containers = s.containers.filter((c) => c.service === 'db');
  s.containers[0]!.health = 'starting';
  t.deepEqual(plan(s, v, { now: T0 }), [{ kind: 'wait', reason: 'a/web: waiting for db to be healthy' }]);
  s.containers[0]!.health = 'healthy';
  t.is(plan(s, v, { now: T0 })[0]!.kind, 'create');
});

test('removal: a removed app is stopped dependents first, then its volumes and networks go', (t) => {
  const r = converge(converged(V1), target({}, 2));
  t.true(r.converged);
  t.deepEqual(order(r), [
    'wait: shop/db: web depends on it + stop shop/web',
    'stop shop/db + remove shop/web',
    'remove shop/db',
    'removeVolume shop/data + removeNetwork shop/default',
    'cleanup db:1, web:1',
  ]);
});

test('rollback plan: going back to the previous target reuses its kept images (no fetch)', (t) => {
  const V2 = target(
    {
      shop: {
        ...V1.apps.shop!,
        services: { ...V1.apps.shop!.services, web: { ...V1.apps.shop!.services.web!, image: 'web:2' } },
      },
    },
    2,
  );
  const s = converged(V2);
  s.images['web:1'] = { fetched: true, unpacked: true };
  const r = converge(s, V1, { keepImages: ['web:2'] });
  t.true(r.converged);
  t.deepEqual(order(r), ['stop shop/web', 'remove shop/web', 'create shop/web', 'start shop/web']);
});

test('volumes and networks: new ones are created before the containers that use them', (t) => {
  const v = target({
    a: {
      services: {
        s: { image: 'i', networks: ['back'], volumes: [{ type: 'volume', source: 'v', target: '/v' }] },
      },
      volumes: { v: {} },
      networks: { back: { internal: true } },
    },
  });
  const s = empty();
  s.images.i = { fetched: true, unpacked: true };
  const steps = plan(s, v, { now: T0 });
  t.deepEqual(
    steps.map((x) => x.kind),
    ['createVolume', 'createNetwork'],
    'create waits for its volume and network',
  );
  t.like(steps[1], { internal: true, name: 'back' });
  // an undeclared volume of a live app goes once the app's containers are current
  const c = converged(v);
  c.volumes.push({ app: 'a', name: 'old' });
  t.deepEqual(plan(c, v, { now: T0 }), [{ kind: 'removeVolume', app: 'a', name: 'old' }]);
});

test('restart policy: a crashed container is restarted with exponential backoff; "no" leaves it', (t) => {
  const v = target({ a: { services: { s: { image: 'i' } } } });
  const s = converged(v);
  Object.assign(s.containers[0]!, { status: 'stopped', exitCode: 1, finishedAt: T0, restarts: 3 });
  t.deepEqual(plan(s, v, { now: T0 + 1000 }), [
    { kind: 'wait', reason: 'a/s: restart backoff', until: T0 + 8000 },
  ]);
  t.like(plan(s, v, { now: T0 + 8000 })[0], { kind: 'start', restart: true });
  const no = target({ a: { services: { s: { image: 'i', restart: { policy: 'no' } } } } });
  const sn = converged(no);
  Object.assign(sn.containers[0]!, { status: 'stopped', exitCode: 1, finishedAt: T0 });
  t.deepEqual(plan(sn, no, { now: T0 + 10_000_000 }), []);
  const onf = target({
    a: { services: { s: { image: 'i', restart: { policy: 'on-failure', maxRetries: 2 } } } },
  });
  const so = converged(onf);
  Object.assign(so.containers[0]!, { status: 'stopped', exitCode: 1, finishedAt: T0, restarts: 2 });
  t.deepEqual(plan(so, onf, { now: T0 + 10_000_000 }), [], 'gave up after max retries');
  so.containers[0]!.stoppedByUser = true;
  so.containers[0]!.restarts = 0;
  t.deepEqual(plan(so, onf, { now: T0 + 10_000_000 }), [], 'stopped by the user stays stopped');
});

test('label-only changes update metadata without recreating the container', (t) => {
  const v = target({ a: { services: { s: { image: 'i', labels: { tier: 'front' } } } } });
  const s = converged(v);
  s.containers[0]!.labels = { tier: 'back' };
  t.deepEqual(plan(s, v, { now: T0 }), [
    { kind: 'updateMetadata', id: s.containers[0]!.id, app: 'a', service: 's', labels: { tier: 'front' } },
  ]);
});

test('two services sharing an image fetch it once', (t) => {
  const v = target({ a: { services: { x: { image: 'same' }, y: { image: 'same' } } } });
  const steps = plan(empty(), v, { now: T0 });
  t.is(steps.filter((s) => s.kind === 'fetch').length, 1);
});

test('a reboot while the new image is still downloading: the old container is restarted (download-then-kill, hand-over)', (t) => {
  for (const strategy of ['download-then-kill', 'hand-over'] as const) {
    const s = converged(one(strategy, 'i:1'));
    const old = s.containers[0]!;
    Object.assign(old, { status: 'stopped', exitCode: -1, finishedAt: T0 - 5000 });
    const v2 = one(strategy, 'i:2');
    t.deepEqual(
      plan(s, v2, { now: T0 }).map(describeStep),
      [`restart a/s (${old.id})`, 'fetch i:2'],
      `${strategy}: the old version serves while the new one is fetched`,
    );
    // inside the restart backoff: a wait, the fetch goes on
    const early = plan(s, v2, { now: T0 - 4500 });
    t.deepEqual(
      early.map((x) => x.kind),
      ['wait', 'fetch'],
    );
    // once the image is there, the strategy goes on as usual: the stopped old one is retired, not restarted
    s.images['i:2'] = { fetched: true, unpacked: true };
    t.false(
      plan(s, v2, { now: T0 }).some((x) => x.kind === 'start' && x.id === old.id),
      `${strategy}: no restart of the old one once the new image is ready`,
    );
  }
});
