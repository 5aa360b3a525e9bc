/**
 * Fault variants of the packaged executable, for the self-update tests only
 * (`scripts/package.mjs --fault exit-at-start|never-connect|migrate`, several allowed). Release builds
 * define each `__BERTH_FAULT_*__` as false: the bundler folds every check to `false` and drops what it
 * guards, strings included (test/integration/self-update-package.test.ts looks for them in a release
 * bundle); in development (no bundler) they are undefined and nothing is faulty.
 *
 *   exit-at-start   `berth agent`, once a launcher started it, fails at once (exit 1)
 *   never-connect   the agent runs but never opens its fleet connection
 *   migrate         the database gets one more migration than this release's list
 */
import type { Migration } from './db/migrations.js';
import { unavailable } from './lib/errors.js';

declare const __BERTH_FAULT_EXIT_AT_START__: boolean | undefined;
declare const __BERTH_FAULT_NEVER_CONNECT__: boolean | undefined;
declare const __BERTH_FAULT_MIGRATE__: boolean | undefined;

export const FAULT_NEVER_CONNECT =
  typeof __BERTH_FAULT_NEVER_CONNECT__ !== 'undefined' && __BERTH_FAULT_NEVER_CONNECT__ === true;

/** Throws in the exit-at-start build; nothing otherwise. */
export function faultAtStart(): void {
  if (typeof __BERTH_FAULT_EXIT_AT_START__ !== 'undefined' && __BERTH_FAULT_EXIT_AT_START__ === true)
    throw unavailable('fault build: exiting at start');
}

/** The migrations, plus one no release has in the migrate build. */
export function faultMigrations(list: readonly Migration[]): readonly Migration[] {
  if (typeof __BERTH_FAULT_MIGRATE__ !== 'undefined' && __BERTH_FAULT_MIGRATE__ === true)
    return [
      ...list,
      {
        name: 'fault build: one migration no release has',
        up: (db) => db.exec('CREATE TABLE fault_probe (id INTEGER PRIMARY KEY, note TEXT)'),
      },
    ];
  return list;
}
