import { randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import { z } from 'zod';
import type { Db } from '../db/database.js';
import { BerthError, corrupt, invalidInput, notFound, withContext } from '../lib/errors.js';
import { type Digest, digestHex, sha256Digest } from '../oci/digest.js';
import { MediaTypes } from '../oci/media-types.js';
import type { PlatformSpec } from '../oci/platform.js';
import {
  type Descriptor,
  ImageConfigSchema,
  IndexSchema,
  type Manifest,
  parseJsonDoc,
} from '../oci/types.js';
import { type FetchBlob as Fetch, resolvePlan } from './acquire.js';
import { type ImageRecord, ImageRepo, normalizeRef, reachableBlobs } from './images.js';
import { Leases } from './leases.js';
import type { BlobInfo, ContentStore } from './store.js';

export type SourceFormat = 'oci-layout' | 'oci-archive' | 'docker-archive';

export interface ImportOptions {
  /** Platform to select from multi-arch images (the device's). */
  platform: PlatformSpec;
  /** Keep every platform of an index (the fleet server does); names then point at the index. */
  allPlatforms?: boolean;
  /** Name for the image, overriding names found in the source. */
  tag?: string;
  /** Called with bytes read from the source so far and the source's size (progress bars). */
  onProgress?: (bytes: number, total: number) => void;
}

/**
 * An oci-archive or docker-archive (optionally gzipped) arriving as a stream, e.g. an HTTP upload: read
 * once, each blob verified into the content store as it streams past; `name` labels errors, `size` (when
 * known) is the progress total.
 */
export interface StreamSource {
  stream: Readable;
  name: string;
  size?: number;
}

export interface ImportResult {
  format: SourceFormat;
  images: ImageRecord[];
  /** Blobs this import wrote (not present before). */
  added: Digest[];
}

const MAX_JSON = 4 * 1024 * 1024;

/** Where an import reads blobs from once the source has been scanned: always the content store. */
interface Scanned {
  format: SourceFormat;
  /** OCI: top-level index.json; docker: manifest.json */
  indexJson: Buffer;
  /** docker-archive: archive path → blob digest (files stored as they streamed past) */
  paths: Map<string, { digest: Digest; size: number }>;
}

/**
 * Import an image from an OCI image layout directory, an oci-archive tar or a docker-archive tar
 * (`docker save`, `skopeo copy … docker-archive:`). Every blob is verified against its digest before it
 * becomes present; on any error the blobs this import added are removed again (unless another image or
 * import holds them), so bad input leaves nothing behind.
 */
export async function importImage(
  from: string | StreamSource,
  deps: { store: ContentStore; db: Db },
  opts: ImportOptions,
): Promise<ImportResult> {
  const sourceSpec = typeof from === 'string' ? from : from.name;
  const {
    path: source,
    ref,
    transport,
  } = typeof from === 'string'
    ? await resolveImageSource(from)
    : { path: from.name, ref: undefined, transport: undefined };
  const images = new ImageRepo(deps.db, deps.store);
  const leases = new Leases(deps.db);
  const lease = leases.create(`import-${randomBytes(6).toString('hex')}`);
  const added: Digest[] = [];
  // Every blob this import touches is leased first (so a concurrent GC or failed import keeps it),
  // and remembered when this import is what made it present (so a failure can take it back).
  const track: Track = async (digest, write) => {
    if (digest) lease.add(digest);
    const info = await write();
    if (!digest) lease.add(info.digest);
    if (info.created) added.push(info.digest);
  };
  try {
    const scanned =
      typeof from === 'string'
        ? await scanSource(source, deps.store, track, opts.onProgress)
        : await scanTar(from.stream, source, from.size ?? 0, deps.store, track, opts.onProgress);
    if (transport && transport !== scanned.format)
      throw invalidInput(`${sourceSpec}: ${source} is ${scanned.format}, not ${transport}`);
    let plans =
      scanned.format === 'docker-archive'
        ? await planDockerArchive(scanned, deps.store, track, source)
        : await planOciLayout(scanned, deps.store, track, source);
    if (plans.length === 0) throw invalidInput(`${source}: no image found in the source`);
    if (ref !== undefined) plans = selectPlans(plans, ref, source, scanned.format);
    if (opts.tag && plans.length > 1) {
      const names = plans.map((p) => p.ref ?? p.name ?? '(unnamed)');
      throw invalidInput(
        `${source} holds ${plans.length} images (${names.join(', ')}); --tag names one: pick it with ${source}:<ref>, e.g. ${source}:${names[0]}`,
      );
    }
    const records: Array<Omit<ImageRecord, 'createdAt'>> = [];
    for (const plan of plans) {
      const name = normalizeRef(opts.tag ?? plan.name ?? defaultName(source));
      const fetch: Fetch =
        scanned.format === 'oci-layout'
          ? (d, what) => ensureBlob(d, deps.store, track, source, what)
          : (d, what) => ensureBlobFromStore(d, deps.store, what);
      records.push(await resolvePlan(plan, name, deps.store, fetch, opts));
    }
    const recorded = images.putMany(records);
    // Blobs that arrived with the source but no recorded image reaches (other platforms, metadata
    // files of a docker-archive) go now, unless something else holds them.
    await dropUnreferenced(added, deps, lease.id);
    lease.release();
    const kept: Digest[] = [];
    for (const d of added) if (await deps.store.has(d)) kept.push(d);
    return { format: scanned.format, images: recorded, added: kept };
  } catch (err) {
    await dropUnreferenced(added, deps, lease.id).catch(() => undefined);
    lease.release();
    if (err instanceof BerthError) throw err;
    throw withContext(`import ${source}`, err);
  }
}

function defaultName(source: string): string {
  const base = path
    .basename(source)
    .replace(/\.(tar|tgz|tar\.gz|oci|docker)$/i, '')
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '');
  return base || 'image';
}

