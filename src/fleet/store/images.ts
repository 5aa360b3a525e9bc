/** Images pushed to the fleet, by name:tag (the blobs live in the fleet's content store). */
import type { Digest } from '../../oci/digest.js';
import { SqlStore } from './sql.js';

export interface FleetImageRow {
  name: string;
  digest: Digest;
  mediaType: string;
  size: number;
  totalSize: number;
  platforms: string;
  pushedAt: number;
}

export class ImageStore extends SqlStore {
  put(row: FleetImageRow): void {
    this.stmt(
      `INSERT OR REPLACE INTO images (name, digest, media_type, size, total_size, platforms, pushed_at)
       VALUES (@name, @digest, @mediaType, @size, @totalSize, @platforms, @pushedAt)`,
    ).run(row);
  }

  get(name: string): FleetImageRow | undefined {
    const r = this.stmt('SELECT * FROM images WHERE name = ?').get(name) as
      | Record<string, unknown>
      | undefined;
    return r ? toImage(r) : undefined;
  }

  list(): FleetImageRow[] {
    return (this.stmt('SELECT * FROM images ORDER BY name').all() as Array<Record<string, unknown>>).map(
      toImage,
    );
  }

  remove(name: string): boolean {
    return this.stmt('DELETE FROM images WHERE name = ?').run(name).changes > 0;
  }
}

function toImage(r: Record<string, unknown>): FleetImageRow {
  return {
    name: r.name as string,
    digest: r.digest as Digest,
    mediaType: r.media_type as string,
    size: r.size as number,
    totalSize: r.total_size as number,
    platforms: r.platforms as string,
    pushedAt: r.pushed_at as number,
  };
}
