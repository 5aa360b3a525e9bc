import type { Db } from '../db/database.js';
import type { Digest } from '../oci/digest.js';
import { ImageRepo, reachableBlobs } from './images.js';
import { Leases } from './leases.js';
import type { ContentStore } from './store.js';

export interface GcResult {
  removed: Digest[];
  freedBytes: number;
  kept: number;
}

/**
 * Mark and sweep: roots are every recorded image (index or manifest), every live lease, and any extra
 * roots the caller names (e.g. the agent's current and previous targets). Everything the roots reach
 * (index → manifests → config + layers) is kept; every other blob is deleted.
 */
export async function collectGarbage(
  deps: { store: ContentStore; db: Db },
  opts: { extraRoots?: Array<{ digest: Digest; mediaType: string }>; dryRun?: boolean } = {},
): Promise<GcResult> {
  const leases = new Leases(deps.db);
  leases.prune();
  const keep = new Set<Digest>(leases.heldDigests());
  const roots = [
    ...new ImageRepo(deps.db, deps.store).list().map((i) => ({ digest: i.digest, mediaType: i.mediaType })),
    ...(opts.extraRoots ?? []),
  ];
  for (const root of roots) {
    const { digests } = await reachableBlobs(deps.store, root);
    for (const d of digests) keep.add(d);
  }
  const removed: Digest[] = [];
  let freedBytes = 0;
  let kept = 0;
  for await (const blob of deps.store.walk()) {
    if (keep.has(blob.digest)) {
      kept++;
      continue;
    }
    if (!opts.dryRun) await deps.store.delete(blob.digest);
    removed.push(blob.digest);
    freedBytes += blob.size;
  }
  return { removed, freedBytes, kept };
}