/** Delete blobs in `candidates` that no image and no other live lease reaches. */
async function dropUnreferenced(
  candidates: Digest[],
  deps: { store: ContentStore; db: Db },
  ownLease: string,
) {
  if (candidates.length === 0) return;
  const keep = new Set<Digest>();
  for (const img of new ImageRepo(deps.db, deps.store).list()) {
    const { digests } = await reachableBlobs(deps.store, { digest: img.digest, mediaType: img.mediaType });
    for (const d of digests) keep.add(d);
  }
  for (const d of new Leases(deps.db).heldDigests(ownLease)) keep.add(d);
  for (const d of candidates) if (!keep.has(d)) await deps.store.delete(d);
}

// ---------------------------------------------------------------------------------------------------
// Scanning: one streaming pass over the source; every blob goes into the content store verified.

type Track = (digest: Digest | undefined, write: () => Promise<BlobInfo>) => Promise<void>;

async function scanSource(
  source: string,
  store: ContentStore,
  track: Track,
  onProgress?: (bytes: number, total: number) => void,
): Promise<Scanned> {
  let st: import('node:fs').Stats;
  try {
    st = await fsp.stat(source);
  } catch (err) {
    throw withContext(`image source ${source} (${EXPECTED_SOURCE})`, err);
  }
  if (st.isDirectory()) return scanOciDir(source);
  if (!st.isFile())
    throw invalidInput(`image source ${source} is neither a directory nor a file (${EXPECTED_SOURCE})`);
  return scanTar(createReadStream(source), source, st.size, store, track, onProgress);
}

async function scanOciDir(dir: string): Promise<Scanned> {
  const layout = await readSmallFile(
    path.join(dir, 'oci-layout'),
    `${dir}: not an OCI image layout (no oci-layout file)`,
  );
  checkOciLayout(layout, dir);
  const indexJson = await readSmallFile(
    path.join(dir, 'index.json'),
    `${dir}: OCI layout without index.json`,
  );
  return { format: 'oci-layout', indexJson, paths: new Map() };
}

