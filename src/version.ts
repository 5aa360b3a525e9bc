/** Build facts, replaced at bundle time by scripts/build.mjs (esbuild `define`); development falls back. */
declare const __BERTH_BUILD__: { version: string; commit: string } | undefined;

export const BUILD: { version: string; commit: string } =
  typeof __BERTH_BUILD__ !== 'undefined' ? __BERTH_BUILD__ : { version: '0.0.0-dev', commit: 'dev' };
