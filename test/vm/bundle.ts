import { mkdir } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/** The project root (the VM shares it at the same path). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Bundle a TypeScript entry for the guest into <repo>/.cache/vm/<name>.mjs: one file instead of the
 * tsx loader compiling hundreds of modules under TCG. npm packages stay external and load from the
 * repo's node_modules over 9p (better-sqlite3's addon is built for the host's node, which the guest runs).
 */
export async function bundleForVm(entry: string, name: string): Promise<string> {
  const outfile = path.join(REPO_ROOT, '.cache', 'vm', `${name}.mjs`);
  await mkdir(path.dirname(outfile), { recursive: true });
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    sourcemap: 'inline',
    logLevel: 'error',
  });
  return outfile;
}
