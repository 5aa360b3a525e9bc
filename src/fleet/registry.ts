import type { ContentStore } from '../content/store.js';
import { type Db, tx } from '../db/database.js';
import { notFound } from '../lib/errors.js';
import type { Digest } from '../oci/digest.js';
import { MediaTypes } from '../oci/media-types.js';
import { formatPlatform } from '../oci/platform.js';
import { ImageConfigSchema, IndexSchema, ManifestSchema, parseJsonDoc } from '../oci/types.js';
import type { SignedTarget, StatusMessage, TargetScope } from '../transport/messages.js';

/**
 * The fleet server's tables: devices (from their retained status), images pushed to the fleet, and
 * deployments (every signed target published, newest = current). Typed access only; SQL stays here.
 */
export interface DeviceRow {
  id: string;
  online: boolean;
  lastSeen: number;
  platform: string | null;
  agentVersion: string | null;
  groups: string[];
  deviceVersion: number | null;
  groupVersion: number | null;
}

export interface FleetImageRow {
  name: string;
  digest: Digest;
  mediaType: string;
  size: number;
  totalSize: number;
  platforms: string;
  pushedAt: number;
}

export class FleetRegistry {
  constructor(private readonly db: Db) {}

  recordStatus(s: StatusMessage, now = Date.now()): void {
    this.db
      .prepare(
        `INSERT INTO fleet_devices (id, online, last_seen, platform, agent_version, groups_json, device_version, group_version)
         VALUES (@id, @online, @now, @platform, @agentVersion, @groups, @dv, @gv)
         ON CONFLICT(id) DO UPDATE SET online = @online, last_seen = @now,
           platform = COALESCE(@platform, platform), agent_version = COALESCE(@agentVersion, agent_version),
           groups_json = @groups, device_version = COALESCE(@dv, device_version), group_version = COALESCE(@gv, group_version)`,
      )
      .run({
        id: s.deviceId,
        online: s.state === 'online' ? 1 : 0,
        now,
        platform: s.platform ?? null,
        agentVersion: s.agentVersion ?? null,
        groups: JSON.stringify(s.groups ?? []),
        dv: s.target?.device ?? null,
        gv: s.target?.group ?? null,
      });
  }

  devices(): DeviceRow[] {
    const rows = this.db.prepare('SELECT * FROM fleet_devices ORDER BY id').all() as Array<
      Record<string, unknown>
    >;
    return rows.map((r) => ({
      id: r.id as string,
      online: r.online === 1,
      lastSeen: r.last_seen as number,
      platform: (r.platform as string | null) ?? null,
      agentVersion: (r.agent_version as string | null) ?? null,
      groups: JSON.parse(r.groups_json as string) as string[],
      deviceVersion: (r.device_version as number | null) ?? null,
      groupVersion: (r.group_version as number | null) ?? null,
    }));
  }

  /** Record an image whose blobs are all in `store` (top-level index or manifest). */
  async addImage(
    store: ContentStore,
    name: string,
    digest: Digest,
    mediaType: string,
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
        const c = parseJsonDoc(
          ImageConfigSchema,
          await store.get(manifest.config.digest),
          `config of ${name}`,
        );
        platforms.push(formatPlatform({ os: c.os, architecture: c.architecture, variant: c.variant }));
      }
    }
    const row: FleetImageRow = {
      name,
      digest,
      mediaType,
      size: top.size,
      totalSize: total,
      platforms: [...new Set(platforms)].join(','),
      pushedAt: Date.now(),
    };
    this.db
      .prepare(
        `INSERT OR REPLACE INTO fleet_images (name, digest, media_type, size, total_size, platforms, pushed_at)
         VALUES (@name, @digest, @mediaType, @size, @totalSize, @platforms, @pushedAt)`,
      )
      .run(row);
    return row;
  }

  image(name: string): FleetImageRow | undefined {
    const r = this.db.prepare('SELECT * FROM fleet_images WHERE name = ?').get(name) as
      | Record<string, unknown>
      | undefined;
    return r ? toImage(r) : undefined;
  }

  images(): FleetImageRow[] {
    return (
      this.db.prepare('SELECT * FROM fleet_images ORDER BY name').all() as Array<Record<string, unknown>>
    ).map(toImage);
  }

  nextVersion(scope: TargetScope): number {
    const r = this.db
      .prepare('SELECT MAX(version) AS v FROM fleet_deployments WHERE scope_kind = ? AND scope_id = ?')
      .get(scope.kind, scope.id) as { v: number | null };
    return (r.v ?? 0) + 1;
  }

  recordDeployment(signed: SignedTarget): void {
    const { scope, version } = signed.target;
    tx(this.db, () => {
      this.db
        .prepare(
          'INSERT INTO fleet_deployments (scope_kind, scope_id, version, signed_json, created_at) VALUES (?, ?, ?, ?, ?)',
        )
        .run(scope.kind, scope.id, version, JSON.stringify(signed), Date.now());
    });
  }

  /** The newest deployment of every scope (what is retained on the broker). */
  currentDeployments(): SignedTarget[] {
    const rows = this.db
      .prepare(
        `SELECT d.signed_json FROM fleet_deployments d
         JOIN (SELECT scope_kind, scope_id, MAX(version) AS v FROM fleet_deployments GROUP BY scope_kind, scope_id) m
           ON d.scope_kind = m.scope_kind AND d.scope_id = m.scope_id AND d.version = m.v`,
      )
      .all() as Array<{ signed_json: string }>;
    return rows.map((r) => JSON.parse(r.signed_json) as SignedTarget);
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
