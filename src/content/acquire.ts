import { randomBytes } from 'node:crypto';
import type { Db } from '../db/database.js';
import { BerthError, corrupt, invalidInput, unavailable } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { Digest } from '../oci/digest.js';
import {
  isConfigType,
  isIndexType,
  isManifestType,
  layerCompression,
  MediaTypes,
} from '../oci/media-types.js';
import { formatPlatform, normalizePlatform, type PlatformSpec, selectManifest } from '../oci/platform.js';
import {
  type Descriptor,
  type ImageConfig,
  ImageConfigSchema,
  type Index,
  IndexSchema,
  type Manifest,
  ManifestSchema,
  parseJsonDoc,
} from '../oci/types.js';
import type { Snapshotter } from '../snapshots/snapshotter.js';
import { type UnpackLayerResult, unpackImage } from '../snapshots/unpack.js';
import { type ImageRecord, ImageRepo } from './images.js';
import { Leases } from './leases.js';
import type { ContentStore } from './store.js';

/**
 * One image path. Every way an image reaches this machine — pulled from the fleet over MQTT, imported
 * from an OCI layout or an archive — is an ImageSource (where blobs come from) behind the same steps
 * here: resolve the name to its top-level document, pick this platform's manifest from an index,
 * fetch and check config and layers (known media types, one DiffID per layer, digests verified by the
 * content store as each blob lands), record the image (`images`), and unpack it into snapshots named by
 * ChainID. A lease covers the blobs while an acquisition runs, so a concurrent GC never takes half an
 * image.
 *
 * Sources: `FleetImageSource` (src/transport/fleet-source.ts: signed resolve, chunked resumable
 * transfer) and the archive/layout reader of src/content/import.ts (which scans a source once and then
 * resolves each image it holds with `resolvePlan`).
 */
export interface ImageSource {
  /** What `ref` names: its top-level descriptor (an index or a manifest). */
  resolve(ref: string): Promise<Descriptor>;
  /** Make `desc` present in the content store, verified against its digest. */
  fetch(desc: Descriptor, what: string, onProgress?: (done: number, total: number) => void): Promise<void>;
}

export type AcquireProgress = (done: number, total: number, what: string) => void;

export interface AcquireOptions {
  platform: PlatformSpec;
  /** The digest a signed target pinned for `ref`: the resolved top-level document must be it. */
  expectDigest?: Digest | undefined;
  onProgress?: AcquireProgress | undefined;
}

/** What an image needs, learnt before its layers are fetched (for the free-space check). */
export interface DescribedImage {
  manifestDesc: Descriptor;
  indexDigest: Digest | undefined;
  manifest: Manifest;
  config: ImageConfig;
}

export interface AcquiredImage {
  name: string;
  digest: Digest;
  indexDigest: Digest | undefined;
  configDigest: Digest;
  platform: string;
  size: number;
}

export class ImageAcquisition {
  private readonly repo: ImageRepo;

  constructor(
    private readonly o: {
      db: Db;
      store: ContentStore;
      /** needed for `unpack` only */
      snapshotter?: Snapshotter | undefined;
      log?: Logger | undefined;
    },
  ) {
    this.repo = new ImageRepo(o.db, o.store);
  }

  /**
   * Fetch `ref` from `source` for this platform, check it and record it: manifest and config first (so
   * the total is known), then the layers with progress, then the same resolution an import does.
   */
  async acquire(source: ImageSource, ref: string, opts: AcquireOptions): Promise<AcquiredImage> {
    const lease = new Leases(this.o.db).create(`acquire-${randomBytes(6).toString('hex')}`, 24 * 3600_000);
    try {
      const fetch = this.verifiedFetch(source, (d) => lease.add(d));
      const top = await this.top(source, ref, opts, false);
      const d = await this.describeFrom(top, fetch, ref, opts.platform);
      const blobs = d.manifest.layers;
      const total = d.manifest.config.size + blobs.reduce((n, b) => n + b.size, 0);
      let done = d.manifest.config.size;
      opts.onProgress?.(done, total, 'config');
      for (const [i, b] of blobs.entries()) {
        const what = `layer ${b.digest.slice(7, 19)}`;
        await fetch(b, `layer ${i} of ${ref}`, (n) => opts.onProgress?.(done + n, total, what));
        done += b.size;
        opts.onProgress?.(done, total, what);
      }
      const record = await resolvePlan({ root: top }, ref, this.o.store, fetch, { platform: opts.platform });
      this.repo.put(record);
      return {
        name: record.name,
        digest: record.digest,
        indexDigest: record.indexDigest,
        configDigest: record.configDigest!,
        platform: record.platform,
        size: record.size,
      };
    } finally {
      lease.release();
    }
  }

