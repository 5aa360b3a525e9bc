import { corrupt, invalidInput } from '../lib/errors.js';

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

/** The parts of a tar-stream header the checks below read. */
export interface LayerHeader {
  name: string;
  type: string | null;
  size?: number | undefined;
  pax?: unknown;
}

const DATA_TYPES = new Set(['file', 'contiguous-file']);
const HEADER_ONLY_TYPES = new Set([
  'link',
  'symlink',
  'character-device',
  'block-device',
  'directory',
  'fifo',
]);

/**
 * What the fallback unpacker (tar-stream) refuses rather than apply wrongly — the native extractor
 * (native/storage/tar.c) refuses the same, or expands it correctly:
 *   - GNU sparse files: tar-stream cannot read their maps (old GNU 'S' headers are an unknown type to it;
 *     a PAX 1.0 one would be written as GNUSparseFile.<pid>/<name> with the map as content);
 *   - entry types other than files, directories, links, devices and fifos (containerd refuses them too);
 *   - a size on a header-only entry: readers disagree on whether data follows, so one layer would mean
 *     two trees.
 */
export function checkLayerHeader(h: LayerHeader): void {
  const name = JSON.stringify(h.name);
  if (
    Object.keys((h.pax as Record<string, string> | null | undefined) ?? {}).some((k) =>
      k.startsWith('GNU.sparse.'),
    )
  ) {
    throw invalidInput(
      `tar entry ${name} is a GNU sparse file, which this unpacker does not expand (the native extractor does; it needs Linux >= 5.6)`,
    );
  }
  if (h.type === null || (!DATA_TYPES.has(h.type) && !HEADER_ONLY_TYPES.has(h.type))) {
    throw invalidInput(
      `tar entry ${name} has an unsupported type${h.type ? ` (${h.type})` : ''} (e.g. an old GNU sparse file)`,
    );
  }
  if (HEADER_ONLY_TYPES.has(h.type) && (h.size ?? 0) > 0) {
    throw corrupt(
      `layer is not a valid tar: tar entry ${name}: a ${h.type} entry cannot carry ${h.size} bytes of data`,
    );
  }
}
