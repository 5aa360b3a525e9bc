import test from 'ava';
import { PageOut } from '../../src/agent/memory.js';
import { BerthError } from '../../src/lib/errors.js';
import { silentLogger } from '../../src/lib/logger.js';
import { ManualClock } from '../helpers/manual-clock.js';

const turn = () => new Promise<void>((r) => setImmediate(r));

function rig(afterMs = 30_000, fail?: BerthError) {
  const clock = new ManualClock();
  const calls: number[] = [];
  const p = new PageOut({
    afterMs,
    clock,
    log: silentLogger(),
    run: async () => {
      calls.push(clock.now());
      if (fail) throw fail;
      return { bytes: 4096, ranges: 1 };
    },
  });
  return { clock, calls, p, t0: clock.now() };
}

test('pages go back afterMs after the start, once', async (t) => {
  const { clock, calls, p, t0 } = rig();
  p.start();
  clock.advance(29_999);
  await turn();
  t.deepEqual(calls, []);
  clock.advance(1);
  await turn();
  t.deepEqual(calls, [t0 + 30_000]);
  clock.advance(10 * 60_000);
  await turn();
  t.is(calls.length, 1, 'no periodic page-out of the working set');
  t.is(p.done, 1);
  t.is(p.lastBytes, 4096);
});

test('a converge to a new version re-arms it; the periodic passes of the same version do not', async (t) => {
  const { clock, calls, p, t0 } = rig();
  p.start();
  clock.advance(30_000);
  await turn();
  p.outcome({ status: 'converged', version: 3 });
  clock.advance(10_000);
  p.outcome({ status: 'converged', version: 3 });
  p.outcome({ status: 'waiting', reasons: ['pulling'] });
  clock.advance(20_000);
  await turn();
  t.deepEqual(calls, [t0 + 30_000, t0 + 60_000], 'counted from the first converge of version 3');
  p.outcome({ status: 'converged', version: 3 });
  clock.advance(60_000);
  await turn();
  t.is(calls.length, 2);
  p.outcome({ status: 'converged', version: 4 });
  clock.advance(30_000);
  await turn();
  t.is(calls.length, 3);
});

test('a new trigger while one is pending moves it later', async (t) => {
  const { clock, calls, p, t0 } = rig();
  p.start();
  clock.advance(20_000);
  p.outcome({ status: 'converged', version: 1 });
  clock.advance(20_000);
  await turn();
  t.deepEqual(calls, [], 'the start-up timer was moved, not kept');
  clock.advance(10_000);
  await turn();
  t.deepEqual(calls, [t0 + 50_000]);
});

test('afterMs 0 never pages out; stop cancels a pending one', async (t) => {
  const off = rig(0);
  off.p.start();
  off.p.outcome({ status: 'converged', version: 1 });
  off.clock.advance(3600_000);
  await turn();
  t.deepEqual(off.calls, []);
  t.is(off.clock.pending, 0);

  const { clock, calls, p } = rig();
  p.start();
  p.stop();
  clock.advance(60_000);
  p.outcome({ status: 'converged', version: 9 });
  clock.advance(60_000);
  await turn();
  t.deepEqual(calls, []);
});

test('a helper that cannot do it (old kernel, no CAP_SYS_NICE) turns it off after one try', async (t) => {
  const { clock, calls, p } = rig(
    30_000,
    new BerthError('PermissionDenied', 'process_madvise: Operation not permitted'),
  );
  p.start();
  clock.advance(30_000);
  await turn();
  t.is(calls.length, 1);
  p.outcome({ status: 'converged', version: 2 });
  clock.advance(60_000);
  await turn();
  t.is(calls.length, 1, 'not tried again');
  t.is(p.done, 0);
});
