// Shared helpers of the packaging pipeline (scripts/package.mjs): arch definitions, the build cache,
// running tools without a shell, hashing.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import * as path from 'node:path';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
export const ARCH_DIR = path.join(ROOT, 'arch');
/** Node packages, addon builds and SEA blobs live here between runs (keyed by arch + versions). */
export const CACHE_DIR = process.env.BERTH_PACKAGE_CACHE ?? path.join(homedir(), '.cache', 'berth-package');
export const BETTER_SQLITE3_VERSION = '12.11.1';

/** @typedef {{ arch: string, nodeArch: string, node: { package: string, version: string },
 *   packager: 'pkg' | 'sea', pkgTarget?: string, seaBlobOnTarget?: boolean,
 *   triple: string, gypArch: string, ociPlatform: string, debArch: string, qemu: string | null }} ArchDef */

/** @returns {ArchDef[]} */
export function loadArches() {
  return readdirSync(ARCH_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(readFileSync(path.join(ARCH_DIR, f), 'utf8')));
}

/** @param {string} name @returns {ArchDef} */
export function loadArch(name) {
  const file = path.join(ARCH_DIR, `${name}.json`);
  if (!existsSync(file)) {
    const known = loadArches().map((a) => a.arch);
    throw new Error(`unknown arch ${name} (known: ${known.join(', ')})`);
  }
  return JSON.parse(readFileSync(file, 'utf8'));
}

/** The program that runs target-arch binaries here: nothing for x64, qemu-user with the cross sysroot. */
export function runnerFor(def) {
  if (!def.qemu) return { file: null, prefix: [] };
  return { file: def.qemu, prefix: ['-L', `/usr/${def.triple}`] };
}

/**
 * Run a program (never through a shell). Resolves with stdout; rejects with stderr's tail on failure.
 * @param {string} file @param {string[]} args
 * @param {{ cwd?: string, env?: NodeJS.ProcessEnv, quiet?: boolean, log?: string }} [opts]
 */
export function run(file, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = [];
    const err = [];
    child.stdout.on('data', (b) => out.push(b));
    child.stderr.on('data', (b) => err.push(b));
    child.on('error', (e) => reject(new Error(`${file}: ${e.message}`)));
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      if (code === 0) return resolve(stdout);
      const tail = `${stdout}\n${stderr}`.trim().split('\n').slice(-25).join('\n');
      reject(new Error(`${file} ${args.join(' ')} failed (${signal ?? `exit ${code}`}):\n${tail}`));
    });
  });
}

export async function sha256File(file) {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk);
  return h.digest('hex');
}

/** Run async jobs with at most `limit` in flight (addon builds: two at a time). */
export async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Memoise one async step per key, so parallel arches share (e.g.) one Node download. */
export function once(fn) {
  const pending = new Map();
  return (key, ...args) => {
    if (!pending.has(key)) pending.set(key, fn(key, ...args));
    return pending.get(key);
  };
}

export function log(msg) {
  process.stderr.write(`package: ${msg}\n`);
}
