/**
 * The agent's ImageService over the one image path (src/content/acquire.ts) and (when the device has a
 * fleet) the agent's MQTT connection:
 *
 *   fetch   → AgentConnection.pullImage (resumable, verified, pinned to the digest the signed target names)
 *   unpack  → ImageAcquisition.unpack: layers into committed snapshots named by ChainID
 *   rootfs  → SnapshotImageRootfs (src/snapshots/image-rootfs.ts), shared with the docker-like commands
 *   gc      → planGc over image records, blobs and committed snapshots; collectGarbage sweeps the blobs
 *
 * `pin(name, digest)` is fed from the verified signed target: an image whose record no longer matches
 * the pinned digest (a tag moved to a new version) counts as not fetched.
 */
import { type DescribedImage, ImageAcquisition } from '../../content/acquire.js';
import { collectGarbage } from '../../content/gc.js';
import { ImageRepo, type ResolvedImage, reachableBlobs } from '../../content/images.js';
import type { ContentStore } from '../../content/store.js';
import { planGc, type StoredImage } from '../../core/disk.js';
import type { CurrentImage } from '../../core/state.js';
import type { Db } from '../../db/database.js';
import { isBerthError, unavailable, withContext } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { chainIds, type Digest } from '../../oci/digest.js';
import type { PreparedRootfs } from '../../runtime/rootfs.js';
import { fsCapacity } from '../../snapshots/fsutil.js';
import { SnapshotImageRootfs } from '../../snapshots/image-rootfs.js';
import type { Snapshotter } from '../../snapshots/snapshotter.js';
import type { PulledImage } from '../connection.js';
import type { ImageHealthcheck, ImageService } from '../ports.js';

/** What the agent's fleet link offers for images (AgentConnection). */
export interface ImagePuller {
  pullImage(
    ref: string,
    opts: { expectDigest?: Digest; onProgress?: (done: number, total: number, what: string) => void },
  ): Promise<PulledImage>;
  /** manifest and config only, for the free-space check before a pull */
  describeImage(
    ref: string,
    opts: { expectDigest?: Digest },
  ): Promise<DescribedImage & { fetchedBytes: number }>;
  /** resolves once connected to the fleet; Unavailable after `timeoutMs` */
  waitOnline(timeoutMs: number): Promise<void>;
}

/**
 * A fetch starts only with a fleet link (waiting this long for one, e.g. while the agent connects at
 * start): a pull started offline would hold the reconcile loop — and with it the restart of the apps
 * after a reboot — for as long as the network is away. Once started, a pull rides out broker loss.
 */
const FETCH_CONNECT_WAIT_MS = 5000;

/** One image operation: wall-clock start and end (epoch ms, for ordering against container times). */
export interface ImageOpRecord {
  image: string;
  startedAt: number;
  finishedAt: number;
}

/** What the image service did, for tests and the bench (time from target to running, split by phase). */
export interface TransferCounters {
  fetchedBytes: number;
  fetchMs: number;
  unpackMs: number;
  pulls: Array<ImageOpRecord & { fetchedBytes: number; ms: number }>;
  unpacks: ImageOpRecord[];
  removals: Array<ImageOpRecord & { freedBytes: number }>;
}

const NS_TO_MS = 1e-6;

export class AgentImages implements ImageService {
  private readonly repo: ImageRepo;
  private readonly acquisition: ImageAcquisition;
  private readonly rootfs: SnapshotImageRootfs;
  private readonly pins = new Map<string, Digest>();
  /** bytes fetched by missingBytes (manifest, config) before the pull, counted into that pull */
  private readonly described = new Map<string, number>();
  readonly counters: TransferCounters = {
    fetchedBytes: 0,
    fetchMs: 0,
    unpackMs: 0,
    pulls: [],
    unpacks: [],
    removals: [],
  };

  constructor(
    private readonly o: {
      db: Db;
      store: ContentStore;
      snapshotter: Snapshotter;
      stateDir: string;
      /** undefined: no fleet configured; fetch fails with Unavailable */
      puller?: ImagePuller | undefined;
      log?: Logger;
    },
  ) {
    this.repo = new ImageRepo(o.db, o.store);
    this.acquisition = new ImageAcquisition({
      db: o.db,
      store: o.store,
      snapshotter: o.snapshotter,
      log: o.log,
    });
    this.rootfs = new SnapshotImageRootfs({
      db: o.db,
      store: o.store,
      snapshotter: o.snapshotter,
      unpack: (ref) => this.unpack(ref),
      log: o.log,
    });
  }

