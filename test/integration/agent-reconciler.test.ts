/**
 * The reconcile loop against FAKE ports (test/helpers/agent-fakes.ts) and a real SQLite file: convergence,
 * single-flight, backoff, health-window rollback, crash-between-steps recovery, offline restart, no space.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { type AgentEvent, Reconciler, type ReconcilerOptions } from '../../src/agent/reconciler.js';
import { AgentStore } from '../../src/agent/store.js';
import { parseTarget, type TargetInput } from '../../src/core/target.js';
import { openDatabase } from '../../src/db/database.js';
import { unavailable } from '../../src/lib/errors.js';
import { silentLogger } from '../../src/lib/logger.js';
import { Crash, FakeClock, FakeDevice, flush } from '../helpers/agent-fakes.js';

const MiB = 1024 * 1024;

function world(t: { teardown: (fn: () => void) => void }) {
  const dir = mkdtempSync(path.join(tmpdir(), 'berth-agent-'));
  const clock = new FakeClock();
  const device = new FakeDevice(clock);
  for (const [ref, size] of [
    ['db:1', 20 * MiB],
    ['web:1', 10 * MiB],
    ['web:2', 10 * MiB],
    ['web:3', 10 * MiB],
  ] as const)
    device.registry.set(ref, size);
  const dbs: Array<{ close(): void }> = [];
  t.teardown(() => {
    for (const d of dbs) d.close();
  });
  const events: Array<AgentEvent & { at: number }> = [];
  const make = (opts: Partial<ReconcilerOptions> = {}) => {
    const db = openDatabase(path.join(dir, 'berth.db'));
    dbs.push(db);
    const store = new AgentStore(db);
    const rec = new Reconciler({
      ports: device.ports,
      store,
      clock,
      log: silentLogger(),
      emit: (e) => events.push(e),
      healthWindowMs: 30_000,
      random: () => 1, // the backoff's jitter pinned to its full step (a test sets its own)
      ...opts,
    });
    return { rec, store, db };
  };
  return { dir, clock, device, make, events };
}

const v = (version: number, web: string, extra: Record<string, unknown> = {}) =>
  parseTarget({
    version,
    apps: {
      shop: {
        services: {
          db: { image: 'db:1', volumes: [{ type: 'volume', source: 'data', target: '/data' }] },
          web: { image: web, dependsOn: ['db'], ...extra },
        },
        volumes: { data: {} },
      },
    },
  } as TargetInput);

test('converges a fresh device, then an update touches only the changed service', async (t) => {
  const w = world(t);
  const { rec, store } = w.make();
  rec.start();
  rec.setTarget(v(1, 'web:1'));
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'converged', version: 1 });
  t.deepEqual(
    w.device.running().map((x) => x.split('_').slice(0, 2).join('_')),
    ['shop_db', 'shop_web'],
  );
  t.is(store.getTarget('current')?.status, 'converged');
  // health window passes
  await w.clock.advance(30_000);
  await rec.idle();
  t.is(store.getTarget('current')?.status, 'healthy');
  t.true(w.events.some((e) => e.type === 'rollout-healthy'));

  const before = w.device.calls.length;
  rec.setTarget(v(2, 'web:2'));
  await rec.idle();
  const ops = w.device.calls.slice(before).map((c) => `${c.op} ${c.id.split('_').slice(0, 2).join('_')}`);
  t.deepEqual(ops, [
    'fetch web:2',
    'unpack web:2',
    'stop shop_web',
    'remove shop_web',
    'create shop_web',
    'start shop_web',
  ]);
  t.is(store.getTarget('previous')?.target.version, 1);
  t.true(w.device.images.has('web:1'), 'previous target images are kept');
  await rec.stop();
});

test('single-flight: concurrent triggers never run two batches at once', async (t) => {
  const w = world(t);
  w.device.latencyTurns = 3;
  const { rec } = w.make();
  rec.start();
  rec.setTarget(v(1, 'web:1'));
  const outs = await Promise.all([rec.trigger(), rec.trigger(), rec.trigger(), rec.trigger(), rec.trigger()]);
  await rec.idle();
  t.is(w.device.maxActive, 1, 'one device operation at a time');
  t.true(
    outs.every((o) => o === outs[0]),
    'triggers during a run share it',
  );
  t.true(rec.stats.runs <= 3, `runs: ${rec.stats.runs}`);
  t.like(rec.lastOutcome, { status: 'converged' });
  await rec.stop();
});

test('errors back off exponentially up to the cap, and progress resets the backoff', async (t) => {
  const w = world(t);
  const { rec } = w.make({ minDelayMs: 1000, maxDelayMs: 8000 });
  w.device.failures.set('fetch', new Error('broker unreachable'));
  rec.start();
  rec.setTarget(v(1, 'web:1'));
  await rec.idle();
  const delays: number[] = [];
  for (let i = 0; i < 6; i++) {
    const d = w.clock.pending()[0]!;
    delays.push(d);
    await w.clock.advance(d);
    await rec.idle();
  }
  t.deepEqual(delays, [1000, 2000, 4000, 8000, 8000, 8000]);
  t.like(rec.lastOutcome, { status: 'error' });
  t.regex((rec.lastOutcome as { error: Error }).error.message, /fetch (db|web):1: broker unreachable/);
  w.device.failures.delete('fetch');
  await w.clock.advance(w.clock.pending()[0]!);
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'converged' });
  await rec.stop();
});

test('a pull failing under load backs off to 60 s at most, jittered; a retry starts over from the first delay', async (t) => {
  const w = world(t);
  let r = 0;
  const randoms = [0, 0.5, 1, 0.25, 0.75];
  const { rec } = w.make({ random: () => randoms[r++ % randoms.length]! }); // the defaults: 1 s … 60 s
  w.device.failures.set('fetch', unavailable('fleet overloaded'));
  rec.start();
  rec.setTarget(v(1, 'web:1'));
  await rec.idle();
  const delays: number[] = [];
  for (let i = 0; i < 12; i++) {
    const d = w.clock.pending()[0]!;
    t.is(rec.retry?.at, w.clock.now() + d, 'the retry shown is the one scheduled');
    delays.push(d);
    await w.clock.advance(d);
    await rec.idle();
  }
  t.deepEqual(delays.slice(0, 3), [500, 1500, 4000], 'half to all of 1 s, 2 s, 4 s');
  t.true(
    delays.slice(6).every((d) => d >= 30_000 && d <= 60_000),
    `capped at 60 s with jitter: ${delays}`,
  );
  t.true(new Set(delays.slice(6)).size > 1, 'jittered, not lockstep');
  t.like(rec.retry, { attempt: 13 });
  t.regex(rec.retry!.lastError!, /^Unavailable: fetch (db|web):1: fleet overloaded$/);

  // Something changed that may cure it (here it did not): the next try is now, and its failure waits
  // the first delay again, not another minute.
  const out = await rec.retryNow('test');
  t.like(out, { status: 'error' });
  t.like(rec.retry, { attempt: 1 });
  t.true(w.clock.pending()[0]! <= 1000, `first delay again: ${w.clock.pending()[0]}`);
  w.device.failures.delete('fetch');
  await w.clock.advance(w.clock.pending()[0]!);
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'converged' });
  t.is(rec.retry, undefined, 'nothing pending once converged');
  await rec.stop();
});

test('no space: freeing disk space retries at once instead of at the end of the backoff', async (t) => {
  const w = world(t);
  const { rec } = w.make({ reserveBytes: 8 * MiB, minDelayMs: 60_000, maxDelayMs: 60_000 });
  w.device.available = 25 * MiB;
  rec.start();
  rec.setTarget(v(1, 'web:1'));
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'error', error: { code: 'NoSpace' } });
  t.like(rec.retry, { at: w.clock.now() + 60_000, attempt: 1 });
  await w.clock.advance(10_000);
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'error', error: { code: 'NoSpace' } }, 'nothing freed: still waiting');
  const runs = rec.stats.runs;
  w.device.available = 1024 * MiB; // the operator cleaned up
  await w.clock.advance(5_000);
  await rec.idle();
  t.is(rec.stats.runs, runs + 1, 'one run, 15 s after the failure, not 60 s');
  t.like(rec.lastOutcome, { status: 'converged', version: 1 });
  await rec.stop();
  t.deepEqual(w.clock.pending(), [], 'stop leaves no timer behind');
});

test('noop-only plans (update lock held) back off exponentially; the app keeps running', async (t) => {
  const w = world(t);
  const { rec } = w.make({ minDelayMs: 500, maxDelayMs: 4000 });
  rec.start();
  rec.setTarget(v(1, 'web:1'));
  await rec.idle();
  w.device.heldLocks.add('shop');
  rec.setTarget(v(2, 'web:2'));
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'waiting', reasons: ['wait: update lock held by app shop'] });
  const delays: number[] = [];
  for (let i = 0; i < 5; i++) {
    const d = w.clock.pending()[0]!;
    delays.push(d);
    await w.clock.advance(d);
    await rec.idle();
  }
  t.deepEqual(delays, [500, 1000, 2000, 4000, 4000]);
  t.true(
    w.device.running().some((id) => w.device.containers.get(id)!.image === 'web:1'),
    'old version untouched',
  );
  t.true(w.device.images.get('web:2')?.unpacked, 'download happened while waiting');
  t.deepEqual(rec.waiting, ['wait: update lock held by app shop'], 'why it waits, for the reported state');
  t.deepEqual(
    w.events.filter((e) => e.type === 'waiting'),
    [
      {
        type: 'waiting',
        reasons: ['wait: update lock held by app shop'],
        at: w.events.find((e) => e.type === 'waiting')!.at,
      },
    ],
    'one waiting event for six blocked runs',
  );
  w.device.heldLocks.delete('shop');
  await w.clock.advance(w.clock.pending()[0]!);
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'converged', version: 2 });
  t.deepEqual(rec.waiting, []);
  await rec.stop();
});

test('a crash in the health window rolls back to the previous target and reports why', async (t) => {
  const w = world(t);
  const { rec, store } = w.make();
  rec.start();
  rec.setTarget(v(1, 'web:1'));
  await rec.idle();
  await w.clock.advance(30_000);
  await rec.idle();
  rec.setTarget(v(2, 'web:3'));
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'converged', version: 2 });
  const web3 = w.device.running().find((id) => w.device.containers.get(id)!.image === 'web:3')!;
  await w.clock.advance(5000);
  w.device.exit(web3, 139);
  await rec.trigger();
  await rec.idle();
  const rb = w.events.find((e) => e.type === 'rollback');
  t.truthy(rb);
  t.like(rb, { from: { version: 2 }, to: { version: 1 } });
  t.regex((rb as { reason: string }).reason, /shop\/web: exited with code 139/);
  t.is(store.getTarget('current')?.target.version, 1);
  t.regex(store.getTarget('current')?.reason ?? '', /rollback from local 2/);
  t.true(w.device.running().some((id) => w.device.containers.get(id)!.image === 'web:1'));
  t.false(w.device.running().some((id) => w.device.containers.get(id)!.image === 'web:3'));
  t.false(rec.setTarget(v(2, 'web:3')), 'the failed version is not applied again');
  t.true(w.events.some((e) => e.type === 'target-ignored' && /rolled back before/.test(e.reason)));
  t.regex(
    store.getTarget('current')?.reason ?? '',
    /exited with code 139/,
    'the why stays on record for the report',
  );
  await rec.stop();
});

test('an unhealthy exec health check in the window rolls back; healthy passes', async (t) => {
  const w = world(t);
  const { rec, store } = w.make({ healthWindowMs: 20_000 });
  const check = { probe: { type: 'exec', command: ['check'] }, intervalMs: 1000, timeoutMs: 500, retries: 2 };
  rec.start();
  rec.setTarget(v(1, 'web:1', { healthcheck: check }));
  await rec.idle();
  for (let i = 0; i < 25; i++) await w.clock.advance(1000);
  await rec.idle();
  t.is(store.getTarget('current')?.status, 'healthy');
  w.device.execHandler = (id) => (w.device.containers.get(id)?.image === 'web:2' ? 1 : 0);
  rec.setTarget(v(2, 'web:2', { healthcheck: check }));
  await rec.idle();
  for (let i = 0; i < 10; i++) await w.clock.advance(1000);
  await rec.idle();
  const rb = w.events.find((e) => e.type === 'rollback');
  t.like(rb, { from: { version: 2 }, to: { version: 1 } });
  t.regex((rb as { reason: string }).reason, /health check failed/);
  await rec.stop();
});

test('no space: the update is refused whole with a NoSpace error; the running app is untouched', async (t) => {
  const w = world(t);
  const { rec, store } = w.make({ reserveBytes: 8 * MiB });
  rec.start();
  rec.setTarget(v(1, 'web:1'));
  await rec.idle();
  w.device.available = 25 * MiB; // web:2 needs 10 fetch + 10 unpack + 8 reserve
  const before = w.device.calls.length;
  rec.setTarget(v(2, 'web:2', { update: { strategy: 'kill-then-download' } }));
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'error' });
  const err = (rec.lastOutcome as { error: { code: string; message: string } }).error;
  t.is(err.code, 'NoSpace');
  t.regex(err.message, /need 20\.0 MiB plus 8\.0 MiB reserve, 25\.0 MiB available \(web:2/);
  t.deepEqual(w.device.calls.slice(before), [], 'no step ran (not even the kill of kill-then-download)');
  t.is(w.device.running().length, 2);
  t.regex(store.apps().find((a) => a.name === 'shop')!.lastError!, /not enough disk space/);
  w.device.available = 1024 * MiB;
  await w.clock.advance(w.clock.pending()[0]!);
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'converged', version: 2 });
  await rec.stop();
});

test('crash between any two steps: a new agent over the same SQLite file converges to the same state', async (t) => {
  // reference run
  const ref = world(t);
  const r0 = ref.make();
  r0.rec.start();
  r0.rec.setTarget(v(1, 'web:1'));
  await r0.rec.idle();
  r0.rec.setTarget(v(2, 'web:2', { update: { strategy: 'hand-over', handoverTimeoutMs: 0 } }));
  await r0.rec.idle();
  const expected = ref.device.running();
  const totalOps = ref.device.calls.length;
  await r0.rec.stop();
  t.true(totalOps > 10);

  for (let crashAt = 0; crashAt < totalOps; crashAt += 2) {
    const w = world(t);
    w.device.crashAfter = crashAt;
    const a = w.make();
    a.rec.start();
    a.rec.setTarget(v(1, 'web:1'));
    await a.rec.idle();
    a.rec.setTarget(v(2, 'web:2', { update: { strategy: 'hand-over', handoverTimeoutMs: 0 } }));
    await a.rec.idle();
    await a.rec.stop(); // the agent "dies"
    w.device.crashAfter = undefined;
    const b = w.make(); // new process, same database and device
    b.rec.start();
    await b.rec.idle();
    for (let i = 0; i < 5 && b.rec.lastOutcome?.status !== 'converged'; i++) {
      await w.clock.advance(w.clock.pending()[0] ?? 1000);
      await b.rec.idle();
    }
    t.like(b.rec.lastOutcome, { status: 'converged', version: 2 }, `crash after ${crashAt} ops`);
    t.deepEqual(w.device.running(), expected, `crash after ${crashAt} ops`);
    await b.rec.stop();
  }
});

test('offline reboot: with no broker and no new target, the last applied target comes back from SQLite', async (t) => {
  const w = world(t);
  const a = w.make();
  a.rec.start();
  a.rec.setTarget(v(1, 'web:1'));
  await a.rec.idle();
  const running = w.device.running();
  await a.rec.stop();
  w.device.reboot();
  t.deepEqual(w.device.running(), []);
  const b = w.make(); // no setTarget: nothing from the fleet
  b.rec.start();
  await b.rec.idle();
  for (let i = 0; i < 5 && w.device.running().length < 2; i++) {
    await w.clock.advance(w.clock.pending()[0] ?? 1000);
    await b.rec.idle();
  }
  t.deepEqual(w.device.running(), running);
  await b.rec.stop();
});

test('the interrupted step of a killed agent is reported at start', async (t) => {
  const w = world(t);
  const a = w.make();
  w.device.crashAfter = 3;
  a.rec.start();
  a.rec.setTarget(v(1, 'web:1'));
  await a.rec.idle();
  t.like(a.rec.lastOutcome, { status: 'error' });
  // a Crash leaves the intent behind only if the process really died; simulate by re-recording it
  a.store.beginStep({ kind: 'unpack', image: 'web:1' }, w.clock.now());
  await a.rec.stop();
  w.device.crashAfter = undefined;
  const b = w.make();
  b.rec.start();
  await b.rec.idle();
  t.true(w.events.some((e) => e.type === 'interrupted' && e.steps.includes('unpack web:1')));
  await flush();
  await b.rec.stop();
  t.true(Crash.name === 'Crash');
});

test('GC: images two targets back are collected; the previous target and hand-pulled images are kept', async (t) => {
  const w = world(t);
  w.device.images.set('tool:1', { fetched: true, unpacked: true, size: 1 }); // `berth pull` by hand
  const { rec } = w.make();
  rec.start();
  for (const [version, web] of [
    [1, 'web:1'],
    [2, 'web:2'],
    [3, 'web:3'],
  ] as const) {
    rec.setTarget(v(version, web));
    await rec.idle();
    await w.clock.advance(30_000);
    await rec.idle();
  }
  t.deepEqual([...w.device.images.keys()].sort(), ['db:1', 'tool:1', 'web:2', 'web:3']);
  t.true(w.device.calls.some((c) => c.op === 'gc' && c.id === 'web:1'));
  await rec.stop();
});

test('hand-over through the health monitor: the old container stops once the new one passes its check', async (t) => {
  const w = world(t);
  const { rec } = w.make();
  const check = { probe: { type: 'exec', command: ['ready'] }, intervalMs: 1000, timeoutMs: 500, retries: 1 };
  const update = { strategy: 'hand-over', handoverTimeoutMs: 60_000 };
  rec.start();
  rec.setTarget(v(1, 'web:1', { healthcheck: check, update }));
  await rec.idle();
  await w.clock.advance(31_000);
  await rec.idle();
  let ready = false;
  w.device.execHandler = (id) => (w.device.containers.get(id)?.image === 'web:2' && !ready ? 1 : 0);
  rec.setTarget(v(2, 'web:2', { healthcheck: check, update }));
  await rec.idle();
  await w.clock.advance(3000);
  await rec.idle();
  const images = () =>
    w.device
      .running()
      .map((id) => w.device.containers.get(id)!.image)
      .sort();
  t.deepEqual(
    images(),
    ['db:1', 'web:1', 'web:2'],
    'old and new run side by side while the new one is not ready',
  );
  ready = true;
  await w.clock.advance(1000);
  await rec.idle();
  await w.clock.advance(10);
  await rec.idle();
  t.deepEqual(images(), ['db:1', 'web:2'], 'old one stopped after the hand-over');
  const stop = w.device.calls.find((c) => c.op === 'stop')!;
  const start2 = w.device.calls.filter((c) => c.op === 'start').at(-1)!;
  t.true(start2.at < stop.at, 'new started before old stopped');
  await rec.stop();
});

test('no space at first, but collecting old images of the agent makes room: the update goes on', async (t) => {
  const w = world(t);
  const { rec } = w.make({ reserveBytes: 0 });
  rec.start();
  for (const [version, web] of [
    [1, 'web:1'],
    [2, 'web:2'],
  ] as const) {
    rec.setTarget(v(version, web));
    await rec.idle();
    await w.clock.advance(30_000);
    await rec.idle();
  }
  // web:1 is the previous target's (kept); pretend an older target left web:0 behind
  w.device.images.set('web:0', { fetched: true, unpacked: true, size: 40 * MiB });
  (
    rec as unknown as { opts: { store: { addManagedImage(i: string, n: number): void } } }
  ).opts.store.addManagedImage('web:0', 0);
  w.device.available = 5 * MiB; // web:3 needs 20 MiB; collecting web:0 frees 80
  rec.setTarget(v(3, 'web:3'));
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'converged', version: 3 });
  t.false(w.device.images.has('web:0'));
  t.true(w.device.images.has('web:2'), 'the previous target is kept');
  await rec.stop();
});

test('reboot inside the health window of v2: v2 comes back, no rollback; the window starts over and still catches a crash', async (t) => {
  const w = world(t);
  const images = () => w.device.running().map((id) => w.device.containers.get(id)!.image);
  const settle = async (rec: Reconciler, until: () => boolean) => {
    for (let i = 0; i < 20 && !until(); i++) {
      await w.clock.advance(w.clock.pending()[0] ?? 1000);
      await rec.idle();
    }
  };
  const a = w.make();
  a.rec.start();
  a.rec.setTarget(v(1, 'web:1'));
  await a.rec.idle();
  await w.clock.advance(30_000);
  await a.rec.idle();
  a.rec.setTarget(v(2, 'web:3'));
  await a.rec.idle();
  t.like(a.rec.lastOutcome, { status: 'converged', version: 2 });
  await w.clock.advance(5000);

  // power cut 5 s into v2's window: every container dies while no agent watches
  await a.rec.stop();
  w.device.reboot();
  const b = w.make();
  b.rec.start();
  await b.rec.idle();
  await settle(b.rec, () => images().length === 2);
  t.deepEqual(images().sort(), ['db:1', 'web:3'], 'v2 is back');
  t.false(
    w.events.some((e) => e.type === 'rollback' || e.type === 'rollout-failed'),
    'a reboot is not a failed rollout',
  );
  t.like(b.store.getTarget('current'), { status: 'converged', target: { version: 2 } });
  t.is(b.store.getRollout()?.convergedAt, w.clock.now(), 'the window started over once v2 was back');

  // the new window still judges: a crash in it rolls back to v1
  await w.clock.advance(5000);
  await b.rec.idle();
  w.device.exit(w.device.running().find((id) => w.device.containers.get(id)!.image === 'web:3')!, 139);
  await b.rec.trigger();
  await b.rec.idle();
  t.like(
    w.events.find((e) => e.type === 'rollback'),
    { from: { version: 2 }, to: { version: 1 } },
  );
  await settle(b.rec, () => images().includes('web:1'));
  t.deepEqual(images().sort(), ['db:1', 'web:1']);
  await b.rec.stop();
});

test('offline after a reboot mid-update: the image cannot be sized, so nothing is fetched; the old version runs again; no error', async (t) => {
  const w = world(t);
  const a = w.make();
  a.rec.start();
  a.rec.setTarget(v(1, 'web:1'));
  await a.rec.idle();
  await a.rec.stop();
  w.device.reboot();
  const missing = w.device.imageService.missingBytes;
  w.device.imageService.missingBytes = async () => {
    throw unavailable('cannot describe image web:3: not connected to the fleet');
  };
  const b = w.make();
  b.store.receiveTarget(v(2, 'web:3'), w.clock.now()); // arrived before the reboot, never applied
  w.device.calls = [];
  b.rec.start();
  await b.rec.idle();
  for (let i = 0; i < 5 && w.device.running().length < 2; i++) {
    await w.clock.advance(w.clock.pending()[0] ?? 1000);
    await b.rec.idle();
  }
  const images = () => w.device.running().map((id) => w.device.containers.get(id)!.image);
  t.deepEqual(images().sort(), ['db:1', 'web:1'], 'the running version is back');
  t.false(
    w.device.calls.some((c) => c.op === 'fetch'),
    'nothing fetched before the space check',
  );
  t.like(b.rec.lastOutcome, { status: 'waiting' });
  t.regex(
    (b.rec.lastOutcome as { reasons: string[] }).reasons.join('; '),
    /fetch web:3: disk space not checked yet \(cannot describe image web:3: not connected/,
  );
  t.false(
    w.events.some((e) => e.type === 'error'),
    'waiting for the fleet is not an error',
  );

  // the fleet is back: sized, checked, fetched, updated
  w.device.imageService.missingBytes = missing;
  await b.rec.trigger();
  await b.rec.idle();
  t.like(b.rec.lastOutcome, { status: 'converged', version: 2 });
  t.deepEqual(images().sort(), ['db:1', 'web:3']);
  await b.rec.stop();
});
