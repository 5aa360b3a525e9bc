/**
 * Fault variants of the packaged executable, for the self-update tests only
 * (`scripts/package.mjs --fault exit-at-start|never-connect|migrate`, several allowed). Release builds
 * define each `__BERTH_FAULT_*__` as false, and the bundler folds the checks below to `false` and drops
 * the code they guard (test/integration/self-update-package.test.ts looks for it in a release bundle); in
 * development (no bundler) they are undefined and nothing is faulty.
 *
 *   exit-at-start   `berth agent`, once a launcher started it, fails at once (exit 1)
 *   never-connect   the agent runs but never opens its fleet connection
 *   migrate         the database gets one more migration than this release's list
 */
declare const __BERTH_FAULT_EXIT_AT_START__: boolean | undefined;
declare const __BERTH_FAULT_NEVER_CONNECT__: boolean | undefined;
declare const __BERTH_FAULT_MIGRATE__: boolean | undefined;

export const FAULT_EXIT_AT_START =
  typeof __BERTH_FAULT_EXIT_AT_START__ !== 'undefined' && __BERTH_FAULT_EXIT_AT_START__ === true;
export const FAULT_NEVER_CONNECT =
  typeof __BERTH_FAULT_NEVER_CONNECT__ !== 'undefined' && __BERTH_FAULT_NEVER_CONNECT__ === true;
export const FAULT_MIGRATE =
  typeof __BERTH_FAULT_MIGRATE__ !== 'undefined' && __BERTH_FAULT_MIGRATE__ === true;

/** The extra migration of the `migrate` fault: a table no release knows. */
export const FAULT_MIGRATION_SQL = 'CREATE TABLE fault_probe (id INTEGER PRIMARY KEY, note TEXT)';
