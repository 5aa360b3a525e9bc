import { randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { ContentStore } from '../content/store.js';
import { invalidInput, isBerthError, withContext } from '../lib/errors.js';
import { exec } from '../lib/exec.js';
import type { Logger } from '../lib/logger.js';
import { processAlive } from '../lib/process.js';
import { chainIds, type Digest } from '../oci/digest.js';
import { layerCompression } from '../oci/media-types.js';
import type { Descriptor } from '../oci/types.js';
import { type ApplyResult, type ApplyTarget, applyLayer, type LayerInput, type Unpacker } from './apply.js';
import { withTempMount } from './mount.js';
import type { Mount, Snapshotter } from './snapshotter.js';

/**
 * Unpacking an image's layers into committed snapshots named by ChainID (image-spec), after containerd's
 * unpacker:
 *
 *     for each layer i:  chainID_i = ChainID(diffIDs[0..i])
 *       if chainID_i is committed already → reuse it (layers shared by images are unpacked once)
 *       else prepare("extract-<random>-<chainID_i>", chainID_{i-1}) → apply the layer (DiffID verified
 *            while streaming) → commit(chainID_i)
 *       on any error: remove the active snapshot, commit nothing, stop
 *
 * Two unpackers racing on one layer: the loser's commit meets Conflict, it drops its copy and reuses
 * the winner's.
 */
export interface UnpackLayerResult {
  chainId: Digest;
  diffId: Digest;
  reused: boolean;
  size?: number;
}

export interface UnpackImageOptions {
  store: ContentStore;
  snapshotter: Snapshotter;
  layers: readonly Descriptor[];
  diffIds: readonly Digest[];
  log?: Logger;
  /** labels put on each committed layer snapshot */
  labels?: Record<string, string>;
  /** which extractor (default `auto`: the native one where the kernel allows; see apply.ts) */
  unpacker?: Unpacker;
}

export async function unpackImage(
  opts: UnpackImageOptions,
): Promise<{ chainId: Digest; layers: UnpackLayerResult[] }> {
  const { store, snapshotter, layers, diffIds } = opts;
  if (layers.length !== diffIds.length) {
    throw invalidInput(`image has ${layers.length} layers but ${diffIds.length} DiffIDs in its config`);
  }
  if (layers.length === 0) throw invalidInput('image has no layers');
  const chain = chainIds(diffIds);
  await removeStaleExtracts(snapshotter, opts.log);
  const results: UnpackLayerResult[] = [];
  for (let i = 0; i < layers.length; i++) {
    const desc = layers[i]!;
    const chainId = chain[i]!;
    const parent = i === 0 ? undefined : chain[i - 1];
    const compression = layerCompression(desc.mediaType);
    if (compression === undefined)
      throw invalidInput(`layer ${desc.digest}: unsupported media type ${desc.mediaType}`);
    const r = await unpackLayer({
      snapshotter,
      chainId,
      parent,
      diffId: diffIds[i]!,
      open: () => storeBlobInput(store, desc.digest),
      compression,
      labels: opts.labels,
      unpacker: opts.unpacker,
    }).catch((err: unknown) => {
      throw withContext(`unpack layer ${i + 1}/${layers.length} (${desc.digest})`, err);
    });
    opts.log?.info(
      { chainId, layer: desc.digest, reused: r.reused },
      r.reused ? 'layer reused' : 'layer unpacked',
    );
    results.push(r);
  }
  return { chainId: chain[chain.length - 1]!, layers: results };
}

/**
 * A content-store blob as a layer input: the native extractor reads the file itself, and an uncompressed
 * layer's DiffID is the digest the store checked on ingest (apply.ts storeDiffId). NotFound, naming the
 * blob, when it is missing.
 */
export async function storeBlobInput(store: ContentStore, digest: Digest): Promise<LayerInput> {
  await store.info(digest);
  return { file: store.blobPath(digest), storeDigest: digest };
}

export async function unpackLayer(o: {
  snapshotter: Snapshotter;
  chainId: Digest;
  parent: Digest | undefined;
  diffId: Digest;
  /** the blob: a stream, or a file (which the native extractor reads itself; storeBlobInput for a store blob) */
  open: () => Promise<LayerInput>;
  compression: 'none' | 'gzip' | 'zstd';
  labels?: Record<string, string> | undefined;
  unpacker?: Unpacker | undefined;
}): Promise<UnpackLayerResult> {
  const sn = o.snapshotter;
  if (await isCommitted(sn, o.chainId)) return { chainId: o.chainId, diffId: o.diffId, reused: true };
  const key = `extract-${randomBytes(6).toString('hex')}-${o.chainId}`;
  const mounts = await sn.prepare(key, o.parent, {
    'berth.unpack': o.chainId,
    'berth.unpack.pid': String(process.pid),
    'berth.unpack.boot': bootId(),
  });
  let result: ApplyResult;
  try {
    const src = await o.open();
    result = await applyInto(mounts, sn.driver, (target) =>
      applyLayer(src, o.compression, target, o.diffId, o.unpacker, sn.storage),
    );
  } catch (err) {
    // On a full disk the database may share the filesystem: free the partial layer's blocks first so
    // recording the removal (intent, then result) has room, then remove the snapshot properly.
    if (isBerthError(err, 'NoSpace')) await emptyPartialLayer(mounts);
    await sn.remove(key).catch(() => undefined);
    throw err;
  }
  try {
    await sn.commit(o.chainId, key, { ...o.labels, 'berth.diff-id': o.diffId });
  } catch (err) {
    await sn.remove(key).catch(() => undefined);
    if (isBerthError(err, 'Conflict') && (await isCommitted(sn, o.chainId))) {
      return { chainId: o.chainId, diffId: o.diffId, reused: true };
    }
    throw err;
  }
  return { chainId: o.chainId, diffId: o.diffId, reused: false, size: result.size };
}

/**
 * Active `extract-*` snapshots left by an unpack that died (killed, power cut) are ordinary ready
 * snapshots to the snapshotter, so recover() keeps them. They carry the unpacking process's pid and the
 * boot id: when that process is gone (or the machine rebooted since), the snapshot is removed.
 */
export async function removeStaleExtracts(sn: Snapshotter, log?: Logger): Promise<string[]> {
  const stale: string[] = [];
  await sn.walk((i) => {
    if (i.kind !== 'active' || !i.labels['berth.unpack']) return;
    const pid = Number(i.labels['berth.unpack.pid']);
    const sameBoot = i.labels['berth.unpack.boot'] === bootId();
    if (!sameBoot || !Number.isInteger(pid) || !processAlive(pid)) stale.push(i.name);
  });
  for (const key of stale) {
    await sn
      .remove(key)
      .catch((err: unknown) => log?.warn({ key, err }, 'cannot remove stale extract snapshot'));
    log?.info({ key }, 'removed the snapshot of an interrupted unpack');
  }
  return stale;
}

let bootIdCache: string | undefined;
function bootId(): string {
  if (bootIdCache === undefined) {
    try {
      bootIdCache = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      bootIdCache = 'unknown';
    }
  }
  return bootIdCache;
}

async function emptyPartialLayer(mounts: readonly Mount[]): Promise<void> {
  const target = directTarget(mounts);
  if (!target) return; // mounted through a temp mount (devmapper): the thin device goes with remove()
  try {
    for (const name of await fsp.readdir(target.root)) {
      await fsp.rm(path.join(target.root, name), { recursive: true, force: true });
    }
    // btrfs frees extents when the transaction commits
    await exec('sync', ['-f', target.root], { allowFailure: true });
  } catch {
    // best effort: remove() below is the real cleanup
  }
}

async function isCommitted(sn: Snapshotter, name: string): Promise<boolean> {
  try {
    return (await sn.stat(name)).kind === 'committed';
  } catch (err) {
    if (isBerthError(err, 'NotFound')) return false;
    throw err;
  }
}

/** Pure: where a layer goes for a prepared snapshot's mounts, or undefined when it must be mounted. */
export function directTarget(mounts: readonly Mount[]): ApplyTarget | undefined {
  if (mounts.length !== 1) return undefined;
  const m = mounts[0]!;
  if (m.type === 'bind' && !m.options.includes('ro')) return { root: m.source, whiteouts: 'delete' };
  if (m.type === 'overlay') {
    const opt = (k: string) => m.options.find((o) => o.startsWith(`${k}=`))?.slice(k.length + 1);
    const upper = opt('upperdir');
    const lower = opt('lowerdir');
    if (upper && lower) return { root: upper, whiteouts: 'overlay', lowers: lower.split(':') };
  }
  return undefined;
}

/**
 * Apply into the snapshot: straight into its directory when the mounts name one (bind: btrfs subvolume or
 * a first overlay layer; overlay: the upperdir, with overlay whiteouts), otherwise (devmapper's ext4)
 * through a temporary mount, deleting for whiteouts.
 */
export async function applyInto<T>(
  mounts: readonly Mount[],
  _driver: string,
  fn: (target: ApplyTarget) => Promise<T>,
): Promise<T> {
  const direct = directTarget(mounts);
  if (direct) return fn(direct);
  return withTempMount(mounts, (dir) => fn({ root: dir, whiteouts: 'delete' }));
}
