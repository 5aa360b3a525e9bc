/**
 * A reboot (or power cut) while a new target is on probation, against FAKE ports and a real SQLite file:
 * the containers the reboot killed and the restarts that bring them back are not the new version
 * failing, so there is no rollback; the health window starts over, and a real crash in it still rolls
 * back. (The real-stack reboot is in agent-resilience.test.ts.)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { type AgentEvent, Reconciler } from '../../src/agent/reconciler.js';
import { AgentStore } from '../../src/agent/store.js';
import { parseTarget } from '../../src/core/target.js';
import { openDatabase } from '../../src/db/database.js';
import { silentLogger } from '../../src/lib/logger.js';
import { FakeClock, FakeDevice } from '../helpers/agent-fakes.js';

const WINDOW = 30_000;
const target = (version: number, image: string) =>
  parseTarget({ version, apps: { hello: { services: { web: { image } } } } });

test('reboot inside the health window of v2: v2 comes back, no rollback; the window starts over and still catches a crash', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'berth-reboot-window-'));
  const clock = new FakeClock();
  const device = new FakeDevice(clock);
  device.registry.set('web:1', 1 << 20);
  device.registry.set('web:2', 1 << 20);
  const events: Array<AgentEvent & { at: number }> = [];
  const dbs: Array<{ close(): void }> = [];
  t.teardown(() => {
    for (const d of dbs) d.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const agent = () => {
    const db = openDatabase(path.join(dir, 'berth.db'));
    dbs.push(db);
    const store = new AgentStore(db);
    const rec = new Reconciler({
      ports: device.ports,
      store,
      clock,
      log: silentLogger(),
      emit: (e) => events.push(e),
      healthWindowMs: WINDOW,
    });
    return { rec, store };
  };
  const runningImages = () => device.running().map((id) => device.containers.get(id)!.image);
  const settle = async (rec: Reconciler, until: () => boolean) => {
    for (let i = 0; i < 20 && !until(); i++) {
      await clock.advance(clock.pending()[0] ?? 1000);
      await rec.idle();
    }
  };

  const a = agent();
  a.rec.start();
  a.rec.setTarget(target(1, 'web:1'));
  await a.rec.idle();
  await clock.advance(WINDOW);
  await a.rec.idle();
  t.true(events.some((e) => e.type === 'rollout-healthy' && e.version === 1));
  a.rec.setTarget(target(2, 'web:2'));
  await a.rec.idle();
  t.like(a.rec.lastOutcome, { status: 'converged', version: 2 });
  await clock.advance(5000);

  // power cut 5 s into v2's window: every container dies without its agent watching
  await a.rec.stop();
  device.reboot();
  t.deepEqual(device.running(), []);
  const b = agent();
  b.rec.start();
  await b.rec.idle();
  await settle(b.rec, () => runningImages().includes('web:2'));
  t.deepEqual(runningImages(), ['web:2'], 'v2 is back');
  t.false(
    events.some((e) => e.type === 'rollback' || e.type === 'rollout-failed'),
    'a reboot is not a failed rollout',
  );
  t.is(b.store.getTarget('current')?.target.version, 2);
  t.is(b.store.getTarget('current')?.status, 'converged', 'still on probation');
  const restartedAt = clock.now();
  t.is(b.store.getRollout()?.convergedAt, restartedAt, 'the window started over when v2 was back');

  // the new window still judges: a crash inside it rolls back to v1
  await clock.advance(5000);
  await b.rec.idle();
  const web2 = device.running().find((id) => device.containers.get(id)!.image === 'web:2')!;
  device.exit(web2, 139);
  await b.rec.trigger();
  await b.rec.idle();
  t.like(
    events.find((e) => e.type === 'rollback'),
    { from: 2, to: 1 },
  );
  await settle(b.rec, () => runningImages().includes('web:1'));
  t.deepEqual(runningImages(), ['web:1']);
  await b.rec.stop();
});
