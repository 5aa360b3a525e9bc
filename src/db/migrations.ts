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
];
