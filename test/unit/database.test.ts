import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { openDatabase } from '../../src/db/database.js';
import { MIGRATIONS } from '../../src/db/migrations.js';

const tmp = () => mkdtempSync(path.join(tmpdir(), 'berth-db-'));

test('a new database is in WAL mode and at the latest schema version', (t) => {
  const db = openDatabase(path.join(tmp(), 'berth.db'));
  t.is(db.pragma('journal_mode', { simple: true }), 'wal');
  t.is(db.pragma('user_version', { simple: true }), MIGRATIONS.length);
  db.close();
});

test('migrations run once and in order, each in its own transaction', (t) => {
  const file = path.join(tmp(), 'm.db');
  const ran: string[] = [];
  const migrations = [
    {
      name: 'one',
      up: (db: import('better-sqlite3').Database) => {
        ran.push('one');
        db.exec('CREATE TABLE a (x)');
      },
    },
    {
      name: 'two',
      up: (db: import('better-sqlite3').Database) => {
        ran.push('two');
        db.exec('CREATE TABLE b (x)');
      },
    },
  ];
  openDatabase(file, { migrations: migrations.slice(0, 1) }).close();
  openDatabase(file, { migrations }).close();
  openDatabase(file, { migrations }).close();
  t.deepEqual(ran, ['one', 'two']);
});

test('a failing migration leaves the schema version where it was', (t) => {
  const file = path.join(tmp(), 'f.db');
  const migrations = [
    { name: 'ok', up: (db: import('better-sqlite3').Database) => db.exec('CREATE TABLE a (x)') },
    {
      name: 'bad',
      up: (db: import('better-sqlite3').Database) => {
        db.exec('CREATE TABLE b (x)');
        throw new Error('boom');
      },
    },
  ];
  t.throws(() => openDatabase(file, { migrations }), { message: /boom/ });
  const db = openDatabase(file, { migrations: migrations.slice(0, 1) });
  t.is(db.pragma('user_version', { simple: true }), 1);
  const row = db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'b'").get() as { n: number };
  t.is(row.n, 0);
  db.close();
});

test('a corrupt database file gives a clear Corrupt error', (t) => {
  const file = path.join(tmp(), 'bad.db');
  writeFileSync(file, Buffer.alloc(8192, 0x5a));
  const err = t.throws(() => openDatabase(file));
  t.is((err as { code?: string }).code, 'Corrupt');
  t.regex(err!.message, /bad\.db/);
});

test('a database from a newer berth is refused', (t) => {
  const file = path.join(tmp(), 'new.db');
  openDatabase(file).close();
  const migrations = MIGRATIONS.slice(0, 0);
  const err = t.throws(() => openDatabase(file, { migrations }));
  t.regex(err!.message, /newer than this berth understands/);
});

test('processes opening a new database at the same time do not both run its migrations', async (t) => {
  const { spawn } = await import('node:child_process');
  const file = path.join(tmp(), 'race.db');
  const script = `import { openDatabase } from ${JSON.stringify(path.resolve('src/db/database.ts'))}; openDatabase(${JSON.stringify(file)}).close();`;
  const runs = Array.from(
    { length: 6 },
    () =>
      new Promise<{ code: number | null; err: string }>((resolve) => {
        const c = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let err = '';
        c.stderr.on('data', (d) => {
          err += d;
        });
        c.on('close', (code) => resolve({ code, err }));
      }),
  );
  for (const r of await Promise.all(runs)) t.is(r.code, 0, r.err);
  const db = openDatabase(file);
  t.is(db.pragma('user_version', { simple: true }), MIGRATIONS.length);
  db.close();
});

test('the page cache: better-sqlite3’s 16 MB by default; cacheKiB bounds it; the device database gets 2 MiB', async (t) => {
  const dflt = openDatabase(path.join(tmp(), 'd.db'));
  t.is(dflt.pragma('cache_size', { simple: true }), -16000);
  dflt.close();
  const small = openDatabase(path.join(tmp(), 's.db'), { cacheKiB: 512 });
  t.is(small.pragma('cache_size', { simple: true }), -512);
  small.close();
  const { CliContext } = await import('../../src/cli/context.js');
  const { developmentNative } = await import('../../src/lib/native.js');
  const ctx = new CliContext({ stateDir: tmp(), logLevel: 'error' }, developmentNative);
  t.is(ctx.db.pragma('cache_size', { simple: true }), -2048);
  await ctx.close();
});