async function readSmallFile(file: string, missingMsg: string): Promise<Buffer> {
  try {
    const st = await fsp.stat(file);
    if (st.size > MAX_JSON) throw invalidInput(`${file} is too large (${st.size} bytes) for image metadata`);
    return await fsp.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw invalidInput(missingMsg);
    throw withContext(`cannot read ${file}`, err);
  }
}

function checkOciLayout(bytes: Buffer, where: string): void {
  const doc = parseJsonDoc(z.object({ imageLayoutVersion: z.string() }), bytes, `${where}: oci-layout`);
  if (!doc.imageLayoutVersion.startsWith('1.')) {
    throw invalidInput(`${where}: unsupported OCI layout version ${doc.imageLayoutVersion}`);
  }
}

/** Normalise an archive entry name; reject anything that would leave the archive's root. */
export function archiveEntryPath(name: string): string {
  const raw = name.replace(/\\/g, '/');
  if (raw.startsWith('/') || raw.split('/').includes('..')) {
    throw invalidInput(`archive entry ${JSON.stringify(name)} escapes the archive root`);
  }
  return path.posix
    .normalize(raw)
    .replace(/^(\.\/)+/, '')
    .replace(/\/$/, '');
}

async function scanTar(
  input: Readable,
  file: string,
  size: number,
  store: ContentStore,
  track: Track,
  onProgress?: (bytes: number, total: number) => void,
): Promise<Scanned> {
  const extract = tarStream.extract();
  const small = new Map<string, Buffer>();
  const paths = new Map<string, { digest: Digest; size: number }>();
  const links = new Map<string, string>();
  let sawOciLayout = false;
  let sawDockerManifest = false;
  let sawAnything = false;

  extract.on('entry', (header, stream, next) => {
    // When the archive fails mid-entry (a cut or oversized upload), tar-stream destroys the entry's
    // stream with that error, possibly while nothing reads it yet: without a listener that was an
    // uncaught exception in the fleet server. The failure itself reaches scanTar through the pipeline.
    stream.on('error', () => undefined);
    const handle = async () => {
      sawAnything = true;
      const name = archiveEntryPath(header.name);
      if (header.type === 'symlink' || header.type === 'link') {
        const target = header.linkname ?? '';
        // docker save shares layers between images as symlinks ("../<id>/layer.tar").
        const resolved =
          header.type === 'symlink' ? path.posix.join(path.posix.dirname(name), target) : target;
        links.set(name, archiveEntryPath(resolved));
        stream.resume();
        return;
      }
      if (header.type !== 'file' && header.type !== 'contiguous-file') {
        stream.resume();
        return;
      }
      const blobMatch = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(name);
      if (
        name === 'oci-layout' ||
        name === 'index.json' ||
        name === 'manifest.json' ||
        name === 'repositories'
      ) {
        if ((header.size ?? 0) > MAX_JSON)
          throw invalidInput(`${file}: ${name} is too large for image metadata`);
        small.set(name, await collect(stream as unknown as Readable));
        if (name === 'oci-layout') sawOciLayout = true;
        if (name === 'manifest.json') sawDockerManifest = true;
        return;
      }
      if (blobMatch) {
        const digest = `sha256:${blobMatch[1]}` as Digest;
        await track(digest, async () => {
          try {
            return await store.putStream(stream as unknown as Readable, {
              expected: digest,
              size: header.size,
            });
          } catch (err) {
            if (err instanceof BerthError && err.code === 'Corrupt') {
              throw corrupt(`${file}: ${name} does not match its digest (${err.message})`);
            }
            throw err;
          }
        });
        paths.set(name, { digest, size: header.size ?? 0 });
        return;
      }
      // docker-archive: layers and configs are named by path, so hash what streams past.
      let info: BlobInfo | undefined;
      await track(undefined, async () => {
        info = await store.putStream(stream as unknown as Readable);
        return info;
      });
      paths.set(name, { digest: info!.digest, size: info!.size });
    };
    handle().then(
      () => next(),
      (err) => {
        stream.resume();
        next(err);
      },
    );
  });

  // Bytes are counted inside the pipeline: a 'data' listener on the file stream would start it flowing
  // before the pipeline is attached, and the tar parser would miss the archive's first blocks.
  let n = 0;
  const count = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      onProgress?.(n, size);
      cb(null, chunk);
    },
  });
  try {
    const { gzip, stream } = await sniffGzip(input);
    if (gzip) await pipeline(stream, count, createGunzip(), extract);
    else await pipeline(stream, count, extract);
  } catch (err) {
    input.destroy();
    if (err instanceof BerthError) throw err;
    if ((err as NodeJS.ErrnoException).code && (err as NodeJS.ErrnoException).syscall)
      throw withContext(`cannot read ${file}`, err);
    const msg = (err as Error).message ?? String(err);
    throw invalidInput(`${file}: not a readable tar archive (${msg})`, err);
  }
  if (!sawAnything) throw invalidInput(`${file}: empty or not a tar archive`);
  for (const [from, to] of links) {
    const target = paths.get(to);
    if (target) paths.set(from, target);
  }
  if (sawOciLayout) {
    checkOciLayout(small.get('oci-layout')!, file);
    const indexJson = small.get('index.json');
    if (!indexJson) throw invalidInput(`${file}: oci-archive without index.json`);
    return { format: 'oci-archive', indexJson, paths };
  }
  if (sawDockerManifest) return { format: 'docker-archive', indexJson: small.get('manifest.json')!, paths };
  throw invalidInput(
    `${file}: neither an oci-archive (no oci-layout) nor a docker-archive (no manifest.json)`,
  );
}

