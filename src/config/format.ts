/**
 * The config file's format. A release manifest names the formats its executable reads, and a device
 * refuses a release that cannot read its config (docs/self-update.md): bump this when a key is removed,
 * renamed or changes meaning. Apart from the schema (src/config/schema.ts) so `berth version` reports it
 * without building the schema.
 */
export const CONFIG_FORMAT = 1;
/** The oldest config format this release still reads. */
export const MIN_CONFIG_FORMAT = 1;
