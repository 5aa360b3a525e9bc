/** The outbox over a real SQLite file: order, no loss below the cap, caps by size and age, batched writes. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { Outbox } from '../../src/agent/outbox.js';
import type { Channel, Transport } from '../../src/agent/ports.js';
import { openDatabase } from '../../src/db/database.js';
import { FakeClock } from '../helpers/agent-fakes.js';

function setup(t: { teardown: (fn: () => void) => void }) {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'berth-outbox-')), 'berth.db');
  const dbs: Array<{ close(): void }> = [];
  t.teardown(() => {
    for (const d of dbs) d.close();
  });
  const clock = new FakeClock();
  const open = () => {
    const db = openDatabase(file);
    dbs.push(db);
    return db;
  };
  return { file, clock, open };
}

/** A transport that records what it got; can go offline or fail after n publishes. */
function transport() {
  const got: Array<{ channel: Channel; payload: { n?: number; seq: number } }> = [];
  const tr = {
    online: true,
    failAfter: Number.POSITIVE_INFINITY,
    got,
    publish: async (channel: Channel, payload: unknown) => {
      if (tr.failAfter-- <= 0) throw new Error('broker went away');
      got.push({ channel, payload: payload as { n: number; seq: number } });
    },
    onOnline: () => () => {},
  };
  return tr satisfies Transport & { got: unknown };
}

test('nothing below the cap is lost across a restart, and it all goes out in order', async (t) => {
  const s = setup(t);
  const db = s.open();
  const ob = new Outbox({ db, clock: s.clock, batchSize: 50 });
  for (let n = 0; n < 1000; n++) ob.enqueue(n % 3 === 0 ? 'metrics' : 'event', { n });
  ob.close();
  db.close();
  const ob2 = new Outbox({ db: s.open(), clock: s.clock });
  t.deepEqual(ob2.size().count, 1000);
  const tr = transport();
  t.is(await ob2.drain(tr), 1000);
  t.deepEqual(
    tr.got.map((g) => g.payload.n),
    [...Array(1000).keys()],
  );
  t.true(tr.got.every((g, i) => (i % 3 === 0 ? g.channel === 'metrics' : g.channel === 'event')));
  t.is(ob2.size().count, 0);
});

test('writes are batched: one transaction per batchSize entries or per batchMs', async (t) => {
  const s = setup(t);
  const ob = new Outbox({ db: s.open(), clock: s.clock, batchSize: 50, batchMs: 2000 });
  for (let n = 0; n < 120; n++) ob.enqueue('event', { n });
  t.is(ob.stats.writes, 2, '100 entries → 2 writes');
  t.is(ob.peek(1000).length, 100, 'the last 20 are still in memory');
  await s.clock.advance(1999);
  t.is(ob.stats.writes, 2);
  await s.clock.advance(1);
  t.is(ob.stats.writes, 3, 'the timer wrote the rest');
  t.is(ob.peek(1000).length, 120);
});

test('size cap drops the oldest entries only, and counts them', async (t) => {
  const s = setup(t);
  const ob = new Outbox({ db: s.open(), clock: s.clock, maxBytes: 10_000, batchSize: 10 });
  const pad = 'x'.repeat(80);
  for (let n = 0; n < 500; n++) ob.enqueue('event', { n, pad });
  ob.persist();
  const left = ob.peek(1000);
  const size = ob.size();
  t.true(size.bytes <= 10_000, `bytes ${size.bytes}`);
  t.true(size.bytes > 10_000 - 200, 'fills up to the cap');
  t.is(left.at(-1)!.payload && (left.at(-1)!.payload as { n: number }).n, 499, 'newest kept');
  const first = (left[0]!.payload as { n: number }).n;
  t.deepEqual(
    left.map((e) => (e.payload as { n: number }).n),
    [...Array(500 - first).keys()].map((i) => i + first),
    'a contiguous, ordered tail',
  );
  t.is(ob.stats.dropped, first);
});

test('age cap drops entries older than maxAgeMs', async (t) => {
  const s = setup(t);
  const ob = new Outbox({ db: s.open(), clock: s.clock, maxAgeMs: 60_000, batchSize: 1 });
  ob.enqueue('event', { n: 1 });
  await s.clock.advance(30_000);
  ob.enqueue('event', { n: 2 });
  await s.clock.advance(40_000);
  ob.enqueue('event', { n: 3 });
  t.deepEqual(
    ob.peek().map((e) => (e.payload as { n: number }).n),
    [2, 3],
  );
  t.is(ob.stats.dropped, 1);
});

test('drain stops at the first failure and resumes in order; offline sends nothing', async (t) => {
  const s = setup(t);
  const ob = new Outbox({ db: s.open(), clock: s.clock, batchSize: 7 });
  for (let n = 0; n < 30; n++) ob.enqueue('event', { n });
  const tr = transport();
  tr.online = false;
  t.is(await ob.drain(tr), 0);
  tr.online = true;
  tr.failAfter = 12;
  t.is(await ob.drain(tr, 5), 12);
  t.is(ob.size().count, 18);
  tr.failAfter = Number.POSITIVE_INFINITY;
  t.is(await ob.drain(tr, 5), 18);
  t.deepEqual(
    tr.got.map((g) => g.payload.n),
    [...Array(30).keys()],
  );
  const seqs = tr.got.map((g) => g.payload.seq);
  t.deepEqual(
    seqs,
    [...seqs].sort((a, b) => a - b),
    'sequence numbers travel with the entries',
  );
});