/** Look at the first bytes for gzip's magic without losing them: the stream returned starts at byte 0. */
async function sniffGzip(src: Readable): Promise<{ gzip: boolean; stream: Readable }> {
  const it = src[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let got = 0;
  let done = false;
  while (got < 2) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    head.push(r.value as Buffer);
    got += (r.value as Buffer).length;
  }
  const first = Buffer.concat(head);
  async function* all() {
    if (first.length) yield first;
    if (done) return;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value as Buffer;
  }
  return {
    gzip: first[0] === 0x1f && first[1] === 0x8b,
    stream: Readable.from(all(), { objectMode: false }),
  };
}

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------------
// The source: a path, optionally a transport (skopeo's words) and a reference selecting one image.

const EXPECTED_SOURCE =
  'expected an OCI image layout directory, an oci-archive or a docker-archive tar; <path>:<ref> selects one image';

const TRANSPORTS = {
  oci: 'oci-layout',
  'oci-archive': 'oci-archive',
  'docker-archive': 'docker-archive',
} as const;

export interface ImageSource {
  path: string;
  /** the image to take from a source that holds several (OCI ref.name, docker RepoTag) */
  ref?: string | undefined;
  /** the format the spec insisted on (`oci:…`, `oci-archive:…`, `docker-archive:…`) */
  transport?: SourceFormat | undefined;
}

const exists = (p: string) =>
  fsp.stat(p).then(
    () => true,
    () => false,
  );

/**
 * `[transport:]path[:ref]`, as skopeo writes `oci:dir:ref`: the path is the shortest prefix (split at a
 * colon) that exists, so paths containing colons still work; a spec naming nothing that exists is
 * NotFound with what was expected.
 */
