/**
 * Extraction of the embedded native parts of the packaged executable.
 *
 * Lifecycle: nothing is written at start. The first time a native part is needed (the SQLite addon when a
 * command opens the database, berth-runtime when a container starts, ...) every embedded file is written
 * into `<dir>/<sha256 of the payload>/`, each to a temp name, fsynced, checked against its build-time
 * sha256 and renamed; later starts re-check the sha256 of what is there and rewrite anything that differs.
 * `<dir>` is the first usable of: $BERTH_NATIVE_CACHE (alone, when set), `<state dir>/native`,
 * `$XDG_CACHE_HOME/berth/native` (or ~/.cache/berth/native), `<tmpdir>/berth-<uid>/native`. A candidate is
 * skipped when it cannot be created or written, when it (or its parent candidate dir) is not owned by this
 * user or is writable by group/others (a shared /tmp), or when its filesystem is mounted noexec (programs
 * could not run and the addon could not be mapped); when none is usable the error names each and why.
 */
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  realpathSync,
  renameSync,
  writeSync,
} from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BerthError } from '../lib/errors.js';
import { type MountEntry, mountOf, parseMountinfo } from '../lib/mountinfo.js';
import { readAppended } from './appended.js';
import type { EmbeddedFile, EmbeddedPayload } from './payload.js';

export interface ExtractOptions {
  /** Directories to try, in order; see candidateDirs(). */
  candidates: string[];
  /** For tests: read mount options from this text instead of /proc/self/mountinfo. */
  mountinfo?: string;
  /** The file the parts are appended to (src/packaged/appended.ts): the running executable, or a test's. */
  executable?: string;
  /**
   * Which embedded files to write or re-check (default: all): a command that only opens the database
   * reads and hashes the 2 MB addon, not the native programs too (src/packaged/install.ts).
   */
  files?: readonly EmbeddedFile[];
}

/** Where extraction may happen, in order of preference. */
export function candidateDirs(stateDir: string | undefined, env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.BERTH_NATIVE_CACHE) return [path.resolve(env.BERTH_NATIVE_CACHE)];
  const dirs: string[] = [];
  if (stateDir) dirs.push(path.join(path.resolve(stateDir), 'native'));
  const cacheHome = env.XDG_CACHE_HOME || (env.HOME ? path.join(env.HOME, '.cache') : undefined);
  if (cacheHome) dirs.push(path.join(cacheHome, 'berth', 'native'));
  dirs.push(path.join(os.tmpdir(), `berth-${process.getuid?.() ?? 'user'}`, 'native'));
  return [...new Set(dirs)];
}

/** The identity of a payload: one directory per distinct set of embedded files. */
export function payloadId(payload: EmbeddedPayload): string {
  const h = createHash('sha256');
  for (const f of [payload.sqlite, ...payload.native]) h.update(`${f.name}\0${f.sha256}\0`);
  return h.digest('hex').slice(0, 16);
}

function sha256Of(file: string): string | undefined {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    return undefined;
  }
}

function writeChecked(dir: string, f: EmbeddedFile, executable: string): void {
  const dest = path.join(dir, f.name);
  if (sha256Of(dest) === f.sha256) return;
  const bytes =
    f.base64 !== undefined
      ? Buffer.from(f.base64, 'base64')
      : readAppended(executable, f.offset ?? 0, f.size);
  const got = createHash('sha256').update(bytes).digest('hex');
  if (got !== f.sha256 || bytes.length !== f.size) {
    throw new BerthError(
      'Corrupt',
      `embedded ${f.name} does not match its build-time sha256 (${got} != ${f.sha256}): the executable is damaged`,
    );
  }
  const tmp = path.join(dir, `.${f.name}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', 0o755);
  try {
    writeSync(fd, bytes);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  chmodSync(tmp, 0o755);
  renameSync(tmp, dest);
  if (sha256Of(dest) !== f.sha256) throw new BerthError('Corrupt', `${dest} changed while it was written`);
}

/**
 * Write (or re-check) every embedded file into the first usable candidate; returns the directory.
 * Throws PermissionDenied naming each candidate and why it was refused.
 */
export function extractPayload(payload: EmbeddedPayload, opts: ExtractOptions): string {
  const reasons: string[] = [];
  let mounts: MountEntry[] | undefined;
  for (const base of opts.candidates) {
    const dir = path.join(base, payloadId(payload));
    try {
      mkdirSync(dir, { recursive: true, mode: 0o755 });
    } catch (err) {
      reasons.push(`${base}: cannot create (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
      continue;
    }
    const unsafe = unsafeOwnership([base, dir]);
    if (unsafe) {
      reasons.push(`${base}: ${unsafe}`);
      continue;
    }
    mounts ??= parseMountinfo(opts.mountinfo ?? safeRead('/proc/self/mountinfo'));
    const mount = mountOf(realpathSync(dir), mounts);
    if (mount?.options.includes('noexec')) {
      reasons.push(`${base}: filesystem at ${mount.point} is mounted noexec`);
      continue;
    }
    try {
      for (const f of opts.files ?? [payload.sqlite, ...payload.native])
        writeChecked(dir, f, opts.executable ?? process.execPath);
    } catch (err) {
      if (err instanceof BerthError) throw err;
      reasons.push(`${base}: cannot write (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
      continue;
    }
    return dir;
  }
  throw new BerthError(
    'PermissionDenied',
    `cannot extract berth's embedded native parts: no writable, exec-capable directory (${reasons.join('; ')}); ` +
      'set BERTH_NATIVE_CACHE to a writable directory on a filesystem mounted without noexec',
  );
}

/**
 * Programs berth runs (as root, for the agent) must not come from a directory someone else could swap
 * files in after the sha256 check: each level must be ours and not writable by group or others.
 */
function unsafeOwnership(dirs: string[]): string | undefined {
  const uid = process.getuid?.();
  for (const d of dirs) {
    const st = lstatSync(d);
    if (!st.isDirectory()) return `${d} is not a directory`;
    if (uid !== undefined && st.uid !== uid) return `${d} is owned by uid ${st.uid}, not ${uid}`;
    if ((st.mode & 0o022) !== 0) return `${d} is writable by group or others`;
  }
  return undefined;
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Load an extracted Node addon (what `require('x.node')` does, without a module path lookup). */
export function loadAddon(file: string): unknown {
  if (!existsSync(file)) throw new BerthError('NotFound', `addon ${file} is missing`);
  const mod = { exports: {} as unknown };
  try {
    process.dlopen(mod, file);
  } catch (err) {
    const msg = (err as Error).message;
    const hint = /GLIBC|GLIBCXX/.test(msg)
      ? ' (the SQLite addon needs glibc >= 2.34 and libstdc++ >= 12)'
      : '';
    throw new BerthError('Unavailable', `cannot load ${file}: ${msg}${hint}`, { cause: err });
  }
  return mod.exports;
}
