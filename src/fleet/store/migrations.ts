import type { Migration } from '../../db/migrations.js';
import { IDENTITY_MIGRATION } from '../identity/schema.js';
import { ROLLOUTS_MIGRATION } from '../rollouts/schema.js';

/**
 * The operator plane's schema (fleet.db in the fleet server's state dir), in order; `user_version` = number
 * applied. Its own list, apart from the agent's (src/db/migrations.ts), so the two evolve independently:
 * a device never carries fleet tables it does not use, and the fleet's schema can change without an
 * agent migration. Append only. Users, tokens, sessions and audit (the HTTP side) append after these.
 *
 * Scale: every list the API serves is read through an index (devices by id, by last seen, by status, by
 * group, by label; events by device and by time; metrics by series and bucket), so a page of 50 out of
 * 10,000+ devices never scans the table.
 */
export const FLEET_MIGRATIONS: readonly Migration[] = [
  {
    name: 'operator plane: devices, reported state, events, metrics, deployments, images, enrollment',
    up(db) {
      db.exec(`
        CREATE TABLE fleet_meta (
          key   TEXT PRIMARY KEY,
          value TEXT NOT NULL
        );

        CREATE TABLE devices (
          id               TEXT PRIMARY KEY,
          platform         TEXT,
          agent_version    TEXT,
          key_id           TEXT,                    -- fleet key id the agent trusts (from its status)
          online           INTEGER NOT NULL DEFAULT 0,
          first_seen       INTEGER,                 -- ms; NULL: enrolled, never connected
          last_seen        INTEGER,                 -- ms of the last status message
          enrolled_at      INTEGER,
          revoked_at       INTEGER,                 -- set: credentials gone, refused by the broker
          -- what the device reports it runs (from its retained state; the fleet never assumes)
          target_kind      TEXT CHECK (target_kind IN ('device', 'group', 'local')),
          target_id        TEXT,
          target_version   INTEGER,
          target_status    TEXT,                    -- the agent's: received | applying | converged | healthy | failed
          target_reason    TEXT,                    -- the agent's reason (a rollback names the version it left)
          waiting_json     TEXT,                    -- why it is not progressing, while it waits (JSON array)
          previous_kind    TEXT,
          previous_id      TEXT,
          previous_version INTEGER,
          status           TEXT NOT NULL DEFAULT 'unknown',
                                                    -- fleet view: unknown | converged | applying | waiting |
                                                    -- failed | rolled-back | rejected
          last_error       TEXT,
          last_error_at    INTEGER,
          rejected_kind    TEXT,                    -- the last target the device refused (wrong key, schema)
          rejected_id      TEXT,
          rejected_version INTEGER,
          rejected_at      INTEGER,
          state_at         INTEGER                  -- ms the reported state last changed
        );
        CREATE INDEX devices_last_seen ON devices(last_seen, id);
        CREATE INDEX devices_status ON devices(status, id);
        CREATE INDEX devices_online ON devices(online, id);
        CREATE INDEX devices_platform ON devices(platform, id);
        CREATE INDEX devices_target ON devices(target_kind, target_id, target_version);

        -- the groups a device follows, in its priority order (position 0 first)
        CREATE TABLE device_groups (
          device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
          grp       TEXT NOT NULL,
          position  INTEGER NOT NULL,
          PRIMARY KEY (device_id, grp)
        ) WITHOUT ROWID;
        CREATE INDEX device_groups_grp ON device_groups(grp, device_id);

        CREATE TABLE device_labels (
          device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
          key       TEXT NOT NULL,
          value     TEXT NOT NULL,
          PRIMARY KEY (device_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX device_labels_kv ON device_labels(key, value, device_id);

        -- the latest reported state and info as received (bounded JSON), one row each per device
        CREATE TABLE device_state (
          device_id   TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
          state_json  TEXT NOT NULL,
          received_at INTEGER NOT NULL
        );
        CREATE TABLE device_info (
          device_id   TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
          info_json   TEXT NOT NULL,
          received_at INTEGER NOT NULL
        );
        -- per app/service, from the reported state (rewritten with each state)
        CREATE TABLE device_services (
          device_id    TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
          app          TEXT NOT NULL,
          service      TEXT NOT NULL,
          image        TEXT NOT NULL,
          state        TEXT NOT NULL,
          health       TEXT NOT NULL,
          restarts     INTEGER NOT NULL,
          container_id TEXT,
          exit_code    INTEGER,
          last_error   TEXT,
          app_status   TEXT NOT NULL,
          PRIMARY KEY (device_id, app, service)
        ) WITHOUT ROWID;
        CREATE INDEX device_services_image ON device_services(image, device_id);

        -- bounded history: pruned by age and by count per device (store/events.ts)
        CREATE TABLE events (
          id          INTEGER PRIMARY KEY AUTOINCREMENT,
          device_id   TEXT NOT NULL,
          type        TEXT NOT NULL,
          at          INTEGER NOT NULL,             -- the device's time (ms), or received_at when it gave none
          received_at INTEGER NOT NULL,
          body        TEXT NOT NULL                 -- the event as the device sent it (bounded JSON)
        );
        CREATE INDEX events_device ON events(device_id, id);
        CREATE INDEX events_type ON events(type, id);
        CREATE INDEX events_received ON events(received_at);

        -- time series, downsampled at ingest into fixed buckets per resolution (store/metrics.ts)
        CREATE TABLE metrics (
          device_id  TEXT NOT NULL,
          series     TEXT NOT NULL,                 -- "cpuPercent", "memory.usedBytes", "service.web.api.cpuPercent"
          resolution INTEGER NOT NULL,              -- bucket width, ms
          bucket     INTEGER NOT NULL,              -- bucket start, ms
          count      INTEGER NOT NULL,
          sum        REAL NOT NULL,
          min        REAL NOT NULL,
          max        REAL NOT NULL,
          last       REAL NOT NULL,
          PRIMARY KEY (device_id, series, resolution, bucket)
        ) WITHOUT ROWID;
        CREATE INDEX metrics_retention ON metrics(resolution, bucket);

        -- every signed target published (device or group scope); versions per scope from 1
        CREATE TABLE deployments (
          id          INTEGER PRIMARY KEY AUTOINCREMENT,
          scope_kind  TEXT NOT NULL CHECK (scope_kind IN ('device', 'group')),
          scope_id    TEXT NOT NULL,
          version     INTEGER NOT NULL,
          cleared     INTEGER NOT NULL DEFAULT 0,   -- 1: a signed "no target for this scope" (override cleared)
          state       TEXT NOT NULL CHECK (state IN ('pending', 'published', 'failed')),
                                                    -- pending: recorded, being published (intent first);
                                                    -- failed: never reached the broker (its version stays used)
          signed_json TEXT NOT NULL,                -- exactly what was published (retained)
          images_json TEXT NOT NULL DEFAULT '[]',
          created_at  INTEGER NOT NULL,
          created_by  TEXT,                         -- user or token name; NULL from the local CLI
          UNIQUE (scope_kind, scope_id, version)
        );
        CREATE INDEX deployments_created ON deployments(created_at, id);
        -- the current deployment per scope (what the broker retains) and the one before it
        CREATE TABLE scope_targets (
          scope_kind       TEXT NOT NULL CHECK (scope_kind IN ('device', 'group')),
          scope_id         TEXT NOT NULL,
          deployment_id    INTEGER NOT NULL REFERENCES deployments(id),
          version          INTEGER NOT NULL,
          cleared          INTEGER NOT NULL,
          previous_version INTEGER,
          updated_at       INTEGER NOT NULL,
          PRIMARY KEY (scope_kind, scope_id)
        ) WITHOUT ROWID;

        CREATE TABLE images (
          name       TEXT PRIMARY KEY,              -- "name:tag"
          digest     TEXT NOT NULL,                 -- top-level: index (multi-arch kept) or manifest
          media_type TEXT NOT NULL,
          size       INTEGER NOT NULL,              -- of the top-level document
          total_size INTEGER NOT NULL,              -- every blob it references, all platforms
          platforms  TEXT NOT NULL,                 -- "linux/amd64,linux/arm64"
          pushed_at  INTEGER NOT NULL
        );

        -- enrollment tokens: "bet_<id>_<secret>"; only sha256(secret) is kept (the secret is 256 random bits)
        CREATE TABLE enrollment_tokens (
          id          TEXT PRIMARY KEY,
          secret_hash TEXT NOT NULL,
          groups_json TEXT NOT NULL DEFAULT '[]',
          labels_json TEXT NOT NULL DEFAULT '{}',
          expires_at  INTEGER NOT NULL,
          max_uses    INTEGER,                      -- NULL: any number until it expires
          uses        INTEGER NOT NULL DEFAULT 0,
          created_at  INTEGER NOT NULL,
          created_by  TEXT,
          revoked_at  INTEGER
        );
        CREATE INDEX enrollment_tokens_expires ON enrollment_tokens(expires_at);

        -- per-device MQTT credentials. state: pending (being created on the broker) → active;
        -- revoking (being removed from the broker). A recovery pass at start finishes what was in flight.
        CREATE TABLE device_credentials (
          device_id     TEXT PRIMARY KEY,
          username      TEXT NOT NULL UNIQUE,
          password_hash TEXT NOT NULL,              -- sha256 of a 256-bit random password (see store/credentials.ts)
          state         TEXT NOT NULL CHECK (state IN ('pending', 'active', 'revoking')),
          token_id      TEXT,
          created_at    INTEGER NOT NULL,
          updated_at    INTEGER NOT NULL
        );
        CREATE INDEX device_credentials_state ON device_credentials(state) WHERE state <> 'active';
      `);
    },
  },
  // users, API tokens, sessions, audit log (src/fleet/identity/, the HTTP side)
  IDENTITY_MIGRATION,
  // staged rollouts and their devices (src/fleet/rollouts/)
  ROLLOUTS_MIGRATION,
  {
    name: 'agent releases (self-update), and the agent update each device reports',
    up(db) {
      db.exec(`
        -- one row per agent release pushed (src/fleet/services/releases.ts); its blobs (the signed manifest,
        -- one executable per platform) live in the fleet's content store
        CREATE TABLE releases (
          version         TEXT PRIMARY KEY,        -- semantic version, no build metadata
          manifest_digest TEXT NOT NULL,           -- the signed manifest's blob, pinned by targets
          manifest_size   INTEGER NOT NULL,
          artifacts_json  TEXT NOT NULL,           -- {platform: {digest, size, node?}}
          database_json   TEXT NOT NULL,           -- {schema, minSchema}
          config_json     TEXT NOT NULL,           -- {format, minFormat}
          created_at      INTEGER NOT NULL,
          created_by      TEXT
        );
        -- the latest self-update a device reported in its status: {version, phase, reason?}
        ALTER TABLE devices ADD COLUMN agent_update_json TEXT;
      `);
    },
  },
  {
    name: 'deployments: the earlier deployment a redeploy re-published',
    up(db) {
      db.exec(`
        -- set on a deployment made by POST /deployments/{id}/redeploy: the id it re-published (the signed
        -- target itself cannot say so: agents refuse a target with a field they do not know)
        ALTER TABLE deployments ADD COLUMN redeploy_of INTEGER REFERENCES deployments(id);
      `);
    },
  },
];