  /**
   * Manifest and config of `ref` for this platform, no layers. With a pinned digest whose document the
   * store already holds, that document is used without asking the source (the pin comes from a signed
   * target); `offline` refuses (Unavailable) instead of asking the source for anything missing.
   */
  async describe(
    source: ImageSource,
    ref: string,
    opts: AcquireOptions & { offline?: boolean | undefined },
  ): Promise<DescribedImage> {
    const lease = new Leases(this.o.db).create(`describe-${randomBytes(6).toString('hex')}`, 3600_000);
    try {
      const base = this.verifiedFetch(source, (d) => lease.add(d));
      const fetch: FetchBlob = async (d, what) => {
        if (opts.offline && !(await this.o.store.has(d.digest)))
          throw unavailable(`cannot describe image ${ref}: not connected to the fleet`);
        await base(d, what);
      };
      const top = await this.top(source, ref, opts, true);
      return await this.describeFrom(top, fetch, ref, opts.platform);
    } finally {
      lease.release();
    }
  }

  /** Unpack a recorded image into committed snapshots named by ChainID (present layers are reused). */
  async unpack(
    ref: string,
    opts: { labels?: Record<string, string> } = {},
  ): Promise<{ chainId: Digest; layers: UnpackLayerResult[] }> {
    if (!this.o.snapshotter) throw invalidInput('no snapshotter: this acquisition cannot unpack');
    const img = await this.repo.resolve(ref);
    return unpackImage({
      store: this.o.store,
      snapshotter: this.o.snapshotter,
      layers: img.layers,
      diffIds: img.diffIds,
      ...(this.o.log ? { log: this.o.log } : {}),
      ...(opts.labels ? { labels: opts.labels } : {}),
    });
  }

  /** Fetch through the source unless present; a present blob must have its descriptor's size. */
  private verifiedFetch(
    source: ImageSource,
    lease: (d: Digest) => void,
  ): (d: Descriptor, what: string, onProgress?: (done: number) => void) => Promise<void> {
    return async (d, what, onProgress) => {
      lease(d.digest);
      if (await this.o.store.has(d.digest)) {
        const info = await this.o.store.info(d.digest);
        if (info.size !== d.size)
          throw corrupt(`${what} ${d.digest} has ${info.size} bytes, its descriptor says ${d.size}`);
        return;
      }
      await source.fetch(d, what, onProgress ? (n) => onProgress(n) : undefined);
    };
  }

  /** The top-level descriptor: a pinned local document when allowed and present, else the source's. */
  private async top(
    source: ImageSource,
    ref: string,
    opts: AcquireOptions & { offline?: boolean | undefined },
    preferLocal: boolean,
  ): Promise<Descriptor> {
    const pin = opts.expectDigest;
    if (preferLocal && pin && (await this.o.store.has(pin))) {
      const doc = JSON.parse((await this.o.store.get(pin)).toString()) as {
        mediaType?: string;
        manifests?: unknown;
      };
      const mediaType = doc.mediaType ?? (doc.manifests ? MediaTypes.OciIndex : MediaTypes.OciManifest);
      return { mediaType, digest: pin, size: (await this.o.store.info(pin)).size };
    }
    if (opts.offline) throw unavailable(`cannot resolve image ${ref}: not connected to the fleet`);
    const top = await source.resolve(ref);
    if (pin && top.digest !== pin)
      throw new BerthError('NotFound', `image ${ref} in the fleet is ${top.digest}, the target pins ${pin}`);
    return top;
  }

  private async describeFrom(
    top: Descriptor,
    fetch: FetchBlob,
    ref: string,
    platform: PlatformSpec,
  ): Promise<DescribedImage> {
    await fetch(top, `top-level document of ${ref}`);
    let manifestDesc = top;
    let indexDigest: Digest | undefined;
    if (isIndexType(top.mediaType)) {
      const index = parseJsonDoc(IndexSchema, await this.o.store.get(top.digest), `index of ${ref}`);
      manifestDesc = selectFromIndex(index, platform, ref);
      indexDigest = top.digest;
      await fetch(manifestDesc, `manifest of ${ref}`);
    }
    const manifest = parseJsonDoc(
      ManifestSchema,
      await this.o.store.get(manifestDesc.digest),
      `manifest of ${ref}`,
    );
    await fetch(manifest.config, `config of ${ref}`);
    const config = parseJsonDoc(
      ImageConfigSchema,
      await this.o.store.get(manifest.config.digest),
      `config of ${ref}`,
    );
    return { manifestDesc, indexDigest, manifest, config };
  }
}

// ---------------------------------------------------------------------------------------------------
// Resolution: pick the platform, check every referenced blob is present, known and verified.

/** Make one blob present and verified (`what` names it in errors: "layer 2 of app:1"). */
export type FetchBlob = (d: Descriptor, what: string) => Promise<void>;

export interface ResolveOptions {
  /** The device's platform: the manifest picked from an index. */
  platform: PlatformSpec;
  /** Keep every platform of an index (the fleet keeps them): the record then names the index. */
  allPlatforms?: boolean | undefined;
}

