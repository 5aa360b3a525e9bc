/**
 * The built web console, embedded in the berth bundle: scripts/console-build.mjs replaces this module with
 * the real assets when it bundles berth (scripts/build.mjs, the packaged executables). Run from source
 * (tests), it is empty and the caller builds the console itself (test/helpers/console.ts).
 */
import type { EmbeddedAsset } from './assets.js';

export const EMBEDDED_CONSOLE: EmbeddedAsset[] = [];
