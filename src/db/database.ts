import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import * as path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { BerthError, corrupt, withContext } from '../lib/errors.js';
import { MIGRATIONS, type Migration } from './migrations.js';

export type Db = BetterSqlite3.Database;

export interface OpenOptions {
  /** Defaults to the ordered list in migrations.ts; tests pass their own. */
  migrations?: readonly Migration[];
  readonly?: boolean;
  /** Run `PRAGMA quick_check` at open (default true). */
  integrityCheck?: boolean;
  /** The loaded better-sqlite3 addon (NativeParts.sqliteBinding, src/lib/native.ts); undefined: node_modules' build. */
  nativeBinding?: unknown;
  /**
   * SQLite's page cache per connection, KiB (default: better-sqlite3's build, 16 MB). Set before the
   * integrity check, which reads every page: with the default, a device's whole database (events, metrics
   * waiting offline: several MiB) stays cached in the agent's memory from its start on.
   */
  cacheKiB?: number;
}

/**
 * Open (creating if needed) berth's SQLite database: WAL journal, foreign keys on, a busy timeout so
 * two processes on one state dir wait instead of failing, an integrity check that turns a corrupt file
 * into a clear error, and migrations applied in one transaction each by `user_version`.
 */
export function openDatabase(file: string, opts: OpenOptions = {}): Db {
  if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
  const existed = file !== ':memory:' && existsSync(file);
  // a new database is 0600 from its first byte; SQLite gives its -wal and -shm files the same mode
  if (!existed && file !== ':memory:' && !opts.readonly) {
    try {
      closeSync(openSync(file, 'a', 0o600));
    } catch (err) {
      throw withContext(`cannot create database ${file}`, err);
    }
  }
  let db: Db;
  try {
    const binding = opts.nativeBinding;
    db = new BetterSqlite3(file, {
      readonly: opts.readonly ?? false,
      ...(binding ? { nativeBinding: binding as string } : {}),
    });
  } catch (err) {
    throw withContext(`cannot open database ${file}`, err);
  }
  try {
    db.pragma('busy_timeout = 5000');
    if (opts.cacheKiB !== undefined) db.pragma(`cache_size = ${-Math.floor(opts.cacheKiB)}`);
    if (!opts.readonly) {
      db.pragma('journal_mode = WAL');
      // NORMAL in WAL mode: a power cut may lose the last commits but never corrupts the file.
      db.pragma('synchronous = NORMAL');
    }
    db.pragma('foreign_keys = ON');
    if (existed && opts.integrityCheck !== false) {
      const rows = db.pragma('quick_check') as Array<{ quick_check: string }>;
      const bad = rows.map((r) => r.quick_check).filter((r) => r !== 'ok');
      if (bad.length > 0)
        throw corrupt(`database ${file} failed its integrity check: ${bad.slice(0, 3).join('; ')}`);
    }
    if (!opts.readonly) migrate(db, opts.migrations ?? MIGRATIONS);
    return db;
  } catch (err) {
    db.close();
    if (err instanceof BerthError) throw err;
    const e = err as { code?: string; message?: string };
    if (e.code === 'SQLITE_NOTADB' || e.code === 'SQLITE_CORRUPT') {
      throw corrupt(
        `database ${file} is not a valid SQLite database (${e.message}); move it aside to start fresh`,
        err,
      );
    }
    throw withContext(`cannot open database ${file}`, err);
  }
}

export function migrate(db: Db, migrations: readonly Migration[]): void {
  const version = () => db.pragma('user_version', { simple: true }) as number;
  // One IMMEDIATE transaction per migration that re-reads user_version inside it: two processes opening
  // a new state dir at once (the CLI and an agent, say) then queue on the write lock instead of both
  // running migration 1 ("table already exists"). A failing migration rolls back alone.
  const step = db.transaction((): boolean => {
    const current = version();
    if (current > migrations.length) {
      throw new BerthError(
        'Unsupported',
        `database schema version ${current} is newer than this berth understands (${migrations.length}); upgrade berth`,
      );
    }
    if (current === migrations.length) return false;
    migrations[current]!.up(db);
    db.pragma(`user_version = ${current + 1}`);
    return true;
  });
  if (version() > migrations.length) step.immediate();
  while (version() < migrations.length && step.immediate()) {
    /* next migration */
  }
}

/** Run fn in a transaction (IMMEDIATE, so writers queue instead of failing on upgrade). */
export function tx<T>(db: Db, fn: () => T): T {
  return db.transaction(fn).immediate();
}

/**
 * The schema version (user_version) of the database at `file`, read-only and never migrating, or
 * 'unreadable' when it is missing, corrupt or not SQLite (the self-update launcher's rollback check).
 */
export function databaseSchemaVersion(file: string, nativeBinding?: unknown): number | 'unreadable' {
  if (!existsSync(file)) return 'unreadable';
  try {
    const db = openDatabase(file, { readonly: true, nativeBinding });
    try {
      return db.pragma('user_version', { simple: true }) as number;
    } finally {
      db.close();
    }
  } catch {
    return 'unreadable';
  }
}
