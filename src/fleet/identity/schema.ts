import type { Migration } from '../../db/migrations.js';

/**
 * The identity tables of the fleet database (users, API tokens, browser sessions, audit log), appended
 * after the fleet's own schema (src/fleet/store/migrations.ts, from fleet-core) in its migration list.
 */
export const IDENTITY_MIGRATION: Migration = {
  name: 'operator plane: users, API tokens, sessions, audit log',
  up(db) {
    db.exec(`
      CREATE TABLE users (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        name          TEXT NOT NULL UNIQUE,
        role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        password_hash TEXT NOT NULL,              -- scrypt$N$r$p$salt$key
        created_at    INTEGER NOT NULL
      );
      CREATE TABLE api_tokens (
        id           TEXT PRIMARY KEY,            -- the public part of berth_<id>_<secret>
        name         TEXT NOT NULL,
        role         TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        user_id      INTEGER REFERENCES users(id) ON DELETE CASCADE, -- creator; NULL: made on the state dir
        secret_hash  TEXT NOT NULL,               -- sha256 hex of the secret
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,                     -- NULL: never
        revoked_at   INTEGER,
        last_used_at INTEGER
      );
      CREATE INDEX api_tokens_user ON api_tokens(user_id);
      CREATE TABLE sessions (
        id_hash      TEXT PRIMARY KEY,            -- sha256 hex of the cookie value
        user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf         TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL
      );
      CREATE INDEX sessions_user ON sessions(user_id);
      CREATE TABLE audit_log (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        at       INTEGER NOT NULL,
        actor    TEXT NOT NULL,                   -- user:alice, token:ci, local:root, anonymous
        role     TEXT,
        action   TEXT NOT NULL,                   -- deployment.create, user.login, …
        target   TEXT,                            -- what the call named (device id, image, user…)
        source   TEXT NOT NULL,                   -- remote address, or local
        result   TEXT NOT NULL,                   -- ok, or the error code
        status   INTEGER,                         -- HTTP status (NULL for local calls)
        message  TEXT
      );
      CREATE INDEX audit_log_at ON audit_log(at);
      `);
  },
};
