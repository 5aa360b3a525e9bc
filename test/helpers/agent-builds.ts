/**
 * Packaged x64 executables of other versions and fault variants (src/faults.ts) for the self-update
 * tests, built with scripts/package.mjs and cached under the packaging cache (BERTH_PACKAGE_CACHE,
 * default ~/.cache/berth-package — where the addon builds already are) by a hash of everything that goes
 * into them. A warm cache costs nothing; a cold one one esbuild + pkg run per variant (the SQLite addon
 * and Node come from the same cache), two at a time.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const PACKAGE_CACHE =
  process.env.BERTH_PACKAGE_CACHE ?? path.join(homedir(), '.cache', 'berth-package');

export interface AgentBuild {
  version: string;
  faults: string[];
  exe: string;
  /** the build record scripts/package.mjs writes (berth-linux-x64.json) */
  record: {
    version: string;
    sha256: string;
    size: number;
    database: { schema: number; minSchema: number };
    config: { format: number; minFormat: number };
    node: string;
  };
  /** the app bundle that went into it */
  bundle: string;
  /** the dist/-like directory holding exe + record (what `fleet release push` reads) */
  dir: string;
}

/** Everything that goes into an executable, hashed (sources, build scripts, lockfile, native sources). */
async function inputsHash(): Promise<string> {
  const h = createHash('sha256');
  const files: string[] = [];
  const walk = async (dir: string, keep: (f: string) => boolean) => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'build') await walk(p, keep);
      } else if (keep(p)) files.push(p);
    }
  };
  await walk(path.join(ROOT, 'src'), () => true);
  await walk(path.join(ROOT, 'scripts'), (f) => f.endsWith('.mjs'));
  await walk(path.join(ROOT, 'native'), (f) => /\.(c|h)$|Makefile$/.test(f));
  files.push(path.join(ROOT, 'package-lock.json'), path.join(ROOT, 'arch', 'x64.json'));
  for (const f of files.sort()) {
    h.update(path.relative(ROOT, f));
    h.update(await fsp.readFile(f));
  }
  return h.digest('hex').slice(0, 16);
}

let hash: Promise<string> | undefined;
let running = 0;
const waiting: Array<() => void> = [];

/** Two builds at a time in this process (each is mostly one CPU). */
async function slot<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= 2) await new Promise<void>((r) => waiting.push(r));
  running++;
  try {
    return await fn();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

/** The x64 executable of `version` with `faults`, built once per set of inputs. */
export async function agentBuild(version: string, faults: string[] = []): Promise<AgentBuild> {
  hash ??= inputsHash();
  const key = `x64-${version}${faults.length ? `-${[...faults].sort().join('+')}` : ''}-${await hash}`;
  const dir = path.join(PACKAGE_CACHE, 'test-builds', key);
  const exe = path.join(dir, 'berth-linux-x64');
  if (!existsSync(`${exe}.json`)) {
    await slot(async () => {
      if (existsSync(`${exe}.json`)) return;
      const tmp = `${dir}.tmp-${process.pid}`;
      await fsp.rm(tmp, { recursive: true, force: true });
      const args = [path.join(ROOT, 'scripts', 'package.mjs'), '--arch', 'x64', '--no-deb', '--out', tmp];
      args.push('--version', version, ...faults.flatMap((f) => ['--fault', f]));
      const t0 = Date.now();
      await promisify(execFile)(process.execPath, args, { cwd: ROOT, maxBuffer: 64 << 20 });
      process.stderr.write(`agent-builds: ${key} built in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
      if (existsSync(`${exe}.json`)) {
        // another process built the same key meanwhile: keep theirs
        await fsp.rm(tmp, { recursive: true, force: true });
        return;
      }
      await fsp.rm(dir, { recursive: true, force: true });
      await fsp.rename(tmp, dir);
      // builds of the same variant from older inputs are dead weight (~110 MiB each)
      const variant = key.slice(0, key.lastIndexOf('-') + 1);
      for (const other of await fsp.readdir(path.dirname(dir)))
        if (other.startsWith(variant) && other !== key && !other.includes('.tmp-'))
          await fsp.rm(path.join(path.dirname(dir), other), { recursive: true, force: true });
    });
  }
  return {
    version,
    faults,
    exe,
    record: JSON.parse(readFileSync(`${exe}.json`, 'utf8')) as AgentBuild['record'],
    bundle: path.join(dir, '.package', 'x64', 'berth.cjs'),
    dir,
  };
}
