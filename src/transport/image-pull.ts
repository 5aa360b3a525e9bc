import { randomBytes } from 'node:crypto';
import { ImageRepo } from '../content/images.js';
import { Leases } from '../content/leases.js';
import type { ContentStore } from '../content/store.js';
import type { Db } from '../db/database.js';
import { notFound, unsupported } from '../lib/errors.js';
import type { Digest } from '../oci/digest.js';
import { MediaTypes } from '../oci/media-types.js';
import { formatPlatform, type PlatformSpec, selectManifest } from '../oci/platform.js';
import {
  type Descriptor,
  ImageConfigSchema,
  IndexSchema,
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
  const { fetcher, store, db, ref, platform } = opts;
  const before = fetcher.stats.receivedBytes;
  const lease = new Leases(db).create(`pull-${randomBytes(6).toString('hex')}`, 24 * 3600_000);
  const addLease = (d: Digest) => lease.add(d);
  try {
    const top = await fetcher.resolve(ref);
    if (opts.expectDigest && top.digest !== opts.expectDigest)
      throw notFound(`image ${ref} in the fleet is ${top.digest}, the target pins ${opts.expectDigest}`);
    addLease(top.digest);
    await fetcher.fetchBlob(top);
    let manifestDesc: Descriptor = { mediaType: top.mediaType, digest: top.digest, size: top.size };
    let indexDigest: Digest | undefined;
    if (INDEX_TYPES.has(top.mediaType)) {
      const index = parseJsonDoc(IndexSchema, await store.get(top.digest), `index of ${ref}`);
      const m = selectManifest(index.manifests, platform);
      if (!m) throw unsupported(`image ${ref} has no manifest for ${formatPlatform(platform)}`);
      indexDigest = top.digest;
      manifestDesc = m;
      addLease(m.digest);
      await fetcher.fetchBlob(m);
    }
    const manifest = parseJsonDoc(ManifestSchema, await store.get(manifestDesc.digest), `manifest of ${ref}`);
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
