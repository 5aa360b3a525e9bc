// Node's single-executable-application path, with postject: used where pkg cannot build (Node 20 targets:
// armv7, ppc64le). The blob is made by the target's own node (under qemu-user for foreign arches): a blob
// stores size_t lengths, so one made by a 64-bit node aborts a 32-bit armv7 node.
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { log, run, runnerFor } from './common.mjs';
import { assertDynSymsUnchanged, restoreDynamicSections } from './elf.mjs';

const require = createRequire(import.meta.url);
export const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

/**
 * @param {import('./common.mjs').ArchDef} def
 * @param {{ nodeDir: string, bundle: string, work: string, output: string }} o
 */
export async function buildSea(def, { nodeDir, bundle, work, output }) {
  mkdirSync(work, { recursive: true });
  const blob = path.join(work, 'sea-prep.blob');
  const config = path.join(work, 'sea-config.json');
  writeFileSync(
    config,
    JSON.stringify({
      main: bundle,
      output: blob,
      disableExperimentalSEAWarning: true,
      useSnapshot: false,
      useCodeCache: false,
    }),
  );
  const node = path.join(nodeDir, 'bin', 'node');
  const runner = runnerFor(def);
  if (runner.file) await run(runner.file, [...runner.prefix, node, '--experimental-sea-config', config]);
  else await run(node, ['--experimental-sea-config', config]);

  const base = path.join(work, 'node.stripped');
  await run(`${def.triple}-strip`, ['-o', base, node]);
  const tmp = `${output}.tmp-${process.pid}`;
  rmSync(tmp, { force: true });
  copyFileSync(base, tmp);
  const postject = require.resolve('postject/dist/cli.js');
  await run(process.execPath, [postject, tmp, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE]);
  const restored = restoreDynamicSections(base, tmp);
  log(`${def.arch}: restored ${restored.join(' ')} after postject`);
  const syms = await assertDynSymsUnchanged(base, tmp);
  log(`${def.arch}: ${syms} dynamic symbols unchanged by injection`);
  return { tmp, base };
}
