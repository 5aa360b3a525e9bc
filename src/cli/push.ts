import { type ImportOptions, type ImportResult, importImage } from '../content/import.js';
import type { CliContext } from './context.js';
import { ProgressBar } from './progress.js';

/**
 * The reader behind `berth image import` (and, through FleetOperations, `berth fleet push`): an OCI layout directory, an
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
