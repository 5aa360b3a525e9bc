import { accessSync, chmodSync, constants, lstatSync, mkdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { BerthError, invalidInput, noSpace } from './errors.js';
import type { Logger } from './logger.js';

/**
 * Who may reach what under the state dir (issue 15, item 3). Image layers may hold device nodes, a
 * container with CAP_MKNOD can make more in its rootfs, and container rootfs mount points are listed in
 * /proc/mounts for anyone to read: a host user who can walk to such a node opens the host device it
 * names (the device cgroup binds the container, not them). So, like docker's root (0710 since
 * CVE-2021-41091) and containerd's (0700 since CVE-2021-41103):
 *
 *   <state>            0710  only root, and the state dir's group may pass through (to reach berth.sock,
 *                            the local API, 0660): no listing, nothing else beneath is open to the group
 *   every dir berth    0700  content, snapshots, containers, volumes, networks, locks, runtime, native
 *   makes in it
 *   berth.db* , keys,  0600
 *   serve file
 *   berth.sock         0660  (root and the state dir's group: the CLI without root)
 *
 * What lies deeper keeps the modes its contents need (an image's root dir, a volume's root), reached only
 * through these. Nothing else needs a path in here: berth's containers run without a user namespace, so
 * the runtime (root) mounts each rootfs and bind mount before the container's user takes over, and no
 * container process ever resolves a host path under the state dir; berth-monitor and the runtime run as
 * root. (User-namespaced containers would need traversal for their remapped root: docker makes that
 * root:<remapped gid> 0710 — the place to do it is here, should berth ever remap.)
 *
 * `prepareDir` runs first (CLI context): the state dir's problems get their own words instead of whatever
 * errno surfaced first (`mkdir -p` on a read-only filesystem says ENOENT for the missing leaf, SQLite says
 * "unable to open database file"): too long, a file where a directory belongs, read-only, not writable —
 * each a BerthError naming the directory.
 *
 * `secureStateDir` runs whenever a process opens the state dir (CLI context, agent start): it creates the
 * dirs above with their modes, and only ever removes permission bits from what exists, so a state dir an
 * older berth made 0755/0711 is locked down on the next start. It touches berth's own names only, never
 * other files someone keeps in a directory given as --state-dir.
 */
export const STATE_DIR_MODE = 0o710;

/** Directories berth creates directly in the state dir. */
export const STATE_SUBDIRS = [
  'content',
  'snapshots',
  'containers',
  'volumes',
  'networks',
  'locks',
  'runtime',
  'native',
] as const;

/** Files berth keeps directly in the state dir (the socket is separate: it stays group-writable). */
const STATE_FILES = [
  'berth.db',
  'berth.db-wal',
  'berth.db-shm',
  'berth.db-journal',
  'fleet-key.pem',
  'fleet-key.pub.pem',
  'fleet-serve.json',
];
const SOCKET = 'berth.sock';

/** Pure: the mode an entry should have given its current one — only ever fewer bits. */
export function tightenedMode(mode: number, allowed: number): number {
  return mode & 0o7777 & allowed;
}

/** Create and lock down the state dir (see the file comment). Returns the entries whose mode changed. */
export function secureStateDir(stateDir: string, log?: Logger): string[] {
  const changed: string[] = [];
  mkdirSync(stateDir, { recursive: true, mode: STATE_DIR_MODE });
  const restrict = (p: string, allowed: number, create: 'dir' | false) => {
    let st: ReturnType<typeof lstatSync> | undefined;
    try {
      st = lstatSync(p);
    } catch {
      if (create === 'dir') mkdirSync(p, { mode: allowed & 0o700 });
      return;
    }
    if (st.isSymbolicLink()) return; // never chmod through a link someone planted
    const want = tightenedMode(st.mode, allowed);
    if (want !== (st.mode & 0o7777)) {
      chmodSync(p, want);
      changed.push(path.relative(stateDir, p) || '.');
    }
  };
  restrict(stateDir, STATE_DIR_MODE, false);
  for (const d of STATE_SUBDIRS) restrict(path.join(stateDir, d), 0o700, 'dir');
  for (const f of STATE_FILES) restrict(path.join(stateDir, f), 0o600, false);
  restrict(path.join(stateDir, SOCKET), 0o660, false);
  if (changed.length > 0) log?.warn({ stateDir, tightened: changed }, 'state dir permissions tightened');
  return changed;
}

/** Linux limits: NAME_MAX per component, PATH_MAX for the whole path. */
export const NAME_MAX = 255;
export const PATH_MAX = 4095;

/** Throws InvalidInput when `p` cannot be a path on Linux (`what` names the input). */
export function checkPathLength(p: string, what: string): void {
  const shown = p.length > 80 ? `${p.slice(0, 60)}…(${p.length} characters)` : p;
  if (Buffer.byteLength(p) > PATH_MAX)
    throw invalidInput(`${what} ${shown}: path too long (at most ${PATH_MAX} bytes)`);
  const long = p.split('/').find((c) => Buffer.byteLength(c) > NAME_MAX);
  if (long)
    throw invalidInput(
      `${what} ${shown}: a path component is ${Buffer.byteLength(long)} bytes long (at most ${NAME_MAX})`,
    );
}

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException)?.code;
}

