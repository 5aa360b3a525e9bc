import type BetterSqlite3 from 'better-sqlite3';
import { faultMigrations } from '../faults.js';

export interface Migration {
  name: string;
  up(db: BetterSqlite3.Database): void;
}

/**
 * The schema, in order. `user_version` = number of migrations applied. Append only: never edit or reorder
 * a migration that has shipped; add a new one.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    name: 'content and images',
    up(db) {
      db.exec(`
        CREATE TABLE blobs (
          digest     TEXT PRIMARY KEY,
          size       INTEGER NOT NULL,
          media_type TEXT,
          created_at INTEGER NOT NULL
        );
        CREATE TABLE images (
          name          TEXT PRIMARY KEY,           -- reference, e.g. "busybox:latest"
          digest        TEXT NOT NULL,              -- of the manifest chosen for this device
          media_type    TEXT NOT NULL,
          index_digest  TEXT,                       -- of the multi-arch index, when there was one
          config_digest TEXT NOT NULL,
          platform      TEXT NOT NULL,              -- "linux/arm/v7"
          size          INTEGER NOT NULL,           -- manifest + config + layers, compressed
          created_at    INTEGER NOT NULL
        );
        CREATE INDEX images_digest ON images(digest);
        CREATE TABLE leases (
          -- extra GC roots (in-flight imports and pulls): blobs named here are never collected
          id         TEXT NOT NULL,
          digest     TEXT NOT NULL,
          owner_pid  INTEGER,                     -- a lease dies with its process
          expires_at INTEGER NOT NULL,
          PRIMARY KEY (id, digest)
        );
      `);
    },
  },
  {
    name: 'snapshots',
    up(db) {
      db.exec(`
        CREATE TABLE snapshots (
          -- one row per snapshot of one backend (src/snapshots/metadata.ts)
          id         INTEGER PRIMARY KEY AUTOINCREMENT, -- stable across commit; backends name dirs by it
          driver     TEXT NOT NULL,                      -- overlay | btrfs | devmapper
          name       TEXT NOT NULL,                      -- key (active/view) or name (committed)
          kind       TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
          parent     TEXT,                               -- name of a committed snapshot of the same driver
          backend_id TEXT,                               -- backend-specific (thin device id, subvolume id...)
          labels     TEXT NOT NULL DEFAULT '{}',         -- JSON object of strings
          state      TEXT NOT NULL CHECK (state IN ('preparing', 'ready', 'committing', 'removing')),
          intent     TEXT,                               -- JSON: what the in-flight operation will do
          size       INTEGER,                            -- usage recorded at commit (bytes), when known
          inodes     INTEGER,
          created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL,
          UNIQUE (driver, name)
        );
        CREATE INDEX snapshots_parent ON snapshots(driver, parent);
        CREATE INDEX snapshots_state ON snapshots(driver, state) WHERE state <> 'ready';
      `);
    },
  },
  {
    name: 'devmapper devices',
    up(db) {
      db.exec(`
        CREATE TABLE devmapper_devices (
          -- one row per thin device of a pool (src/snapshots/devmapper/metadata.ts); state is recorded
          -- before each dmsetup step (intent) and after it (result)
          pool        TEXT NOT NULL,                 -- thin-pool DM name
          name        TEXT NOT NULL,                 -- DM device name (/dev/mapper/<name>)
          device_id   INTEGER NOT NULL,              -- thin device id inside the pool (24 bits)
          snapshot_id INTEGER,                       -- snapshots.id it backs; NULL for the base device
          parent      TEXT,                          -- DM name of the origin of create_snap
          size        INTEGER NOT NULL,              -- virtual size, bytes
          state       TEXT NOT NULL,
          error       TEXT,                          -- why it became faulty
          fs_inodes   INTEGER,                       -- used inodes of its ext4 when last deactivated
          created_at  INTEGER NOT NULL,
          updated_at  INTEGER NOT NULL,
          PRIMARY KEY (pool, name),
          UNIQUE (pool, device_id)
        );
        CREATE INDEX devmapper_devices_snapshot ON devmapper_devices(pool, snapshot_id);
      `);
    },
  },
  {
    name: 'fleet server: devices, deployments, images, chunk plans',
    up(db) {
      db.exec(`
        CREATE TABLE fleet_devices (
          id             TEXT PRIMARY KEY,
          online         INTEGER NOT NULL DEFAULT 0,
          last_seen      INTEGER NOT NULL,          -- ms since epoch of the last status message
          platform       TEXT,
          agent_version  TEXT,
          groups_json    TEXT NOT NULL DEFAULT '[]',
          device_version INTEGER,                  -- target versions the device reports as received
          group_version  INTEGER
        );
        CREATE TABLE fleet_deployments (
          scope_kind  TEXT NOT NULL CHECK (scope_kind IN ('device', 'group')),
          scope_id    TEXT NOT NULL,
          version     INTEGER NOT NULL,
          signed_json TEXT NOT NULL,                -- the exact signed target published (retained)
          created_at  INTEGER NOT NULL,
          PRIMARY KEY (scope_kind, scope_id, version)
        );
        CREATE TABLE fleet_images (
          name       TEXT PRIMARY KEY,              -- "name:tag"
          digest     TEXT NOT NULL,                 -- top-level: index (multi-arch kept) or manifest
          media_type TEXT NOT NULL,
          size       INTEGER NOT NULL,              -- of the top-level document
          total_size INTEGER NOT NULL,              -- every blob it references, all platforms
          platforms  TEXT NOT NULL,                 -- "linux/amd64,linux/arm64"
          pushed_at  INTEGER NOT NULL
        );
        CREATE TABLE fleet_chunk_plans (
          -- derived data (rebuildable from the blob): per-chunk sha256 and its fleet-key signature
          digest     TEXT NOT NULL,
          chunk_size INTEGER NOT NULL,
          size       INTEGER NOT NULL,
          hashes     BLOB NOT NULL,
          key_id     TEXT NOT NULL,
          sig        BLOB NOT NULL,
          PRIMARY KEY (digest, chunk_size, key_id)
        );
      `);
    },
  },
  {
    name: 'agent transport: received targets, resumable blob transfers',
    up(db) {
      db.exec(`
        CREATE TABLE transport_targets (
          scope_kind  TEXT NOT NULL CHECK (scope_kind IN ('device', 'group')),
          scope_id    TEXT NOT NULL,
          version     INTEGER NOT NULL,              -- highest accepted; older or equal are replays
          signed_json TEXT NOT NULL,
          received_at INTEGER NOT NULL,
          PRIMARY KEY (scope_kind, scope_id)
        );
        CREATE TABLE transport_transfers (
          digest      TEXT PRIMARY KEY,
          size        INTEGER NOT NULL,
          chunk_size  INTEGER NOT NULL,
          hashes      BLOB NOT NULL,               -- the signed chunk plan
          key_id      TEXT NOT NULL,
          sig         BLOB NOT NULL,
          bitmap      BLOB NOT NULL,               -- bit i set = chunk i written and checked
          ingest_name TEXT NOT NULL,
          started_at  INTEGER NOT NULL,
          updated_at  INTEGER NOT NULL
        );
      `);
    },
  },
  {
    name: 'containers and IP leases',
    up(db) {
      db.exec(`
        CREATE TABLE containers (
          id            TEXT PRIMARY KEY,             -- 32 hex chars; runtime id, dir name
          name          TEXT NOT NULL UNIQUE,
          image         TEXT NOT NULL,                -- image reference, or "rootfs:<dir>"
          spec_hash     TEXT NOT NULL,                -- sha256 of the canonical create request
          spec          TEXT NOT NULL,                -- the create request (JSON), to re-create on restart
          state         TEXT NOT NULL,                -- creating | created | running | exited | removing
          pid           INTEGER,                      -- container init, host pid namespace
          monitor_pid   INTEGER,
          stop_signal   TEXT NOT NULL,
          restart_policy TEXT NOT NULL DEFAULT 'no',
          restart_count INTEGER NOT NULL DEFAULT 0,
          exit_code     INTEGER,
          oom_killed    INTEGER NOT NULL DEFAULT 0,
          error         TEXT,
          created_at    INTEGER NOT NULL,
          started_at    INTEGER,
          finished_at   INTEGER,
          network_mode  TEXT NOT NULL,                -- none | host | bridge
          ip_address    TEXT,
          netns         TEXT,
          ports         TEXT NOT NULL DEFAULT '[]'    -- JSON PortMapping[]
        );
        CREATE TABLE ip_leases (
          network      TEXT NOT NULL,                 -- bridge name
          address      TEXT NOT NULL,
          container_id TEXT NOT NULL,
          created_at   INTEGER NOT NULL,
          PRIMARY KEY (network, address)
        );
        CREATE UNIQUE INDEX ip_leases_container ON ip_leases(network, container_id);
      `);
    },
  },
  {
    name: 'agent state: targets, rollout, apps, containers, images, step intents, outbox',
    up(db) {
      db.exec(`
        CREATE TABLE agent_targets (
          role       TEXT PRIMARY KEY CHECK (role IN ('current', 'previous', 'pending')),
          version    INTEGER NOT NULL,
          body       TEXT NOT NULL,               -- the validated target JSON
          status     TEXT NOT NULL,               -- received | applying | converged | healthy | failed
          reason     TEXT,                        -- why (rollback, failure)
          updated_at INTEGER NOT NULL
        );
        CREATE TABLE agent_rejected_targets (
          -- versions that failed their health window: never applied again, even if re-published
          version INTEGER PRIMARY KEY,
          reason  TEXT NOT NULL,
          at      INTEGER NOT NULL
        );
        CREATE TABLE agent_rollout (
          id           INTEGER PRIMARY KEY CHECK (id = 1),
          version      INTEGER NOT NULL,
          converged_at INTEGER NOT NULL,
          window_ms    INTEGER NOT NULL,
          baseline     TEXT NOT NULL              -- JSON {containerId: restarts}
        );
        CREATE TABLE agent_apps (
          name       TEXT PRIMARY KEY,
          status     TEXT NOT NULL,               -- applying | running | error
          last_error TEXT,
          updated_at INTEGER NOT NULL
        );
        CREATE TABLE agent_containers (
          id              TEXT PRIMARY KEY,
          app             TEXT NOT NULL,
          service         TEXT NOT NULL,
          spec_hash       TEXT NOT NULL,
          image           TEXT NOT NULL,
          restarts        INTEGER NOT NULL DEFAULT 0,
          stopped_by_user INTEGER NOT NULL DEFAULT 0,
          health          TEXT NOT NULL DEFAULT 'none',
          last_error      TEXT,
          created_at      INTEGER NOT NULL,
          updated_at      INTEGER NOT NULL
        );
        CREATE TABLE agent_images (
          -- images the agent fetched for targets: the only ones its GC may collect (not \`berth pull\` ones)
          image      TEXT PRIMARY KEY,
          fetched_at INTEGER NOT NULL
        );
        CREATE TABLE agent_step_intents (
          -- a step recorded before it runs and deleted after: what is left at start was interrupted
          id         INTEGER PRIMARY KEY AUTOINCREMENT,
          step       TEXT NOT NULL,
          started_at INTEGER NOT NULL
        );
        CREATE TABLE outbox (
          seq        INTEGER PRIMARY KEY AUTOINCREMENT,
          channel    TEXT NOT NULL,
          payload    TEXT NOT NULL,
          bytes      INTEGER NOT NULL,
          created_at INTEGER NOT NULL
        );
        CREATE INDEX outbox_created ON outbox(created_at);
      `);
    },
  },
  {
    name: 'agent transport: remote commands run (replay guard)',
    up(db) {
      db.exec(`
        CREATE TABLE transport_commands (
          -- ids of fleet commands this device ran, kept until they expire: a copy is never run twice
          id         TEXT PRIMARY KEY,
          expires_at INTEGER NOT NULL
        );
      `);
    },
  },
  {
    name: 'local events (berth events): container and image lifecycle, capped',
    up(db) {
      db.exec(`
        CREATE TABLE local_events (
          seq        INTEGER PRIMARY KEY AUTOINCREMENT,
          at         INTEGER NOT NULL,            -- ms since the epoch
          type       TEXT NOT NULL,               -- container | image
          action     TEXT NOT NULL,               -- create | start | die | oom | kill | stop | restart | destroy | import | delete
          actor_id   TEXT NOT NULL,
          actor_name TEXT NOT NULL,
          attributes TEXT NOT NULL DEFAULT '{}'   -- JSON: image, exitCode, signal, app, service…
        );
        CREATE INDEX local_events_at ON local_events(at);
      `);
    },
  },
  {
    name: 'agent: targets refused by where they came from (device/group scope and operator version)',
    up(db) {
      db.exec(`
        -- a rolled-back target is named by its origin (the scope and version the operator deployed), since
        -- the agent's own version number is a counter that a re-published origin would get anew
        ALTER TABLE agent_rejected_targets ADD COLUMN origin TEXT;
        CREATE INDEX agent_rejected_targets_origin ON agent_rejected_targets(origin);
      `);
    },
  },
];

/**
 * The oldest schema version this release can migrate from (every migration is kept, so any). A release
 * manifest carries it with MIGRATIONS.length; a device refuses a release that cannot read its database
 * (docs/self-update.md). Raise it only if early migrations are ever squashed.
 */
export const MIN_MIGRATABLE_SCHEMA = 0;

/** The migrations this executable applies: MIGRATIONS (plus one in a fault build, src/faults.ts). */
export function releaseMigrations(): readonly Migration[] {
  return faultMigrations(MIGRATIONS);
}
