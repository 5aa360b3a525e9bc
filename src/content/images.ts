import type { Db } from '../db/database.js';
import { tx } from '../db/database.js';
import { corrupt, invalidInput, notFound } from '../lib/errors.js';
import { type Digest, isDigest } from '../oci/digest.js';
import { isConfigType, isIndexType, isManifestType, layerCompression } from '../oci/media-types.js';
import {
  type Descriptor,
  type ImageConfig,
  ImageConfigSchema,
  type Index,
  IndexSchema,
  type Manifest,
  ManifestSchema,
  parseJsonDoc,
} from '../oci/types.js';
import type { ContentStore } from './store.js';

export interface ImageRecord {
  name: string;
  /** What the name points to: a manifest, or (images kept multi-arch, e.g. on the fleet server) an index. */
  digest: Digest;
  mediaType: string;
  indexDigest: Digest | undefined;
  configDigest: Digest | undefined;
  platform: string;
  size: number;
  createdAt: number;
}

interface ImageRow {
  name: string;
  digest: string;
  media_type: string;
  index_digest: string | null;
  config_digest: string;
  platform: string;
  size: number;
  created_at: number;
}

const REF_RE =
  /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$/;

/** "busybox" → "busybox:latest"; validates the docker reference grammar (name[:tag], no digests). */
export function normalizeRef(ref: string): string {
  if (!REF_RE.test(ref) || ref.length > 255) {
    throw invalidInput(
      `invalid image reference ${JSON.stringify(ref)}: expected name[:tag], lower-case name`,
    );
  }
  const lastSlash = ref.lastIndexOf('/');
  const hasTag = ref.slice(lastSlash + 1).includes(':');
  return hasTag ? ref : `${ref}:latest`;
}

function toRecord(r: ImageRow): ImageRecord {
  return {
    name: r.name,
    digest: r.digest as Digest,
    mediaType: r.media_type,
    indexDigest: (r.index_digest ?? undefined) as Digest | undefined,
    configDigest: r.config_digest ? (r.config_digest as Digest) : undefined,
    platform: r.platform,
    size: r.size,
    createdAt: r.created_at,
  };
}

/** A resolved single-platform image: what unpack and the bundle builder need. */
export interface ResolvedImage {
  record: ImageRecord;
  manifestDigest: Digest;
  manifest: Manifest;
  config: ImageConfig;
  layers: Descriptor[];
  diffIds: Digest[];
}

/** Image names → digests, in SQLite; the bytes are in the content store. */
export class ImageRepo {
  constructor(
    private readonly db: Db,
    private readonly store: ContentStore,
  ) {}

  put(rec: Omit<ImageRecord, 'createdAt'> & { createdAt?: number }): ImageRecord {
    const createdAt = rec.createdAt ?? Date.now();
    this.db
      .prepare(
        `INSERT INTO images (name, digest, media_type, index_digest, config_digest, platform, size, created_at)
         VALUES (@name, @digest, @mediaType, @indexDigest, @configDigest, @platform, @size, @createdAt)
         ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, media_type = excluded.media_type,
           index_digest = excluded.index_digest, config_digest = excluded.config_digest,
           platform = excluded.platform, size = excluded.size, created_at = excluded.created_at`,
      )
      .run({ ...rec, indexDigest: rec.indexDigest ?? null, configDigest: rec.configDigest ?? '', createdAt });
    return { ...rec, createdAt };
  }

  putMany(recs: Array<Omit<ImageRecord, 'createdAt'>>): ImageRecord[] {
    return tx(this.db, () => recs.map((r) => this.put(r)));
  }

  list(): ImageRecord[] {
    return (this.db.prepare('SELECT * FROM images ORDER BY name').all() as ImageRow[]).map(toRecord);
  }

