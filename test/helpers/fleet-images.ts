import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { ContentStore } from '../../src/content/store.js';
import type { Digest } from '../../src/oci/digest.js';
import { MediaTypes } from '../../src/oci/media-types.js';

/**
 * Synthetic OCI images written straight into a content store, for transfer tests that need exact
 * sizes (random, incompressible layers) rather than a runnable rootfs.
 */
export interface TestImage {
  digest: Digest;
  mediaType: string;
  /** Every blob of the image (all platforms), top-level first. */
  blobs: Array<{ digest: Digest; size: number }>;
}

export async function putTestImage(
  store: ContentStore,
  opts: { layerSizes: number[]; platforms?: Array<{ architecture: string; variant?: string }> },
): Promise<TestImage> {
  const platforms = opts.platforms ?? [{ architecture: 'amd64' }];
  const blobs: Array<{ digest: Digest; size: number }> = [];
  const manifests = [];
  for (const p of platforms) {
    const layers = [];
    for (const size of opts.layerSizes) {
      const info = await putRandom(store, size);
      blobs.push(info);
      layers.push({ mediaType: MediaTypes.OciLayerGzip, digest: info.digest, size: info.size });
    }
    const config = Buffer.from(
      JSON.stringify({
        architecture: p.architecture,
        os: 'linux',
        ...(p.variant ? { variant: p.variant } : {}),
        config: { Cmd: ['/bin/sh'] },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
      }),
    );
    const c = await store.put(config);
    blobs.push(c);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaTypes.OciManifest,
        config: { mediaType: MediaTypes.OciConfig, digest: c.digest, size: c.size },
        layers,
      }),
    );
    const m = await store.put(manifest);
    blobs.push(m);
    manifests.push({
      mediaType: MediaTypes.OciManifest,
      digest: m.digest,
      size: m.size,
      platform: { os: 'linux', ...p },
    });
  }
  if (platforms.length === 1) {
    const m = manifests[0]!;
    return { digest: m.digest, mediaType: MediaTypes.OciManifest, blobs: [blobs.pop()!, ...blobs] };
  }
  const index = await store.put(
    JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.OciIndex, manifests }),
  );
  return { digest: index.digest, mediaType: MediaTypes.OciIndex, blobs: [index, ...blobs] };
}

/**
 * Random bytes written into an ingest file in 1 MiB pieces (never the whole blob in memory), then
 * committed. (Not through putStream: see the report — it does not resolve on this Node version.)
 */
export async function putRandom(
  store: ContentStore,
  size: number,
): Promise<{ digest: Digest; size: number }> {
  const file = await store.ingestPath(`test-${randomBytes(6).toString('hex')}`);
  const hash = createHash('sha256');
  const fh = await fsp.open(file, 'w');
  try {
    for (let left = size; left > 0; ) {
      const n = Math.min(left, 1024 * 1024);
      const b = randomBytes(n);
      hash.update(b);
      await fh.write(b);
      left -= n;
    }
  } finally {
    await fh.close();
  }
  const digest = `sha256:${hash.digest('hex')}` as Digest;
  return store.commitIngestFile(file, digest, size);
}
