/**
 * What the fleet records of a pushed image: its top-level document (a multi-arch index is kept whole), the
 * platforms it serves and its total size — every referenced blob must be in the fleet's content store.
 */
import type { ContentStore } from '../content/store.js';
import { notFound } from '../lib/errors.js';
import type { Digest } from '../oci/digest.js';
import { MediaTypes } from '../oci/media-types.js';
import { formatPlatform } from '../oci/platform.js';
import { ImageConfigSchema, IndexSchema, ManifestSchema, parseJsonDoc } from '../oci/types.js';
import type { FleetImageRow } from './store/images.js';

export async function describeFleetImage(
  store: ContentStore,
  name: string,
  digest: Digest,
  mediaType: string,
  now = Date.now(),
): Promise<FleetImageRow> {
  const top = await store.info(digest);
  let total = top.size;
  const platforms: string[] = [];
  const manifests: Array<{ digest: Digest; size: number }> = [];
  if (mediaType === MediaTypes.OciIndex || mediaType === MediaTypes.DockerManifestList) {
    const index = parseJsonDoc(IndexSchema, await store.get(digest), `index of ${name}`);
    for (const m of index.manifests) {
      if (!(await store.has(m.digest))) continue; // attestation manifests etc. that were not pushed
      manifests.push(m);
      total += m.size;
      if (m.platform) platforms.push(formatPlatform(m.platform));
    }
  } else {
    manifests.push({ digest, size: 0 });
  }
  for (const m of manifests) {
    const manifest = parseJsonDoc(ManifestSchema, await store.get(m.digest), `manifest of ${name}`);
    for (const b of [manifest.config, ...manifest.layers]) {
      if (!(await store.has(b.digest)))
        throw notFound(`image ${name} references blob ${b.digest}, which was not pushed`);
      total += b.size;
    }
    if (manifests.length === 1 && platforms.length === 0) {
      const c = parseJsonDoc(ImageConfigSchema, await store.get(manifest.config.digest), `config of ${name}`);
      platforms.push(formatPlatform({ os: c.os, architecture: c.architecture, variant: c.variant }));
    }
  }
  return {
    name,
    digest,
    mediaType,
    size: top.size,
    totalSize: total,
    platforms: [...new Set(platforms)].join(','),
    pushedAt: now,
  };
}