  /** Find by name (tag defaults to latest), by full digest, or by a unique digest prefix of 12+ hex. */
  find(ref: string): ImageRecord | undefined {
    if (isDigest(ref)) {
      const row = this.db.prepare('SELECT * FROM images WHERE digest = ? LIMIT 1').get(ref) as
        | ImageRow
        | undefined;
      return row && toRecord(row);
    }
    if (/^[a-f0-9]{12,64}$/.test(ref)) {
      const rows = this.db
        .prepare('SELECT * FROM images WHERE digest LIKE ?')
        .all(`sha256:${ref}%`) as ImageRow[];
      if (rows.length === 1) return toRecord(rows[0]!);
    }
    let name: string;
    try {
      name = normalizeRef(ref);
    } catch {
      return undefined;
    }
    const row = this.db.prepare('SELECT * FROM images WHERE name = ?').get(name) as ImageRow | undefined;
    return row && toRecord(row);
  }

  get(ref: string): ImageRecord {
    const rec = this.find(ref);
    if (!rec) throw notFound(`image ${ref} not found`);
    return rec;
  }

  /** Remove a name. Returns the record; its blobs go at the next GC unless another image uses them. */
  remove(ref: string): ImageRecord {
    const rec = this.get(ref);
    this.db.prepare('DELETE FROM images WHERE name = ?').run(rec.name);
    return rec;
  }

  async readManifest(digest: Digest): Promise<Manifest> {
    return parseJsonDoc(ManifestSchema, await this.store.get(digest), `manifest ${digest}`);
  }

  /** `berth image inspect` / `berth inspect <image>`: the record with its manifest and config (or index). */
  async describe(ref: string): Promise<Record<string, unknown>> {
    const rec = this.get(ref);
    if (rec.configDigest) {
      const r = await this.resolve(ref);
      return { ...rec, manifest: r.manifest, config: r.config };
    }
    return { ...rec, index: await this.readIndex(rec.digest) };
  }

  async readIndex(digest: Digest): Promise<Index> {
    return parseJsonDoc(IndexSchema, await this.store.get(digest), `index ${digest}`);
  }

  async readConfig(digest: Digest): Promise<ImageConfig> {
    return parseJsonDoc(ImageConfigSchema, await this.store.get(digest), `image config ${digest}`);
  }

  /** Manifest, config and layers of a single-platform image. */
  async resolve(ref: string): Promise<ResolvedImage> {
    const record = this.get(ref);
    if (!isManifestType(record.mediaType)) {
      throw invalidInput(`image ${record.name} is a multi-platform index; select a platform first`);
    }
    const manifest = await this.readManifest(record.digest);
    if (!isConfigType(manifest.config.mediaType)) {
      throw corrupt(`image ${record.name}: unknown config media type ${manifest.config.mediaType}`);
    }
    const config = await this.readConfig(manifest.config.digest);
    const diffIds = config.rootfs.diff_ids as Digest[];
    if (diffIds.length !== manifest.layers.length) {
      throw corrupt(
        `image ${record.name}: config lists ${diffIds.length} diff_ids for ${manifest.layers.length} layers`,
      );
    }
    return { record, manifestDigest: record.digest, manifest, config, layers: manifest.layers, diffIds };
  }
}

/**
 * Every blob an image root (index or manifest) reaches: index → manifests → config + layers.
 * Missing children are reported in `missing` instead of failing, so GC and verification can both use it.
 */
export async function reachableBlobs(
  store: ContentStore,
  root: Descriptor | { digest: Digest; mediaType: string },
): Promise<{ digests: Set<Digest>; missing: Descriptor[] }> {
  const digests = new Set<Digest>();
  const missing: Descriptor[] = [];
  const visit = async (d: { digest: Digest; mediaType: string; size?: number }) => {
    if (digests.has(d.digest)) return;
    if (!(await store.has(d.digest))) {
      missing.push({ mediaType: d.mediaType, digest: d.digest, size: d.size ?? 0 });
      return;
    }
    digests.add(d.digest);
    if (isIndexType(d.mediaType)) {
      const idx = parseJsonDoc(IndexSchema, await store.get(d.digest), `index ${d.digest}`);
      for (const m of idx.manifests) await visit(m);
    } else if (isManifestType(d.mediaType)) {
      const m = parseJsonDoc(ManifestSchema, await store.get(d.digest), `manifest ${d.digest}`);
      await visit(m.config);
      for (const l of m.layers) await visit(l);
    }
  };
  await visit(root);
  return { digests, missing };
}

export function isKnownLayerType(mt: string): boolean {
  return layerCompression(mt) !== undefined;
}