function fsProblem(what: string, dir: string, doing: string, err: unknown): BerthError {
  const code = errnoOf(err);
  switch (code) {
    case 'EROFS':
      return new BerthError('PermissionDenied', `${what} ${dir}: ${doing}: read-only filesystem`, {
        cause: err,
      });
    case 'EACCES':
    case 'EPERM':
      return new BerthError(
        'PermissionDenied',
        `${what} ${dir}: ${doing}: permission denied (running as uid ${process.getuid?.() ?? '?'})`,
        { cause: err },
      );
    case 'ENOSPC':
    case 'EDQUOT':
      return noSpace(`${what} ${dir}: ${doing}: no space left on device`, err);
    case 'ENOTDIR':
      return invalidInput(`${what} ${dir}: ${doing}: a path component is not a directory`, err);
    case 'ENAMETOOLONG':
      return invalidInput(`${what} ${dir}: path too long`, err);
    default:
      return new BerthError('Internal', `${what} ${dir}: ${doing}: ${(err as Error)?.message ?? err}`, {
        cause: err,
      });
  }
}

/**
 * Make sure `dir` exists as a writable directory, creating missing components one by one so the error
 * names the component and the real cause. `what` is how the user knows the input ("state dir").
 */
export function prepareDir(dir: string, what = 'state dir'): void {
  const abs = path.resolve(dir);
  checkPathLength(abs, what);
  // the nearest existing ancestor, and what is missing below it
  const missing: string[] = [];
  let cur = abs;
  for (;;) {
    let st: ReturnType<typeof statSync> | undefined;
    try {
      st = statSync(cur);
    } catch (err) {
      const e = errnoOf(err);
      if (e !== 'ENOENT' && e !== 'ENOTDIR') throw fsProblem(what, abs, `cannot look at ${cur}`, err);
    }
    if (st) {
      if (!st.isDirectory())
        throw invalidInput(
          cur === abs
            ? `${what} ${abs} is a file, not a directory`
            : `${what} ${abs}: ${cur} is a file, not a directory`,
        );
      break;
    }
    missing.unshift(cur);
    const up = path.dirname(cur);
    if (up === cur) break;
    cur = up;
  }
  for (const d of missing) {
    try {
      mkdirSync(d, { mode: d === abs && what === 'state dir' ? STATE_DIR_MODE : 0o755 });
    } catch (err) {
      if (errnoOf(err) === 'EEXIST' && statSync(d).isDirectory()) continue;
      throw fsProblem(what, abs, `cannot create ${d}`, err);
    }
  }
  try {
    accessSync(abs, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw fsProblem(what, abs, 'not writable', err);
  }
}
