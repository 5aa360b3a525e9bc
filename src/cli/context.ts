import * as path from 'node:path';
import { DeviceStack } from '../agent/adapters/device-stack.js';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { ContentStore } from '../content/store.js';
import { type Db, openDatabase } from '../db/database.js';
import { releaseMigrations } from '../db/migrations.js';
import { createLogger, type LogFormat, type Logger } from '../lib/logger.js';
import type { NativeParts, NativeSource } from '../lib/native.js';
import { autoRemoveCommand } from '../lib/self.js';
import { prepareDir, secureStateDir } from '../lib/state-dir.js';

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
 * The composition root of a command: what it needs, built on first use from the global options and the
 * executable's native parts (NativeSource, from the entry point). Nothing is opened until a command asks
 * for it, so `berth --help` and `berth version` never touch the state dir; the device stack (runtime,
 * networking, snapshotter, images, ContainerManager) is the same one `berth agent` builds
 * (src/agent/adapters/device-stack.ts).
 */
export class CliContext {
  private _config?: Config;
  private _db?: Db;
  private _store?: ContentStore;
  private _log?: Logger;
  private _native?: NativeParts;
  private _device?: DeviceStack;
  private readonly closers: Array<() => void | Promise<void>> = [];

  constructor(
    private readonly globals: GlobalOptions,
    private readonly nativeSource: NativeSource,
  ) {}

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

  /** The native programs and the SQLite addon (the state dir is one place a packaged berth extracts them). */
  get native(): NativeParts {
    this._native ??= this.nativeSource.parts(this.stateDir);
    return this._native;
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
      const db = openDatabase(path.join(this.stateDir, 'berth.db'), {
        migrations: releaseMigrations(),
        nativeBinding: this.native.sqliteBinding(),
        // the device's database: 2 MiB of page cache (its hot pages: targets, containers, the outbox head)
        cacheKiB: 2048,
      });
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

  /**
   * The device stack over this state dir, as `berth agent` builds it; a container made with `--rm -d` is
   * removed afterwards by `berth rm -f` with the same state dir and --config.
   */
  get device(): DeviceStack {
    if (!this._device) {
      const autoRemove = autoRemoveCommand(this.stateDir, this.globals.config);
      const stack = new DeviceStack({
        db: this.db,
        store: this.store,
        config: this.config,
        stateDir: this.stateDir,
        log: this.log,
        native: this.native,
        autoRemoveCommand: autoRemove,
      });
      this._device = stack;
      this.closers.push(() => stack.close());
    }
    return this._device;
  }

  /** A new context over the same options and native parts (its own database handle, logger, stack). */
  fresh(): CliContext {
    return new CliContext(this.globals, this.nativeSource);
  }

  onClose(fn: () => void | Promise<void>): void {
    this.closers.push(fn);
  }

  async close(): Promise<void> {
    for (const fn of this.closers.reverse()) await fn();
    this.closers.length = 0;
  }
}
