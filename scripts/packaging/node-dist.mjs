// Official Node binaries and headers for each target, fetched through npm (`npm pack node-linux-<arch>`),
// so a fresh CI machine needs nothing but the npm registry.
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { CACHE_DIR, log, once, run } from './common.mjs';

/**
 * Unpacked npm node package for `def` (bin/node + include/node), cached.
 * @returns {Promise<string>} the directory holding bin/ and include/
 */
export const nodeDist = once(async (_key, pkg, version) => {
  const dir = path.join(CACHE_DIR, 'node', `${pkg}-${version}`);
  if (existsSync(path.join(dir, 'bin', 'node'))) return dir;
  const tarballs = path.join(CACHE_DIR, 'tarballs');
  mkdirSync(tarballs, { recursive: true });
  const tgz = path.join(tarballs, `${pkg}-${version}.tgz`);
  if (!existsSync(tgz)) {
    log(`npm pack ${pkg}@${version}`);
    await run('npm', ['pack', '--silent', `${pkg}@${version}`], { cwd: tarballs });
  }
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  await run('tar', ['-xzf', tgz, '-C', tmp, '--strip-components=1']);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
});

export function nodeDistFor(def) {
  return nodeDist(`${def.node.package}@${def.node.version}`, def.node.package, def.node.version);
}