/**
 * The image record for `plan.root` under `name`: the root fetched, the platform's manifest picked from
 * an index (or every manifest, with `allPlatforms`), config and layers fetched through `fetch` and
 * checked (known media types, as many DiffIDs as layers, a single-platform image of this platform).
 */
export async function resolvePlan(
  plan: { root: Descriptor },
  name: string,
  store: ContentStore,
  fetch: FetchBlob,
  opts: ResolveOptions,
): Promise<Omit<ImageRecord, 'createdAt'>> {
  const root = plan.root;
  await fetch(root, `root of ${name}`);
  if (isIndexType(root.mediaType)) {
    const index = parseJsonDoc(IndexSchema, await store.get(root.digest), `index ${root.digest}`);
    if (opts.allPlatforms) {
      let size = root.size;
      const platforms: string[] = [];
      for (const m of index.manifests) {
        if (!isManifestType(m.mediaType)) continue;
        const r = await checkManifest(m, store, fetch, name);
        size += r.size;
        if (m.platform) platforms.push(formatPlatform(normalizePlatform(m.platform)));
      }
      return {
        name,
        digest: root.digest,
        mediaType: root.mediaType,
        indexDigest: root.digest,
        configDigest: undefined,
        platform: platforms.join(',') || 'unknown',
        size,
      };
    }
    const chosen = selectFromIndex(index, opts.platform, name);
    const r = await checkManifest(chosen, store, fetch, name);
    return {
      name,
      digest: chosen.digest,
      mediaType: chosen.mediaType,
      indexDigest: root.digest,
      configDigest: r.configDigest,
      platform: r.platform,
      size: r.size,
    };
  }
  if (!isManifestType(root.mediaType)) {
    throw invalidInput(
      `image ${name}: unknown media type ${root.mediaType} (expected an OCI/Docker manifest or index)`,
    );
  }
  const r = await checkManifest(root, store, fetch, name);
  const want = normalizePlatform(opts.platform);
  const have = parsePlatformString(r.platform);
  if (!opts.allPlatforms && (have.os !== want.os || have.architecture !== want.architecture)) {
    throw invalidInput(
      `image ${name} is for ${r.platform}, this device is ${formatPlatform(want)} (use --platform to import or pull it anyway)`,
    );
  }
  return {
    name,
    digest: root.digest,
    mediaType: root.mediaType,
    indexDigest: undefined,
    configDigest: r.configDigest,
    platform: r.platform,
    size: r.size,
  };
}

function parsePlatformString(s: string): PlatformSpec {
  const [os, architecture, variant] = s.split('/');
  return { os: os ?? '', architecture: architecture ?? '', variant };
}

function selectFromIndex(index: Index, want: PlatformSpec, name: string): Descriptor {
  const chosen = selectManifest(
    index.manifests.filter((m) => isManifestType(m.mediaType)),
    want,
  );
  if (!chosen) {
    const have = index.manifests
      .filter((m) => m.platform)
      .map((m) => formatPlatform(normalizePlatform(m.platform!)))
      .join(', ');
    throw new BerthError(
      'NotFound',
      `image ${name} has no manifest for ${formatPlatform(normalizePlatform(want))} (it has: ${have || 'none'})`,
    );
  }
  return chosen;
}

async function checkManifest(
  d: Descriptor,
  store: ContentStore,
  fetch: FetchBlob,
  name: string,
): Promise<{ configDigest: Digest; platform: string; size: number }> {
  await fetch(d, `manifest of ${name}`);
  const manifest = parseJsonDoc(ManifestSchema, await store.get(d.digest), `manifest ${d.digest} of ${name}`);
  if (!isConfigType(manifest.config.mediaType)) {
    throw invalidInput(`image ${name}: unknown config media type ${manifest.config.mediaType}`);
  }
  await fetch(manifest.config, `config of ${name}`);
  const config: ImageConfig = parseJsonDoc(
    ImageConfigSchema,
    await store.get(manifest.config.digest),
    `config of ${name}`,
  );
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw corrupt(
      `image ${name}: config lists ${config.rootfs.diff_ids.length} diff_ids for ${manifest.layers.length} layers`,
    );
  }
  let size = d.size + manifest.config.size;
  for (const [i, l] of manifest.layers.entries()) {
    if (layerCompression(l.mediaType) === undefined) {
      throw invalidInput(`image ${name}: layer ${i} has unknown media type ${l.mediaType}`);
    }
    await fetch(l, `layer ${i} of ${name}`);
    size += l.size;
  }
  const platform = formatPlatform(
    normalizePlatform({
      os: config.os,
      architecture: config.architecture,
      variant: config.variant ?? d.platform?.variant,
    }),
  );
  return { configDigest: manifest.config.digest, platform, size };
}
