// better-sqlite3 built for a target arch and Node version with Debian's cross compilers and the headers of
// the npm node package. Each build is cached under a key of arch + Node + better-sqlite3 versions.
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { BETTER_SQLITE3_VERSION, CACHE_DIR, log, ROOT, run } from './common.mjs';
import { nodeDistFor } from './node-dist.mjs';

const require = createRequire(import.meta.url);

function nodeGypScript() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    // npm ships node-gyp; use that one when the project does not pin its own.
    const npmDir = process.env.npm_execpath
      ? path.join(path.dirname(process.env.npm_execpath), '..')
      : path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm');
    return path.join(npmDir, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  }
}

/** @param {import('./common.mjs').ArchDef} def @returns {Promise<string>} path of the stripped .node */
export async function buildAddon(def) {
  const srcPkg = path.join(ROOT, 'node_modules', 'better-sqlite3');
  const have = JSON.parse(readFileSync(path.join(srcPkg, 'package.json'), 'utf8')).version;
  if (have !== BETTER_SQLITE3_VERSION) {
    throw new Error(`node_modules/better-sqlite3 is ${have}, packaging expects ${BETTER_SQLITE3_VERSION}`);
  }
  const key = `better-sqlite3-${have}-${def.arch}-node${def.node.version}`;
  const out = path.join(CACHE_DIR, 'addon', `${key}.node`);
  if (existsSync(out)) return out;
  const nodedir = await nodeDistFor(def);
  // Per process: two packaging runs (CI runs test files in parallel) may build the same key at once.
  const work = path.join(CACHE_DIR, 'addon', `${key}.build-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(path.dirname(work), { recursive: true });
  cpSync(srcPkg, work, { recursive: true, filter: (p) => !p.startsWith(path.join(srcPkg, 'build')) });
  const t0 = Date.now();
  log(`${def.arch}: building better-sqlite3 ${have} for Node ${def.node.version}`);
  const env = {
    ...process.env,
    CC: `${def.triple}-gcc`,
    CXX: `${def.triple}-g++`,
    LINK: `${def.triple}-g++`,
    AR: `${def.triple}-ar`,
    // ~/.npmrc may say nodedir=/usr (the system Node); the flag below wins, the env must not fight it.
    npm_config_nodedir: nodedir,
  };
  await run(
    process.execPath,
    [
      nodeGypScript(),
      'rebuild',
      '--release',
      `--arch=${def.gypArch}`,
      `--nodedir=${nodedir}`,
      `--devdir=${path.join(CACHE_DIR, 'gyp')}`,
      '-j',
      '2',
    ],
    { cwd: work, env },
  );
  const built = path.join(work, 'build', 'Release', 'better_sqlite3.node');
  const tmp = `${out}.tmp-${process.pid}`;
  await run(`${def.triple}-strip`, ['--strip-unneeded', '-o', tmp, built]);
  renameSync(tmp, out);
  rmSync(work, { recursive: true, force: true });
  log(`${def.arch}: better-sqlite3 built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return out;
}