  pin(name: string, digest: Digest): void {
    this.pins.set(name, digest);
  }

  private topDigest(ref: string): Digest | undefined {
    const r = this.repo.find(ref);
    return r ? (r.indexDigest ?? r.digest) : undefined;
  }

  private async resolveFetched(ref: string): Promise<ResolvedImage | undefined> {
    const top = this.topDigest(ref);
    if (!top) return undefined;
    const pin = this.pins.get(ref);
    if (pin && pin !== top) return undefined;
    return this.repo.resolve(ref).catch(() => undefined);
  }

  private async committed(chain: string): Promise<boolean> {
    return this.o.snapshotter
      .stat(chain)
      .then((i) => i.kind === 'committed')
      .catch(() => false);
  }

  async has(image: string): Promise<CurrentImage> {
    const img = await this.resolveFetched(image);
    if (!img) return { fetched: false, unpacked: false };
    const { missing } = await reachableBlobs(this.o.store, {
      digest: img.manifestDigest,
      mediaType: img.record.mediaType,
    });
    const chain = chainIds(img.diffIds);
    const top = chain[chain.length - 1];
    return { fetched: missing.length === 0, unpacked: top !== undefined && (await this.committed(top)) };
  }

  async list(): Promise<string[]> {
    return this.repo.list().map((r) => r.name);
  }

