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
];
