import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../lib/atomic.js';
import { conflict, withContext } from '../lib/errors.js';
import { digestHex } from '../oci/digest.js';
import { MediaTypes } from '../oci/media-types.js';
import type { Descriptor, Index } from '../oci/types.js';
import { type ImageRecord, reachableBlobs } from './images.js';
import type { ContentStore } from './store.js';

/**
 * Write images as an OCI image layout directory: `oci-layout`, `index.json` naming each image with
 * `org.opencontainers.image.ref.name`, and every blob they reach. Blobs are hard-linked from the store
 * when on the same filesystem (they are immutable), copied otherwise. An existing non-empty directory
 * that is not an OCI layout is refused.
 */
export async function exportImages(store: ContentStore, images: ImageRecord[], dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const existing = await fsp.readdir(dir);
  if (existing.length > 0 && !existing.includes('oci-layout')) {
    throw conflict(`${dir} is not empty and not an OCI layout; choose an empty directory`);
  }
  const blobsDir = path.join(dir, 'blobs', 'sha256');
  await fsp.mkdir(blobsDir, { recursive: true });
  const manifests: Descriptor[] = [];
  for (const img of images) {
    const { digests, missing } = await reachableBlobs(store, {
      digest: img.digest,
      mediaType: img.mediaType,
    });
    if (missing.length > 0) {
      throw withContext(
        `export ${img.name}`,
        new Error(`blob ${missing[0]!.digest} is missing from the store`),
      );
    }
    for (const d of digests) {
      const target = path.join(blobsDir, digestHex(d));
      try {
        await fsp.link(store.blobPath(d), target);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') continue;
        if (code !== 'EXDEV' && code !== 'EPERM') throw withContext(`export blob ${d}`, err);
        await fsp.copyFile(store.blobPath(d), target);
      }
    }
    manifests.push({
      mediaType: img.mediaType,
      digest: img.digest,
      size: (await store.info(img.digest)).size,
      annotations: { 'org.opencontainers.image.ref.name': img.name },
    });
  }
  const index: Index = { schemaVersion: 2, mediaType: MediaTypes.OciIndex, manifests };
  await writeFileAtomic(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFileAtomic(path.join(dir, 'index.json'), JSON.stringify(index));
}