  async fetch(
    image: string,
    opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<void> {
    if (!this.o.puller) throw unavailable(`cannot fetch ${image}: no fleet connection configured`);
    await this.o.puller.waitOnline(FETCH_CONNECT_WAIT_MS).catch((err: unknown) => {
      throw withContext(`cannot fetch ${image}: not connected to the fleet`, err);
    });
    const startedAt = Date.now();
    const t0 = process.hrtime.bigint();
    const pin = this.pins.get(image);
    const r = await this.o.puller.pullImage(image, {
      ...(pin ? { expectDigest: pin } : {}),
      ...(opts.onProgress ? { onProgress: (d: number, t: number) => opts.onProgress?.(d, t) } : {}),
    });
    const ms = Number(process.hrtime.bigint() - t0) * NS_TO_MS;
    const fetchedBytes = r.fetchedBytes + (this.described.get(image) ?? 0);
    this.described.delete(image);
    this.counters.fetchedBytes += fetchedBytes;
    this.counters.fetchMs += ms;
    this.counters.pulls.push({ image, fetchedBytes, ms, startedAt, finishedAt: Date.now() });
    this.o.log?.info({ image, digest: r.digest, fetchedBytes, ms: Math.round(ms) }, 'image pulled');
  }

  async unpack(image: string): Promise<void> {
    const startedAt = Date.now();
    const t0 = process.hrtime.bigint();
    await this.acquisition.unpack(image);
    this.counters.unpackMs += Number(process.hrtime.bigint() - t0) * NS_TO_MS;
    this.counters.unpacks.push({ image, startedAt, finishedAt: Date.now() });
  }

  /**
   * What fetching and unpacking `image` still takes. An image not fetched yet (or whose tag the target
   * moved) is described by its manifest and config, fetched now — small documents — so the free-space
   * check sees the real layer sizes before any layer is pulled.
   */
  async missingBytes(image: string): Promise<{ downloadBytes: number; unpackBytes: number }> {
    let layers: Array<{ digest: Digest; size: number; mediaType: string }>;
    let diffIds: Digest[];
    const img = await this.resolveFetched(image);
    if (img) ({ layers, diffIds } = img);
    else if (this.o.puller) {
      const pin = this.pins.get(image);
      const d = await this.o.puller.describeImage(image, pin ? { expectDigest: pin } : {});
      this.described.set(image, (this.described.get(image) ?? 0) + d.fetchedBytes);
      layers = d.manifest.layers;
      diffIds = d.config.rootfs.diff_ids as Digest[];
    } else return { downloadBytes: 0, unpackBytes: 0 }; // no fleet: the fetch itself will say so
    let downloadBytes = 0;
    let unpackBytes = 0;
    const chain = chainIds(diffIds);
    for (const [i, l] of layers.entries()) {
      if (!(await this.o.store.has(l.digest))) downloadBytes += l.size;
      // gzip layers unpack to about 2-3x; a plain tar to its size
      if (!(await this.committed(chain[i]!)))
        unpackBytes += l.mediaType.endsWith('gzip') || l.mediaType.endsWith('zstd') ? l.size * 3 : l.size;
    }
    return { downloadBytes, unpackBytes };
  }

  async availableBytes(): Promise<number> {
    return (await fsCapacity(this.o.stateDir)).available;
  }

  /**
   * Delete an image now, space included: its record, then the blobs and snapshots no other stored image
   * uses (delete-then-download frees the old version before fetching the new one; leaving the bytes to
   * the next cleanup would defeat that).
   */
  async remove(image: string): Promise<void> {
    const startedAt = Date.now();
    this.repo.remove(image);
    const { freedBytes } = await this.gc(await this.list());
    this.counters.removals.push({ image, startedAt, finishedAt: Date.now(), freedBytes });
  }

  async gc(keepImages: readonly string[]): Promise<{ images: string[]; freedBytes: number }> {
    const stored: StoredImage[] = [];
    for (const r of this.repo.list()) {
      const { digests } = await reachableBlobs(this.o.store, { digest: r.digest, mediaType: r.mediaType });
      const img = await this.repo.resolve(r.name).catch(() => undefined);
      stored.push({ image: r.name, blobs: [...digests], snapshots: img ? chainIds(img.diffIds) : [] });
    }
    const committed: Array<{ name: string; parent?: string | undefined }> = [];
    await this.o.snapshotter.walk((i) => {
      if (i.kind === 'committed') committed.push({ name: i.name, parent: i.parent });
    });
    const plan = planGc(
      stored,
      [],
      committed.map((c) => c.name),
      new Set(keepImages),
    );
    for (const image of plan.images) this.repo.remove(image);
    const blobs = await collectGarbage({ store: this.o.store, db: this.o.db });
    // Children before parents; a snapshot still under a container or a kept chain refuses (Conflict).
    let pending = new Set(plan.snapshots);
    for (let progress = true; progress && pending.size > 0; ) {
      progress = false;
      for (const name of [...pending]) {
        try {
          await this.o.snapshotter.remove(name);
          pending.delete(name);
          progress = true;
        } catch (err) {
          if (!isBerthError(err, 'Conflict')) throw err;
        }
      }
    }
    pending = new Set();
    return { images: plan.images, freedBytes: blobs.freedBytes };
  }

  async healthcheck(image: string): Promise<ImageHealthcheck | undefined> {
    const img = await this.repo.resolve(image).catch(() => undefined);
    const hc = (img?.config.config as { Healthcheck?: Record<string, unknown> } | undefined)?.Healthcheck;
    if (!hc || !Array.isArray(hc.Test)) return undefined;
    const ns = (v: unknown) => (typeof v === 'number' && v > 0 ? v / 1e6 : undefined);
    return {
      test: hc.Test as string[],
      intervalMs: ns(hc.Interval),
      timeoutMs: ns(hc.Timeout),
      retries: typeof hc.Retries === 'number' ? hc.Retries : undefined,
      startPeriodMs: ns(hc.StartPeriod),
    };
  }

  // ---- rootfs (ImageRootfs for the runtime's DefaultRootfsProvider) --------------------------------

  prepare(containerId: string, ref: string, containerDir: string): Promise<PreparedRootfs> {
    return this.rootfs.prepare(containerId, ref, containerDir);
  }

  remount(containerId: string, containerDir: string): Promise<void> {
    return this.rootfs.remount(containerId, containerDir);
  }

  release(containerId: string, containerDir: string): Promise<void> {
    return this.rootfs.release(containerId, containerDir);
  }

  sweepOrphans(liveContainerIds: ReadonlySet<string>, containersDir: string): Promise<string[]> {
    return this.rootfs.sweepOrphans(liveContainerIds, containersDir);
  }
}
