import { invalidInput } from '../lib/errors.js';

/**
 * Pure rules for tar entry names in OCI layers (no fs here; unit-tested in test/unit/layer-paths.test.ts).
 *
 * A name is made relative (leading `/` and `./` dropped, as GNU tar does) and split into components;
 * a `..` component anywhere is refused outright — a layer has no business naming its parent, and
 * refusing fails the whole layer, so nothing of it is committed.
 */
export function entryParts(name: string, what = 'tar entry'): string[] {
  if (name.includes('\0')) throw invalidInput(`${what} ${JSON.stringify(name)} contains a NUL byte`);
  const parts: string[] = [];
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') throw invalidInput(`${what} ${JSON.stringify(name)} climbs out with '..'`);
    parts.push(p);
  }
  return parts;
}

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';

export type WhiteoutKind =
  | { kind: 'none' }
  /** `.wh..wh..opq`: the directory `dir` hides everything lower layers put in it */
  | { kind: 'opaque'; dir: string[] }
  /** `.wh.<name>`: `target` is deleted from the lower layers */
  | { kind: 'whiteout'; target: string[] };

export function classifyWhiteout(parts: readonly string[]): WhiteoutKind {
  const base = parts[parts.length - 1];
  if (base === undefined || !base.startsWith(WHITEOUT_PREFIX)) return { kind: 'none' };
  const dir = parts.slice(0, -1);
  if (base === OPAQUE_WHITEOUT) return { kind: 'opaque', dir };
  const name = base.slice(WHITEOUT_PREFIX.length);
  if (name === '' || name === '.' || name === '..' || name.startsWith(WHITEOUT_PREFIX)) {
    throw invalidInput(`tar entry ${JSON.stringify(parts.join('/'))} is a malformed whiteout`);
  }
  return { kind: 'whiteout', target: [...dir, name] };
}

/** PAX SCHILY.xattr.<name> records of a header → xattrs, minus the ones a layer must never set. */
export function layerXattrs(pax: Record<string, string> | null | undefined): Array<[string, Buffer]> {
  const out: Array<[string, Buffer]> = [];
  for (const [k, v] of Object.entries(pax ?? {})) {
    if (!k.startsWith('SCHILY.xattr.')) continue;
    const name = k.slice('SCHILY.xattr.'.length);
    // trusted.overlay.* would let a layer steer overlayfs (redirect, metacopy, origin) on the host:
    // berth writes the only one it needs (opaque) itself.
    if (name.startsWith('trusted.overlay.') || name === '') continue;
    // tar-stream decodes PAX values as UTF-8, so a binary value that is not valid UTF-8 (e.g. some
    // security.capability blobs) arrives damaged (U+FFFD): it is skipped rather than written wrong.
    if (v.includes('\uFFFD')) continue;
    out.push([name, Buffer.from(v, 'utf8')]);
  }
  return out;
}
