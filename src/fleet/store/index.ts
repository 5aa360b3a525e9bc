/**
 * The operator plane's data layer: one SQLite file, `fleet.db` in the fleet server's state dir, with its
 * own migration list (./migrations.ts). SQL lives only in these stores; services and routes get typed rows.
 *
 *   const stores = openFleetStores(path.join(stateDir, FLEET_DB_FILE), { legacy: contentDb });
 *   stores.devices.list({ group: 'g1', sort: 'lastSeen', order: 'desc', limit: 50 });
 *   …
 *   stores.close();
 *
 * Before this file existed the fleet kept `fleet_devices`, `fleet_deployments` and `fleet_images` in the
 * state dir's berth.db (the content store's database). The first open copies those rows over once
 * (`adoptLegacyTables`); berth.db keeps its content tables and the chunk-plan cache.
 */
import { type Db, type OpenOptions, openDatabase, tx } from '../../db/database.js';
import { DeploymentStore } from './deployments.js';
import { DeviceStore } from './devices.js';
import { EnrollmentStore } from './enrollment.js';
import { type EventRetention, EventStore } from './events.js';
import { ImageStore } from './images.js';
import { MetricStore, type Resolution } from './metrics.js';
import { FLEET_MIGRATIONS } from './migrations.js';
import { ReleaseStore } from './releases.js';
import { RolloutStore } from './rollouts.js';

export const FLEET_DB_FILE = 'fleet.db';

export interface FleetStores {
  db: Db;
  devices: DeviceStore;
  events: EventStore;
  metrics: MetricStore;
  deployments: DeploymentStore;
  images: ImageStore;
  enrollment: EnrollmentStore;
  releases: ReleaseStore;
  rollouts: RolloutStore;
  close(): void;
}

export interface FleetStoreOptions extends Pick<OpenOptions, 'nativeBinding'> {
  /** the state dir's berth.db, whose old fleet_* rows are adopted at the first open */
  legacy?: Db | undefined;
  eventRetention?: EventRetention | undefined;
  metricResolutions?: readonly Resolution[] | undefined;
  now?: () => number;
}

export function openFleetStores(file: string, o: FleetStoreOptions = {}): FleetStores {
  const db = openDatabase(file, { migrations: FLEET_MIGRATIONS });
  try {
    if (o.legacy) adoptLegacyTables(db, o.legacy);
  } catch (err) {
    db.close();
    throw err;
  }
  return fleetStoresOn(db, o);
}

/** The stores over an open fleet database (tests pass `:memory:` databases migrated with FLEET_MIGRATIONS). */
export function fleetStoresOn(db: Db, o: Omit<FleetStoreOptions, 'legacy'> = {}): FleetStores {
  return {
    db,
    devices: new DeviceStore(db),
    events: new EventStore(db, o.eventRetention),
    metrics: new MetricStore(db, o.metricResolutions, o.now),
    deployments: new DeploymentStore(db),
    images: new ImageStore(db),
    enrollment: new EnrollmentStore(db),
    releases: new ReleaseStore(db),
    rollouts: new RolloutStore(db),
    close: () => db.close(),
  };
}

function hasTable(db: Db, name: string): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
}

/** Copy the fleet rows an older berth kept in berth.db, once (fleet_meta remembers). */
export function adoptLegacyTables(db: Db, legacy: Db): void {
  if (db.prepare("SELECT 1 FROM fleet_meta WHERE key = 'legacy_adopted'").get()) return;
  tx(db, () => {
    if (hasTable(legacy, 'fleet_images')) {
      const ins = db.prepare(
        `INSERT OR IGNORE INTO images (name, digest, media_type, size, total_size, platforms, pushed_at)
         VALUES (@name, @digest, @media_type, @size, @total_size, @platforms, @pushed_at)`,
      );
      for (const r of legacy.prepare('SELECT * FROM fleet_images').all() as Array<Record<string, unknown>>)
        ins.run(r);
    }
    if (hasTable(legacy, 'fleet_deployments')) {
      const ins = db.prepare(
        `INSERT OR IGNORE INTO deployments (scope_kind, scope_id, version, cleared, state, signed_json, images_json, created_at)
         VALUES (?, ?, ?, 0, 'published', ?, ?, ?)`,
      );
      const cur = db.prepare(
        `INSERT INTO scope_targets (scope_kind, scope_id, deployment_id, version, cleared, previous_version, updated_at)
         VALUES (@k, @i, @d, @v, 0, @p, @at)
         ON CONFLICT(scope_kind, scope_id) DO UPDATE SET deployment_id = @d, version = @v, previous_version = @p, updated_at = @at
         WHERE scope_targets.version < @v`,
      );
      const rows = legacy
        .prepare('SELECT * FROM fleet_deployments ORDER BY scope_kind, scope_id, version')
        .all() as Array<{
        scope_kind: string;
        scope_id: string;
        version: number;
        signed_json: string;
        created_at: number;
      }>;
      let prev: { k: string; i: string; v: number } | undefined;
      for (const r of rows) {
        let images = '[]';
        try {
          images = JSON.stringify(
            (JSON.parse(r.signed_json) as { target: { images: unknown } }).target.images ?? [],
          );
        } catch {
          // keep [] for a row that does not parse; the signed JSON is kept as it was
        }
        const id = Number(
          ins.run(r.scope_kind, r.scope_id, r.version, r.signed_json, images, r.created_at).lastInsertRowid,
        );
        const p = prev && prev.k === r.scope_kind && prev.i === r.scope_id ? prev.v : null;
        if (id > 0) cur.run({ k: r.scope_kind, i: r.scope_id, d: id, v: r.version, p, at: r.created_at });
        prev = { k: r.scope_kind, i: r.scope_id, v: r.version };
      }
    }
    if (hasTable(legacy, 'fleet_devices')) {
      const ins = db.prepare(
        `INSERT OR IGNORE INTO devices (id, online, first_seen, last_seen, platform, agent_version)
         VALUES (?, 0, ?, ?, ?, ?)`,
      );
      const grp = db.prepare(
        'INSERT OR IGNORE INTO device_groups (device_id, grp, position) VALUES (?, ?, ?)',
      );
      for (const r of legacy.prepare('SELECT * FROM fleet_devices').all() as Array<Record<string, unknown>>) {
        ins.run(r.id, r.last_seen, r.last_seen, r.platform ?? null, r.agent_version ?? null);
        let groups: unknown = [];
        try {
          groups = JSON.parse(String(r.groups_json));
        } catch {
          groups = [];
        }
        if (Array.isArray(groups))
          groups.forEach((g, i) => {
            if (typeof g === 'string') grp.run(r.id, g, i);
          });
      }
    }
    db.prepare("INSERT INTO fleet_meta (key, value) VALUES ('legacy_adopted', ?)").run(String(Date.now()));
  });
}

export type { DeploymentRow, ScopeTargetRow } from './deployments.js';
export type { DeviceDetail, DeviceQuery, DeviceRow, ServiceRow } from './devices.js';
export type { CredentialRow, EnrollmentTokenRow } from './enrollment.js';
export type { EventQuery, EventRow } from './events.js';
export type { FleetImageRow } from './images.js';
export type { MetricQuery, SeriesData } from './metrics.js';
export type { ReleaseRow } from './releases.js';
export type { RolloutDeviceRow, RolloutRow } from './rollouts.js';
export type { Page } from './sql.js';
