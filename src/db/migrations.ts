import type BetterSqlite3 from 'better-sqlite3';

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
];