export async function resolveImageSource(spec: string): Promise<ImageSource> {
  let rest = spec;
  let transport: SourceFormat | undefined;
  const t = /^(oci|oci-archive|docker-archive):(.+)$/.exec(spec);
  if (t && !(await exists(spec))) {
    transport = TRANSPORTS[t[1] as keyof typeof TRANSPORTS];
    rest = t[2]!;
  }
  if (await exists(rest)) return { path: rest, transport };
  for (let i = rest.indexOf(':'); i > 0; i = rest.indexOf(':', i + 1)) {
    const p = rest.slice(0, i);
    if (await exists(p)) {
      const ref = rest.slice(i + 1);
      if (!ref) throw invalidInput(`image source ${spec}: empty reference after ${p}:`);
      return { path: p, ref, transport };
    }
  }
  throw notFound(`image source ${spec}: no such file or directory (${EXPECTED_SOURCE})`);
}

/** The plans `ref` names: OCI ref.name as written ("v1", "sample:v1") or the name berth would give it. */
function selectPlans(plans: Plan[], ref: string, source: string, format: SourceFormat): Plan[] {
  const strip = (s: string) => s.replace(/^docker\.io\/(library\/)?/, '');
  const want = strip(ref);
  const withTag = want.includes(':') || want.includes('@') ? want : `${want}:latest`;
  const hit = plans.filter(
    (p) =>
      p.ref === ref ||
      (p.ref !== undefined && strip(p.ref) === want) ||
      p.name === want ||
      p.name === withTag ||
      (p.ref !== undefined && format === 'docker-archive' && strip(p.ref) === withTag),
  );
  if (hit.length === 0) {
    const have = plans.map((p) => p.ref ?? p.name ?? '(unnamed)').join(', ');
    throw notFound(`${source} has no image ${ref} (it has: ${have})`);
  }
  return hit;
}

// ---------------------------------------------------------------------------------------------------
// Planning: which images the source holds, as root descriptors already in the content store.

interface Plan {
  name: string | undefined;
  /** how the source names it (OCI ref.name annotation, docker RepoTag), for `source:ref` selection */
  ref?: string | undefined;
  root: Descriptor;
}

async function ensureBlob(
  d: Descriptor,
  store: ContentStore,
  track: Track,
  source: string,
  what: string,
): Promise<void> {
  if (await store.has(d.digest)) {
    const info = await store.info(d.digest);
    if (info.size !== d.size)
      throw corrupt(`${what} ${d.digest} has ${info.size} bytes, descriptor says ${d.size}`);
    return;
  }
  const file = path.join(source, 'blobs', 'sha256', digestHex(d.digest));
  try {
    // Open first: a missing file is then an error here, not an unhandled stream event.
    const fh = await fsp.open(file, 'r');
    try {
      await track(d.digest, () =>
        store.putStream(fh.createReadStream({ autoClose: false, highWaterMark: 1 << 20 }), {
          expected: d.digest,
          size: d.size,
        }),
      );
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as BerthError).code === 'NotFound' || (err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw invalidInput(`${what} ${d.digest} is missing from ${source}`);
    }
    if (err instanceof BerthError && err.code === 'Corrupt')
      throw corrupt(`${what} ${d.digest} in ${source}: ${err.message}`);
    throw err;
  }
}

async function planOciLayout(
  scanned: Scanned,
  store: ContentStore,
  track: Track,
  source: string,
): Promise<Plan[]> {
  const index = parseJsonDoc(IndexSchema, scanned.indexJson, `${source}: index.json`);
  const named = index.manifests.filter((m) => m.annotations?.['org.opencontainers.image.ref.name']);
  if (named.length > 0 || index.manifests.length === 1) {
    return (named.length > 0 ? named : index.manifests).map((root) => ({
      name: refName(root.annotations?.['org.opencontainers.image.ref.name'], source),
      ref: root.annotations?.['org.opencontainers.image.ref.name'],
      root,
    }));
  }
  // index.json itself is the multi-platform index (entries carry platforms, no names).
  const bytes = scanned.indexJson;
  const digest = sha256Digest(bytes);
  await track(digest, () => store.put(bytes, { expected: digest }));
  return [{ name: undefined, root: { mediaType: MediaTypes.OciIndex, digest, size: bytes.length } }];
}

