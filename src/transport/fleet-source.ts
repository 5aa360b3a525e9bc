import type { ImageSource } from '../content/acquire.js';
import type { Descriptor } from '../oci/types.js';
import type { BlobFetcher } from './blob-fetcher.js';

/**
 * The fleet as an image source (src/content/acquire.ts): a name resolves through a `resolve` request
 * whose answer must be signed by the fleet for this device and request, and a blob arrives through the
 * chunked, resumable, plan-checked transfer of BlobFetcher. Picking the platform, checking and recording
 * the image are the acquisition's, the same as for an imported archive.
 */
export class FleetImageSource implements ImageSource {
  constructor(private readonly fetcher: BlobFetcher) {}

  resolve(ref: string): Promise<Descriptor> {
    return this.fetcher.resolve(ref);
  }

  fetch(desc: Descriptor, _what: string, onProgress?: (done: number, total: number) => void): Promise<void> {
    return this.fetcher.fetchBlob(desc, onProgress);
  }
}
