// Bundle berth into dist/berth.mjs (development and tests) with esbuild; version and commit baked in.
// The packaged executables are built by scripts/package.mjs from the same entry point.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as esbuild from 'esbuild';
import { buildConsole, consolePlugin } from './console-build.mjs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
let commit = process.env.BERTH_COMMIT ?? 'unknown';
try {
  commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { stdio: ['ignore', 'pipe', 'ignore'] })
    .toString()
    .trim();
} catch {
  /* not a git checkout */
}

const consoleFiles = await buildConsole();

await esbuild.build({
  entryPoints: ['src/main.ts'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  outfile: 'dist/berth.mjs',
  sourcemap: 'linked',
  // Native addon and packages that load files relative to themselves stay in node_modules.
  external: ['better-sqlite3', 'pino', 'thread-stream', 'systeminformation'],
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
  plugins: [consolePlugin(consoleFiles, 'esm')],
  define: {
    __BERTH_BUILD__: JSON.stringify({ version: pkg.version, commit }),
    // src/faults.ts: only test builds of the packaged executable set these
    __BERTH_FAULT_EXIT_AT_START__: 'false',
    __BERTH_FAULT_NEVER_CONNECT__: 'false',
    __BERTH_FAULT_MIGRATE__: 'false',
  },
  logLevel: 'warning',
});
