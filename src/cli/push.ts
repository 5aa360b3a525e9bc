import { type ImportOptions, type ImportResult, importImage } from '../content/import.js';
import type { FleetImageRow } from '../fleet/registry.js';
import { hostPlatform } from '../oci/platform.js';
import type { CliContext } from './context.js';
import { ProgressBar } from './progress.js';

/**
 * The one reader behind `berth image import` and `berth fleet push`: an OCI layout directory, an
 * oci-archive or a docker-archive (`[oci:|oci-archive:|docker-archive:]path[:ref]`, as skopeo writes
 * them), with a progress bar on a terminal.
 */
export async function importWithProgress(
  c: CliContext,
  source: string,
  label: string,
  opts: Omit<ImportOptions, 'onProgress'>,
): Promise<ImportResult> {
  const bar = new ProgressBar(label);
  const res = await importImage(
    source,
    { store: c.store, db: c.db },
    { ...opts, onProgress: (n, total) => bar.update(n, Math.max(total, n)) },
  );
  bar.finish();
  return res;
}

/**
 * Import an image into the fleet's store with every platform kept (the index stays the top-level
 * document devices resolve), then list it in the fleet's images.
 */
export async function pushImage(c: CliContext, source: string, tag: string): Promise<FleetImageRow> {
  const res = await importWithProgress(c, source, `push ${tag}`, {
    platform: hostPlatform(),
    allPlatforms: true,
    tag,
  });
  const img = res.images[0]!;
  // fleet code loads only for fleet commands (`berth image import` shares this file)
  const { FleetRegistry } = await import('../fleet/registry.js');
  return new FleetRegistry(c.db).addImage(c.store, img.name, img.digest, img.mediaType);
}
