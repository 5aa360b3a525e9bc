import { reachableBlobs } from '../content/images.js';
import type { ContentStore } from '../content/store.js';
import type { Digest } from '../oci/digest.js';
import { MediaTypes } from '../oci/media-types.js';
import type { BlobAccess, BlobAuthorizer } from './blob-server.js';
import { decodeJson, type Target } from './messages.js';
import { MAX_RELEASE_BYTES, SignedReleaseSchema } from './releases.js';

/**
 * The fleet's rule for who may fetch what (BlobServer's `authorize`): a device gets an image, or a
 * blob, only when a current target of the device or of one of its groups names it — by name for
 * `resolve`, and for blobs everything the pinned image digests reach (index → manifests → configs and
 * layers). So a broker client can neither read images the fleet never deployed to it nor make the fleet
 * send arbitrary blobs. A target naming an agent release (`agent`) also opens that release's signed
 * manifest and the executables it lists (docs/self-update.md). The reachable sets are cached per set of pinned digests: a deployment changes
 * the set, and with it the cache key.
 */
export function targetsAuthorizer(o: {
  store: ContentStore;
  /** The current targets that apply to the device (its own and its groups'). */
  targetsFor(deviceId: string): Target[];
}): BlobAuthorizer {
  const reachable = new Map<string, Promise<Set<Digest>>>();
  const blobsOf = (pins: Digest[]): Promise<Set<Digest>> => {
    const key = [...new Set(pins)].sort().join(',');
    let p = reachable.get(key);
    if (!p) {
      p = (async () => {
        const all = new Set<Digest>();
        for (const digest of new Set(pins)) {
          if (!(await o.store.has(digest))) continue;
          const doc = JSON.parse((await o.store.get(digest)).toString('utf8')) as {
            mediaType?: string;
            manifests?: unknown;
          };
          const mediaType = doc.mediaType ?? (doc.manifests ? MediaTypes.OciIndex : MediaTypes.OciManifest);
          const r = await reachableBlobs(o.store, { digest, mediaType });
          for (const d of r.digests) all.add(d);
          // named by the target though the fleet lost it: the device is told NotFound, not "not yours"
          for (const m of r.missing) all.add(m.digest);
        }
        return all;
      })();
      p.catch(() => reachable.delete(key));
      if (reachable.size > 1024) reachable.clear();
      reachable.set(key, p);
    }
    return p;
  };
  /** The release manifest a target pins and the executables it lists (read from the fleet's own store). */
  const releaseBlobs = async (targets: Target[]): Promise<Set<Digest>> => {
    const out = new Set<Digest>();
    for (const t of targets) {
      if (!t.agent) continue;
      const manifest = t.agent.release.digest as Digest;
      out.add(manifest);
      if (!(await o.store.has(manifest))) continue;
      const msg = decodeJson(SignedReleaseSchema, await o.store.get(manifest), MAX_RELEASE_BYTES);
      if (msg.ok) for (const a of Object.values(msg.value.release.artifacts)) out.add(a.digest as Digest);
    }
    return out;
  };
  return async (deviceId: string, what: BlobAccess): Promise<boolean> => {
    const targets = o.targetsFor(deviceId);
    const images = targets.flatMap((t) => t.images);
    if (what.kind === 'image') return images.some((i) => i.name === what.name);
    if ((await blobsOf(images.map((i) => i.digest))).has(what.digest)) return true;
    return (await releaseBlobs(targets)).has(what.digest);
  };
}
