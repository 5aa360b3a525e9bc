// @yao-pkg/pkg in SEA mode, offline: pkg runs on the npm x64 Node 22 binary, with its download cache
// ($HOME/.pkg-cache/sea, HOME pointed into our cache) pre-seeded with the stripped target node from npm, so
// it neither downloads nor verifies anything.
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { CACHE_DIR, loadArch, log, run } from './common.mjs';
import { assertDynSymsUnchanged, restoreDynamicSections } from './elf.mjs';
import { nodeDistFor } from './node-dist.mjs';

/** Seed pkg's cache for `def`; returns the (stripped) node binary pkg will copy. */
async function seedPkgCache(def, home, nodeDir) {
  const name = `node-v${def.node.version}-linux-${def.nodeArch}`;
  const sea = path.join(home, '.pkg-cache', 'sea');
  const bin = path.join(sea, name, 'bin', 'node');
  if (!existsSync(`${bin}.ok`)) {
    mkdirSync(path.dirname(bin), { recursive: true });
    // temp + rename: another packaging run may be seeding the same cache right now
    const tmp = `${bin}.tmp-${process.pid}`;
    await run(`${def.triple}-strip`, ['-o', tmp, path.join(nodeDir, 'bin', 'node')]);
    renameSync(tmp, bin);
    writeFileSync(`${bin}.ok`, '');
    // pkg checks only that the archive and its sentinel exist once the binary is extracted.
    writeFileSync(path.join(sea, `${name}.tar.gz`), '');
    writeFileSync(path.join(sea, `${name}.tar.gz.ok`), '');
  }
  return bin;
}

/**
 * @param {import('./common.mjs').ArchDef} def
 * @param {{ nodeDir: string, bundle: string, work: string, output: string }} o
 */
export async function buildPkg(def, { nodeDir, bundle, work, output }) {
  if (!def.pkgTarget) throw new Error(`${def.arch}: arch/${def.arch}.json names no pkgTarget`);
  // pkg itself needs Node >= 22 on the build host: the x64 22.x from npm (same version as the x64 target).
  const hostDef = loadArch('x64');
  const hostNode = path.join(await nodeDistFor(hostDef), 'bin', 'node');
  const home = path.join(CACHE_DIR, 'pkg-home');
  const base = await seedPkgCache(def, home, nodeDir);
  mkdirSync(work, { recursive: true });
  const tmp = `${output}.tmp-${process.pid}`;
  rmSync(tmp, { force: true });
  // pkg's plain SEA mode as a library (pkg-sea.cjs), not its CLI: the CLI passes no SEA config, and V8's code
  // cache of the bundle (useCodeCache) is what makes a cold start cheap (compiling the bundle was ~30 % of
  // `berth version`). Only where the build host runs the target's arch: the cache is made by the blob
  // generator (here the target's own node) and V8 rejects or, per Node's docs, may crash on a cache made on
  // another platform; foreign arches keep pkg's default (no cache) and its seeded download cache.
  const useCodeCache = def.nodeArch === process.arch && hostDef.node.version === def.node.version;
  const nodeRange = def.pkgTarget.split('-')[0];
  await run(
    hostNode,
    [
      path.join(import.meta.dirname, 'pkg-sea.cjs'),
      JSON.stringify({
        entry: path.resolve(bundle),
        output: path.resolve(tmp),
        nodeRange,
        arch: def.nodeArch,
        ...(useCodeCache ? { nodePath: base } : {}),
        useCodeCache,
      }),
    ],
    {
      cwd: work,
      env: { ...process.env, HOME: home, PKG_CACHE_PATH: path.join(home, '.pkg-cache') },
    },
  );
  log(`${def.arch}: pkg SEA ${useCodeCache ? 'with' : 'without'} V8 code cache`);
  // pkg injects with the same postject: same repair and guard as the SEA path.
  const restored = restoreDynamicSections(base, tmp);
  log(`${def.arch}: restored ${restored.join(' ')} after pkg`);
  const syms = await assertDynSymsUnchanged(base, tmp);
  log(`${def.arch}: ${syms} dynamic symbols unchanged by injection`);
  return { tmp, base };
}