/** OCI ref.name is a full reference ("busybox:1.36") or just a tag ("1.36", "latest"). */
function refName(ann: string | undefined, source: string): string | undefined {
  if (!ann) return undefined;
  if (ann.includes('/') || ann.includes(':')) return ann;
  return `${defaultName(source)}:${ann}`;
}

const DockerManifestSchema = z.array(
  z.object({
    Config: z.string().min(1),
    RepoTags: z.array(z.string()).nullish(),
    Layers: z.array(z.string().min(1)),
  }),
);

async function planDockerArchive(
  scanned: Scanned,
  store: ContentStore,
  track: Track,
  source: string,
): Promise<Plan[]> {
  const entries = parseJsonDoc(DockerManifestSchema, scanned.indexJson, `${source}: manifest.json`);
  const plans: Plan[] = [];
  for (const e of entries) {
    const find = (p: string, what: string) => {
      const hit = scanned.paths.get(archiveEntryPath(p));
      if (!hit)
        throw invalidInput(`${source}: manifest.json names ${what} ${p}, which is not in the archive`);
      return hit;
    };
    const cfg = find(e.Config, 'config');
    const configBytes = await store.get(cfg.digest);
    const config = parseJsonDoc(ImageConfigSchema, configBytes, `${source}: config ${e.Config}`);
    const nameHex = /([a-f0-9]{64})(\.json)?$/.exec(e.Config)?.[1];
    if (nameHex && `sha256:${nameHex}` !== cfg.digest) {
      throw corrupt(`${source}: config ${e.Config} does not match its name (hashes to ${cfg.digest})`);
    }
    if (config.rootfs.diff_ids.length !== e.Layers.length) {
      throw corrupt(
        `${source}: config lists ${config.rootfs.diff_ids.length} diff_ids for ${e.Layers.length} layers`,
      );
    }
    const layers: Descriptor[] = [];
    for (const [i, p] of e.Layers.entries()) {
      const blob = find(p, `layer ${i}`);
      const head = (await await store.reader(blob.digest, { start: 0, end: 1 }).then(collect)) as Buffer;
      const gz = head[0] === 0x1f && head[1] === 0x8b;
      if (!gz && blob.digest !== config.rootfs.diff_ids[i]) {
        throw corrupt(
          `${source}: layer ${p} hashes to ${blob.digest}, config says diff_id ${config.rootfs.diff_ids[i]}`,
        );
      }
      layers.push({
        mediaType: gz ? MediaTypes.OciLayerGzip : MediaTypes.OciLayer,
        digest: blob.digest,
        size: blob.size,
      });
    }
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MediaTypes.OciManifest,
      config: { mediaType: MediaTypes.OciConfig, digest: cfg.digest, size: cfg.size },
      layers,
    };
    const mbytes = Buffer.from(JSON.stringify(manifest));
    const mdigest = sha256Digest(mbytes);
    await track(mdigest, () => store.put(mbytes, { expected: mdigest }));
    const root: Descriptor = { mediaType: MediaTypes.OciManifest, digest: mdigest, size: mbytes.length };
    const tags = e.RepoTags ?? [];
    if (tags.length === 0) plans.push({ name: undefined, root });
    for (const t of tags) plans.push({ name: t.replace(/^docker\.io\/(library\/)?/, ''), ref: t, root });
  }
  return plans;
}

async function ensureBlobFromStore(d: Descriptor, store: ContentStore, what: string): Promise<void> {
  if (!(await store.has(d.digest))) throw invalidInput(`${what} ${d.digest} is missing from the source`);
  const info = await store.info(d.digest);
  if (info.size !== d.size)
    throw corrupt(`${what} ${d.digest} has ${info.size} bytes, its descriptor says ${d.size}`);
}
