import { promises as fsp } from 'node:fs';
import { importImage } from '../content/import.js';
import { describeFleetImage } from '../fleet/image-record.js';
import type { FleetImageRow, FleetStores } from '../fleet/store/index.js';
import { hostPlatform } from '../oci/platform.js';
import type { CliContext } from './context.js';
import { ProgressBar } from './progress.js';

/**
 * Import an image into the fleet's store with every platform kept (the index stays the top-level
 * document devices resolve), then list it in the fleet's images.
 */
export async function pushImage(
  c: CliContext,
  stores: FleetStores,
  source: string,
  tag: string,
): Promise<FleetImageRow> {
  const st = await fsp.stat(source);
  const total = st.isFile() ? st.size : 0;
  const bar = new ProgressBar(`push ${tag}`);
  const res = await importImage(
    source,
    { store: c.store, db: c.db },
    {
      platform: hostPlatform(),
      allPlatforms: true,
      tag,
      onProgress: (n) => bar.update(n, Math.max(total, n)),
    },
  );
  bar.finish();
  const img = res.images[0]!;
  const row = await describeFleetImage(c.store, img.name, img.digest, img.mediaType);
  stores.images.put(row);
  return row;
}
