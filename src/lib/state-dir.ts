/**
 * The state dir is the first thing most commands touch, so its problems get their own words instead of
 * whatever errno surfaced first (`mkdir -p` on a read-only filesystem says ENOENT for the missing leaf,
 * SQLite says "unable to open database file"): too long, a file where a directory belongs, read-only,
 * not writable. Each is a BerthError naming the directory.
 */
import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { BerthError, invalidInput, noSpace } from './errors.js';

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
      mkdirSync(d, { mode: 0o755 });
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
