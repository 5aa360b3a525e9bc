import * as path from 'node:path';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { ContentStore } from '../content/store.js';
import { type Db, openDatabase } from '../db/database.js';
import { releaseMigrations } from '../db/migrations.js';
import { createLogger, type LogFormat, type Logger } from '../lib/logger.js';
import { nativeHints } from '../lib/native.js';
import { prepareDir, secureStateDir } from '../lib/state-dir.js';

/** The command line of this run (runCli sets it): `berth agent`'s launcher starts versions with it. */
export const invocation: { argv: readonly string[] } = { argv: [] };

/** Global options every command accepts (commander puts them on the root program). */
export interface GlobalOptions {
  stateDir?: string;
  config?: string;
  logLevel?: string;
  logFormat?: string;
  platform?: string;
  storageDriver?: string;
}

/**
 * What a command needs, built on first use: nothing is opened until a command asks for it, so
 * `berth --help` and `berth version` never touch the state dir.
 */
export class CliContext {
  private _config?: Config;
  private _db?: Db;
  private _store?: ContentStore;
  private _log?: Logger;
  private readonly closers: Array<() => void | Promise<void>> = [];

  constructor(private readonly globals: GlobalOptions) {}

  get config(): Config {
    if (!this._config) {
      const flags: Record<string, unknown> = {};
      if (this.globals.stateDir) flags.stateDir = this.globals.stateDir;
      if (this.globals.logLevel) flags.logLevel = this.globals.logLevel;
      if (this.globals.logFormat) flags.logFormat = this.globals.logFormat;
      if (this.globals.platform) flags.platform = this.globals.platform;
      if (this.globals.storageDriver) flags.storage = { driver: this.globals.storageDriver };
      const file = this.globals.config ?? process.env.BERTH_CONFIG;
      this._config = loadConfig({ file, env: process.env, flags });
      nativeHints.stateDir = this._config.stateDir;
    }
    return this._config;
  }

  get stateDir(): string {
    return path.resolve(this.config.stateDir);
  }

  get log(): Logger {
    if (!this._log)
      this._log = createLogger({ level: this.config.logLevel, format: this.config.logFormat as LogFormat });
    return this._log;
  }

  private prepared = false;
  /** The state dir, created if missing; its problems (read-only, a file, too long) as coded errors. */
  ensureStateDir(): string {
    const dir = this.stateDir;
    if (!this.prepared) {
      prepareDir(dir, 'state dir');
      // every command that opens the state dir leaves it locked down (src/lib/state-dir.ts); before
      // anything is made in it, so what berth makes has its mode from the start and nothing needs a warning
      secureStateDir(dir, this.log);
      this.prepared = true;
    }
    return dir;
  }

  get db(): Db {
    if (!this._db) {
      this.ensureStateDir();
      const db = openDatabase(path.join(this.stateDir, 'berth.db'), { migrations: releaseMigrations() });
      this._db = db;
      this.closers.push(() => {
        db.close();
      });
    }
    return this._db;
  }

  get store(): ContentStore {
    this.ensureStateDir();
    if (!this._store) this._store = new ContentStore(path.join(this.stateDir, 'content'));
    return this._store;
  }

  onClose(fn: () => void | Promise<void>): void {
    this.closers.push(fn);
  }

  async close(): Promise<void> {
    for (const fn of this.closers.reverse()) await fn();
    this.closers.length = 0;
  }
}
