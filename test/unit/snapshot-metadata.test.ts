import test from 'ava';
import { openDatabase } from '../../src/db/database.js';
import { SimulatedCrash, SnapshotMetadata, transition } from '../../src/snapshots/metadata.js';

const meta = (driver = 'overlay') => new SnapshotMetadata(openDatabase(':memory:'), driver);

test('prepare → commit → remove move a row through its states, id kept across commit', (t) => {
  const m = meta();
  const r = m.beginPrepare('k', 'active', undefined, { a: 'b' });
  t.is(r.state, 'preparing');
  t.deepEqual(
    m.pending().map((p) => p.name),
    ['k'],
  );
  t.throws(() => m.require('k'), { code: 'NotFound' } as never);
  m.finishPrepare(r.id, 'subvol-7');
  t.is(m.require('k').backendId, 'subvol-7');
  const c = m.beginCommit('layer', 'k');
  t.is(c.state, 'committing');
  t.deepEqual(c.intent, { name: 'layer', labels: { a: 'b' } });
  const done = m.finishCommit(c.id, { size: 10, inodes: 2 });
  t.deepEqual([done.id, done.name, done.kind, done.size, done.inodes], [r.id, 'layer', 'committed', 10, 2]);
  t.is(m.get('k'), undefined);
  const rm = m.beginRemove('layer');
  t.is(rm.state, 'removing');
  m.finishRemove(rm.id);
  t.deepEqual(m.list(), []);
});

test('checks: conflicts, parents, children, kinds', (t) => {
  const m = meta();
  m.finishPrepare(m.beginPrepare('base-key', 'active', undefined).id);
  t.throws(() => m.beginPrepare('x', 'active', 'base-key'), { code: 'NotFound' } as never);
  m.finishCommit(m.beginCommit('base', 'base-key').id);
  t.throws(() => m.beginPrepare('base', 'active', undefined), { code: 'Conflict' } as never);
  m.finishPrepare(m.beginPrepare('v', 'view', 'base').id);
  t.throws(() => m.beginCommit('y', 'v'), { code: 'InvalidInput' } as never);
  t.throws(() => m.beginRemove('base'), { code: 'Conflict', message: /1 child/ } as never);
  t.deepEqual(
    m.ancestors(m.require('v')).map((a) => a.name),
    ['base'],
  );
});

test('drivers do not see each other’s rows', (t) => {
  const db = openDatabase(':memory:');
  const a = new SnapshotMetadata(db, 'overlay');
  const b = new SnapshotMetadata(db, 'btrfs');
  a.finishPrepare(a.beginPrepare('k', 'active', undefined).id);
  t.is(b.get('k'), undefined);
  b.finishPrepare(b.beginPrepare('k', 'active', undefined).id);
  t.is(a.list().length, 1);
});

test('transition: undo on failure, nothing undone on a simulated crash', async (t) => {
  const m = meta();
  await t.throwsAsync(
    transition({
      begin: () => m.beginPrepare('a', 'active', undefined),
      act: async () => {
        throw new Error('disk said no');
      },
      finish: () => undefined,
      undo: (r) => m.abortPrepare(r.id),
    }),
    { message: 'disk said no' },
  );
  t.is(m.get('a'), undefined);
  await t.throwsAsync(
    transition({
      begin: () => m.beginPrepare('b', 'active', undefined),
      act: async () => {
        throw new SimulatedCrash('test');
      },
      finish: () => undefined,
      undo: (r) => m.abortPrepare(r.id),
    }),
    { instanceOf: SimulatedCrash },
  );
  t.is(m.get('b')?.state, 'preparing');
});
