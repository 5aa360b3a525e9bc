import { randomBytes } from 'node:crypto';
import { ImageRepo } from '../content/images.js';
import { Leases } from '../content/leases.js';
import type { ContentStore } from '../content/store.js';
import type { Db } from '../db/database.js';
import { notFound, unavailable, unsupported } from '../lib/errors.js';
import type { Digest } from '../oci/digest.js';
import { MediaTypes } from '../oci/media-types.js';
import { formatPlatform, type PlatformSpec, selectManifest } from '../oci/platform.js';
import {
  type Descriptor,
  type ImageConfig,
  ImageConfigSchema,
  IndexSchema,
  type Manifest,
  ManifestSchema,
  parseJsonDoc,
} from '../oci/types.js';
import type { BlobFetcher } from './blob-fetcher.js';

/**
 * Pull one image from the fleet: resolve the name, fetch the top-level document, pick this device's
 * manifest from an index, fetch config and layers (each resumable, each verified), then record the
 * image in `images` exactly as a local import does. A lease covers the blobs while the pull runs, so a
 * concurrent GC never removes half an image.
 */
export interface PulledImage {
  name: string;
  digest: Digest;
  indexDigest: Digest | undefined;
  configDigest: Digest;
  platform: string;
  size: number;
  fetchedBytes: number;
}

export type PullProgress = (done: number, total: number, what: string) => void;

const INDEX_TYPES = new Set<string>([MediaTypes.OciIndex, MediaTypes.DockerManifestList]);

/** What an image needs, learnt before its layers are fetched (for the free-space check). */
export interface DescribedImage {
  manifestDesc: Descriptor;
  indexDigest: Digest | undefined;
  manifest: Manifest;
  config: ImageConfig;
  /** bytes fetched to learn this (top-level document, manifest, config) */
  fetchedBytes: number;
}

interface ManifestContext {
  fetcher: BlobFetcher;
  store: ContentStore;
  ref: string;
  platform: PlatformSpec;
  expectDigest?: Digest | undefined;
  /** called before each blob is fetched (a pull's lease) */
  onBlob?: (digest: Digest) => void;
  /** not connected: fail at once (Unavailable) instead of waiting when a document must be fetched */
  offline?: boolean;
}

async function fetchDoc(c: ManifestContext, desc: { digest: Digest; size: number }): Promise<void> {
  c.onBlob?.(desc.digest);
  if (c.offline && !(await c.store.has(desc.digest)))
    throw unavailable(`cannot describe image ${c.ref}: not connected to the fleet`);
  await c.fetcher.fetchBlob(desc);
}

/**
 * The fleet's top-level document for `ref`, then this device's manifest from it. With `preferLocal`, a
 * pinned top-level document already in the store is used without asking the fleet (the pin comes from
 * the signed target, so the local copy is the one wanted).
 */
async function platformManifest(
  c: ManifestContext,
  preferLocal: boolean,
): Promise<{ manifestDesc: Descriptor; indexDigest: Digest | undefined; manifest: Manifest }> {
  const { fetcher, store, ref } = c;
  let top: { mediaType: string; digest: Digest; size: number };
  if (preferLocal && c.expectDigest && (await store.has(c.expectDigest))) {
    const doc = JSON.parse((await store.get(c.expectDigest)).toString()) as {
      mediaType?: string;
      manifests?: unknown;
    };
    const mediaType = doc.mediaType ?? (doc.manifests ? MediaTypes.OciIndex : MediaTypes.OciManifest);
    top = { mediaType, digest: c.expectDigest, size: (await store.info(c.expectDigest)).size };
  } else {
    if (c.offline) throw unavailable(`cannot resolve image ${ref}: not connected to the fleet`);
    top = await fetcher.resolve(ref);
    if (c.expectDigest && top.digest !== c.expectDigest)
      throw notFound(`image ${ref} in the fleet is ${top.digest}, the target pins ${c.expectDigest}`);
  }
  await fetchDoc(c, top);
  let manifestDesc: Descriptor = { mediaType: top.mediaType, digest: top.digest, size: top.size };
  let indexDigest: Digest | undefined;
  if (INDEX_TYPES.has(top.mediaType)) {
    const index = parseJsonDoc(IndexSchema, await store.get(top.digest), `index of ${ref}`);
    const m = selectManifest(index.manifests, c.platform);
    if (!m) throw unsupported(`image ${ref} has no manifest for ${formatPlatform(c.platform)}`);
    indexDigest = top.digest;
    manifestDesc = m;
    await fetchDoc(c, m);
  }
  const manifest = parseJsonDoc(ManifestSchema, await store.get(manifestDesc.digest), `manifest of ${ref}`);
  return { manifestDesc, indexDigest, manifest };
}

/**
 * Learn what pulling `ref` would take — manifest and config (small), no layers — using the pinned
 * documents already in the store when they are there. The layer descriptors give the download size, the
 * config's DiffIDs tell which layers are already unpacked.
 */
export async function describeImage(opts: Omit<ManifestContext, 'onBlob'>): Promise<DescribedImage> {
  const before = opts.fetcher.stats.receivedBytes;
  const m = await platformManifest(opts, true);
  await fetchDoc(opts, m.manifest.config);
  const config = parseJsonDoc(
    ImageConfigSchema,
    await opts.store.get(m.manifest.config.digest),
    `config of ${opts.ref}`,
  );
  return { ...m, config, fetchedBytes: opts.fetcher.stats.receivedBytes - before };
}

export async function pullImage(opts: {
  fetcher: BlobFetcher;
  store: ContentStore;
  db: Db;
  ref: string;
  platform: PlatformSpec;
  /** When given, the digest the target pinned: the resolved top-level document must match it. */
  expectDigest?: Digest | undefined;
  onProgress?: PullProgress | undefined;
}): Promise<PulledImage> {
  const { fetcher, store, db, ref } = opts;
  const before = fetcher.stats.receivedBytes;
  const lease = new Leases(db).create(`pull-${randomBytes(6).toString('hex')}`, 24 * 3600_000);
  const addLease = (d: Digest) => lease.add(d);
  try {
    const { manifestDesc, indexDigest, manifest } = await platformManifest(
      { ...opts, onBlob: addLease },
      false,
    );
    const blobs = [manifest.config, ...manifest.layers];
    const total = blobs.reduce((n, b) => n + b.size, 0);
    let done = 0;
    for (const b of blobs) {
      addLease(b.digest);
      const what = b === manifest.config ? 'config' : `layer ${b.digest.slice(7, 19)}`;
      await fetcher.fetchBlob(b, (d) => opts.onProgress?.(done + d, total, what));
      done += b.size;
      opts.onProgress?.(done, total, what);
    }
    const config = parseJsonDoc(
      ImageConfigSchema,
      await store.get(manifest.config.digest),
      `config of ${ref}`,
    );
    const plat = formatPlatform({
      os: config.os,
      architecture: config.architecture,
      variant: config.variant,
    });
    const size = manifestDesc.size + total;
    new ImageRepo(db, store).put({
      name: ref,
      digest: manifestDesc.digest,
      mediaType: manifestDesc.mediaType,
      indexDigest,
      configDigest: manifest.config.digest,
      platform: plat,
      size,
    });
    return {
      name: ref,
      digest: manifestDesc.digest,
      indexDigest,
      configDigest: manifest.config.digest,
      platform: plat,
      size,
      fetchedBytes: fetcher.stats.receivedBytes - before,
    };
  } finally {
    lease.release();
  }
}
