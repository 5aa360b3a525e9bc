import type { Migration } from '../../db/migrations.js';

/**
 * The rollout tables of the fleet database, appended after the identity tables in FLEET_MIGRATIONS
 * (src/fleet/store/migrations.ts). A rollout row holds the state machine's state and what it set at the
 * group scope; one row per selected device holds its phase (assigned once, at creation), what was sent to it
 * and what it ran before — each publish recorded as intent before it leaves (`pending`), then `published`.
 */
export const ROLLOUTS_MIGRATION: Migration = {
  name: 'operator plane: staged rollouts',
  up(db) {
    db.exec(`
      CREATE TABLE rollouts (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        name                TEXT,
        state               TEXT NOT NULL CHECK (state IN ('draft', 'running', 'waiting-approval', 'paused',
                                                           'succeeded', 'aborted', 'superseded')),
        reason              TEXT,                 -- why it was aborted, superseded, paused
        selection_json      TEXT NOT NULL,        -- {kind: group|selector|devices|all, group?, selector?, devices?}
        target_json         TEXT NOT NULL,        -- {apps, images: [{name, digest}]}: digests pinned at creation
        phases_json         TEXT NOT NULL,        -- [{spec, size, startedAt, passedAt}]
        policy_json         TEXT NOT NULL,
        phase               INTEGER NOT NULL DEFAULT 0,   -- current phase, 1-based; 0: not started
        phase_started_at    INTEGER,
        soak_since          INTEGER,
        grp                 TEXT,                 -- a group rollout: the group whose target the last phase sets
        group_deployment_id INTEGER,              -- that group target (set with its reservation: intent first)
        group_previous_id   INTEGER,              -- the group's deployment before it (what a rollback restores)
        group_rollback_id   INTEGER,              -- the group target the rollback published
        rollback            TEXT NOT NULL DEFAULT 'none' CHECK (rollback IN ('none', 'pending', 'sent', 'done')),
                                                  -- pending: to publish; sent: published, devices returning
        settle              TEXT NOT NULL DEFAULT 'none' CHECK (settle IN ('none', 'pending', 'done')),
                                                  -- after success: earlier phases' overrides cleared
        superseded_by       INTEGER,
        excluded            INTEGER NOT NULL DEFAULT 0,   -- group devices left out (another target applies)
        ops                 INTEGER NOT NULL DEFAULT 0,   -- bumped by operator actions (the server polls it: the
                                                  -- local CLI acts on the state dir, the server carries it out)
        created_at          INTEGER NOT NULL,
        created_by          TEXT,
        started_at          INTEGER,
        finished_at         INTEGER,
        updated_at          INTEGER NOT NULL
      );
      CREATE INDEX rollouts_state ON rollouts(state, id);

      CREATE TABLE rollout_devices (
        rollout_id       INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
        device_id        TEXT NOT NULL,
        phase            INTEGER NOT NULL,        -- 1-based, assigned at creation, never changed
        position         INTEGER NOT NULL,        -- place in the rollout's fixed order
        canary           INTEGER NOT NULL DEFAULT 0,
        publish          TEXT NOT NULL DEFAULT 'none' CHECK (publish IN ('none', 'pending', 'published')),
                                                  -- pending: recorded, being published (may have reached the broker)
        deployment_id    INTEGER,                 -- its own-scope deployment (an override, or a clear in a group's
                                                  -- last phase); NULL when the group target carried the release
        via_group        INTEGER NOT NULL DEFAULT 0,
        want_kind        TEXT,                    -- the target it must run: device <id> N or group <g> N
        want_id          TEXT,
        want_version     INTEGER,
        prev_kind        TEXT,                    -- what applied to it before it moved (its previous target)
        prev_id          TEXT,
        prev_version     INTEGER,
        published_at     INTEGER,
        outcome          TEXT NOT NULL DEFAULT 'queued'
                         CHECK (outcome IN ('queued', 'pending', 'converged', 'failed', 'superseded')),
        online           INTEGER NOT NULL DEFAULT 0,
        detail           TEXT,
        rb               TEXT NOT NULL DEFAULT 'none'
                         CHECK (rb IN ('none', 'pending', 'published', 'returned', 'kept')),
        rb_deployment_id INTEGER,
        rb_kind          TEXT,                    -- the target it returns to (NULL: nothing applies any more)
        rb_id            TEXT,
        rb_version       INTEGER,
        settle           TEXT NOT NULL DEFAULT 'none' CHECK (settle IN ('none', 'pending', 'published', 'kept')),
        settle_deployment_id INTEGER,
        updated_at       INTEGER,
        PRIMARY KEY (rollout_id, device_id)
      ) WITHOUT ROWID;
      CREATE INDEX rollout_devices_phase ON rollout_devices(rollout_id, phase, outcome, online);
      CREATE INDEX rollout_devices_position ON rollout_devices(rollout_id, position);
      CREATE INDEX rollout_devices_device ON rollout_devices(device_id, rollout_id);
      CREATE INDEX rollout_devices_deployment ON rollout_devices(deployment_id) WHERE deployment_id IS NOT NULL;
    `);
  },
};
