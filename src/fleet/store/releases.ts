/**
 * Agent releases pushed to the fleet (docs/self-update.md): version → the signed manifest's blob and what
 * it lists. The blobs themselves are in the fleet's content store.
 */
import type { Digest } from '../../oci/digest.js';
import { SqlStore } from './sql.js';

export interface ReleaseRow {
  version: string;
  manifest: { digest: Digest; size: number };
  /** platform → executable */
  artifacts: Record<string, { digest: Digest; size: number; node?: string | undefined }>;
  database: { schema: number; minSchema: number };
  config: { format: number; minFormat: number };
  createdAt: number;
  createdBy: string | null;
}

interface Row {
  version: string;
  manifest_digest: string;
  manifest_size: number;
  artifacts_json: string;
  database_json: string;
  config_json: string;
  created_at: number;
  created_by: string | null;
}

export class ReleaseStore extends SqlStore {
  /** Insert; false when the version exists (releases are immutable). */
  insert(r: ReleaseRow): boolean {
    return (
      this.stmt(
        `INSERT OR IGNORE INTO releases (version, manifest_digest, manifest_size, artifacts_json, database_json, config_json, created_at, created_by)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        r.version,
        r.manifest.digest,
        r.manifest.size,
        JSON.stringify(r.artifacts),
        JSON.stringify(r.database),
        JSON.stringify(r.config),
        r.createdAt,
        r.createdBy,
      ).changes === 1
    );
  }

  get(version: string): ReleaseRow | undefined {
    const r = this.stmt('SELECT * FROM releases WHERE version = ?').get(version) as Row | undefined;
    return r ? toRow(r) : undefined;
  }

  /** Every release (they are few: one per version the operator pushed). */
  list(): ReleaseRow[] {
    return (this.stmt('SELECT * FROM releases ORDER BY created_at DESC').all() as Row[]).map(toRow);
  }

  remove(version: string): boolean {
    return this.stmt('DELETE FROM releases WHERE version = ?').run(version).changes > 0;
  }

  /** Whether a release other than `except` lists this blob (as its manifest or an executable). */
  blobInUse(digest: Digest, except: string): boolean {
    return (
      this.stmt(
        `SELECT 1 FROM releases r WHERE r.version <> ? AND (r.manifest_digest = ? OR EXISTS
           (SELECT 1 FROM json_each(r.artifacts_json) a WHERE json_extract(a.value, '$.digest') = ?)) LIMIT 1`,
      ).get(except, digest, digest) !== undefined
    );
  }
}

function toRow(r: Row): ReleaseRow {
  return {
    version: r.version,
    manifest: { digest: r.manifest_digest as Digest, size: r.manifest_size },
    artifacts: JSON.parse(r.artifacts_json) as ReleaseRow['artifacts'],
    database: JSON.parse(r.database_json) as ReleaseRow['database'],
    config: JSON.parse(r.config_json) as ReleaseRow['config'],
    createdAt: r.created_at,
    createdBy: r.created_by,
  };
}
