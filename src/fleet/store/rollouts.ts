/**
 * Rollouts and their devices (tables in src/fleet/rollouts/schema.ts). The rollout row is the state
 * machine's state; a device row is one selected device: its phase (fixed at creation), what the rollout
 * sent it (intent first: `pending` is written in the same transaction as the deployment's reservation,
 * `published` with its commit), what it ran before, how it stands, and its rollback or settling.
 *
 * An operator's action bumps the rollout's `ops`, which the server's driver polls to notice actions taken
 * by another process (the local CLI on the state dir).
 */
import { tx } from '../../db/database.js';
import { conflict, invalidInput, notFound } from '../../lib/errors.js';
import type { TargetAgent } from '../../transport/messages.js';
import { noCounts, type PhaseCounts, type RolloutPolicy, type RolloutState } from '../rollouts/machine.js';
import type { Requirement } from '../rollouts/selector.js';
import { idCursor, type Page, pageLimit, SqlStore } from './sql.js';

export type SelectionKind = 'group' | 'selector' | 'devices' | 'all';
export interface Selection {
  kind: SelectionKind;
  group?: string | undefined;
  /** canonical text */
  selector?: string | undefined;
  devices?: string[] | undefined;
}

/** The release: the apps and the images they use, digests pinned when the rollout was created. */
export interface RolloutTarget {
  apps: unknown;
  images: Array<{ name: string; digest: string }>;
  /** the agent release the devices run (docs/self-update.md), when the target names one */
  agent?: TargetAgent | undefined;
}

export interface PhaseRecord {
  spec: string;
  size: number;
  startedAt: number | null;
  passedAt: number | null;
}

export type StepState = 'none' | 'pending' | 'done';
/** pending: to publish; sent: published, devices returning; done: every moved device returned or kept */
export type RollbackStep = 'none' | 'pending' | 'sent' | 'done';

export interface RolloutRow {
  id: number;
  name: string | null;
  state: RolloutState;
  reason: string | null;
  selection: Selection;
  target: RolloutTarget;
  phases: PhaseRecord[];
  policy: RolloutPolicy;
  phase: number;
  phaseStartedAt: number | null;
  soakSince: number | null;
  group: string | null;
  groupDeploymentId: number | null;
  groupPreviousId: number | null;
  groupRollbackId: number | null;
  rollback: RollbackStep;
  settle: StepState;
  supersededBy: number | null;
  excluded: number;
  ops: number;
  createdAt: number;
  createdBy: string | null;
  startedAt: number | null;
  finishedAt: number | null;
  updatedAt: number;
}

export type NewRollout = Pick<
  RolloutRow,
  'name' | 'state' | 'selection' | 'target' | 'phases' | 'policy' | 'group' | 'excluded' | 'createdBy'
>;

/** What a rollout may change of its own row (the store maps each to its column). */
export type RolloutPatch = Partial<
  Pick<
    RolloutRow,
    | 'state'
    | 'reason'
    | 'phases'
    | 'phase'
    | 'phaseStartedAt'
    | 'soakSince'
    | 'groupDeploymentId'
    | 'groupPreviousId'
    | 'groupRollbackId'
    | 'rollback'
    | 'settle'
    | 'supersededBy'
    | 'startedAt'
    | 'finishedAt'
  >
>;

const COLUMN: Record<keyof RolloutPatch, string> = {
  state: 'state',
  reason: 'reason',
  phases: 'phases_json',
  phase: 'phase',
  phaseStartedAt: 'phase_started_at',
  soakSince: 'soak_since',
  groupDeploymentId: 'group_deployment_id',
  groupPreviousId: 'group_previous_id',
  groupRollbackId: 'group_rollback_id',
  rollback: 'rollback',
  settle: 'settle',
  supersededBy: 'superseded_by',
  startedAt: 'started_at',
  finishedAt: 'finished_at',
};

export type Outcome = 'queued' | 'pending' | 'converged' | 'failed' | 'superseded';
export const OUTCOMES: readonly Outcome[] = ['queued', 'pending', 'converged', 'failed', 'superseded'];
export type RollbackState = 'none' | 'pending' | 'published' | 'returned' | 'kept';
export type SettleState = 'none' | 'pending' | 'published' | 'kept';

export interface ScopeRef {
  kind: 'device' | 'group';
  id: string;
  version: number;
}

export interface RolloutDeviceRow {
  rolloutId: number;
  deviceId: string;
  phase: number;
  position: number;
  canary: boolean;
  publish: 'none' | 'pending' | 'published';
  deploymentId: number | null;
  viaGroup: boolean;
  want: ScopeRef | null;
  prev: ScopeRef | null;
  publishedAt: number | null;
  outcome: Outcome;
  online: boolean;
  detail: string | null;
  rb: RollbackState;
  rbDeploymentId: number | null;
  rbTarget: ScopeRef | null;
  settle: SettleState;
  settleDeploymentId: number | null;
  updatedAt: number | null;
}

export interface RolloutQuery {
  state?: RolloutState | undefined;
  /** running, waiting-approval or paused */
  active?: boolean | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
}

export interface RolloutDeviceQuery {
  phase?: number | undefined;
  outcome?: Outcome | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
}

export interface OutcomeUpdate {
  rolloutId: number;
  deviceId: string;
  outcome: Outcome;
  online: boolean;
  detail: string | null;
}

interface Row {
  id: number;
  name: string | null;
  state: RolloutState;
  reason: string | null;
  selection_json: string;
  target_json: string;
  phases_json: string;
  policy_json: string;
  phase: number;
  phase_started_at: number | null;
  soak_since: number | null;
  grp: string | null;
  group_deployment_id: number | null;
  group_previous_id: number | null;
  group_rollback_id: number | null;
  rollback: RollbackStep;
  settle: StepState;
  superseded_by: number | null;
  excluded: number;
  ops: number;
  created_at: number;
  created_by: string | null;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
}

interface DevRow {
  rollout_id: number;
  device_id: string;
  phase: number;
  position: number;
  canary: number;
  publish: RolloutDeviceRow['publish'];
  deployment_id: number | null;
  via_group: number;
  want_kind: ScopeRef['kind'] | null;
  want_id: string | null;
  want_version: number | null;
  prev_kind: ScopeRef['kind'] | null;
  prev_id: string | null;
  prev_version: number | null;
  published_at: number | null;
  outcome: Outcome;
  online: number;
  detail: string | null;
  rb: RollbackState;
  rb_deployment_id: number | null;
  rb_kind: ScopeRef['kind'] | null;
  rb_id: string | null;
  rb_version: number | null;
  settle: SettleState;
  settle_deployment_id: number | null;
  updated_at: number | null;
}

const ACTIVE_SQL = "('running', 'waiting-approval', 'paused')";

function ref(kind: ScopeRef['kind'] | null, id: string | null, version: number | null): ScopeRef | null {
  return kind && id !== null && version !== null ? { kind, id, version } : null;
}

export class RolloutStore extends SqlStore {
  // ---- rollouts ---------------------------------------------------------------------------------

  /**
   * A new rollout and its devices, in one transaction; `assign(id)` places the devices in phases (the
   * rollout's id seeds the fixed order, so it is known only here).
   */
  create(
    r: NewRollout,
    assign: (
      id: number,
    ) => ReadonlyArray<{ deviceId: string; phase: number; position: number; canary: boolean }>,
    now: number,
  ): RolloutRow {
    return tx(this.db, () => {
      const id = Number(
        this.stmt(
          `INSERT INTO rollouts (name, state, selection_json, target_json, phases_json, policy_json, grp, excluded,
             created_at, created_by, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(
          r.name,
          r.state,
          JSON.stringify(r.selection),
          JSON.stringify(r.target),
          JSON.stringify(r.phases),
          JSON.stringify(r.policy),
          r.group,
          r.excluded,
          now,
          r.createdBy,
          now,
        ).lastInsertRowid,
      );
      const ins = this.stmt(
        'INSERT INTO rollout_devices (rollout_id, device_id, phase, position, canary) VALUES (?, ?, ?, ?, ?)',
      );
      for (const d of assign(id)) ins.run(id, d.deviceId, d.phase, d.position, d.canary ? 1 : 0);
      return this.get(id)!;
    });
  }

  get(id: number): RolloutRow | undefined {
    const r = this.stmt('SELECT * FROM rollouts WHERE id = ?').get(id) as Row | undefined;
    return r ? toRollout(r) : undefined;
  }

  require(id: number): RolloutRow {
    const r = this.get(id);
    if (!r) throw notFound(`no rollout ${id}`);
    return r;
  }

  /**
   * Change a rollout's row; `operator` marks an operator's action (the server's driver polls for those, so
   * one made by the local CLI is carried out too). Returns the row as it is now.
   */
  update(id: number, patch: RolloutPatch, now: number, o: { operator?: boolean } = {}): RolloutRow {
    const sets: string[] = ['updated_at = @now'];
    if (o.operator) sets.push('ops = ops + 1');
    const params: Record<string, unknown> = { id, now };
    for (const [k, v] of Object.entries(patch) as Array<[keyof RolloutPatch, unknown]>) {
      if (v === undefined) continue;
      const col = COLUMN[k];
      sets.push(`${col} = @${k}`);
      params[k] = k === 'phases' ? JSON.stringify(v) : v;
    }
    return tx(this.db, () => {
      const r = this.db.prepare(`UPDATE rollouts SET ${sets.join(', ')} WHERE id = @id`).run(params);
      if (r.changes === 0) throw notFound(`no rollout ${id}`);
      return this.get(id)!;
    });
  }

  /** Newest first, a page at a time. */
  list(q: RolloutQuery = {}): Page<RolloutRow> {
    const limit = pageLimit(q.limit);
    const where: string[] = [];
    const params: Record<string, unknown> = { limit: limit + 1 };
    if (q.state) {
      where.push('state = @state');
      params.state = q.state;
    }
    if (q.active) where.push(`state IN ${ACTIVE_SQL}`);
    const filter = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const total = (
      this.db.prepare(`SELECT COUNT(*) AS n FROM rollouts ${filter}`).get(params) as { n: number }
    ).n;
    if (q.cursor !== undefined) {
      where.push('id < @cursor');
      params.cursor = idCursor(q.cursor);
    }
    const rows = this.db
      .prepare(
        `SELECT * FROM rollouts ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT @limit`,
      )
      .all(params) as Row[];
    const more = rows.length > limit;
    const items = rows.slice(0, limit).map(toRollout);
    const last = items[items.length - 1];
    return { items, total, ...(more && last ? { nextCursor: String(last.id) } : {}) };
  }

  /** Rollouts the driver has work for: active ones, and finished ones with a rollback or settling to do. */
  inFlight(): RolloutRow[] {
    return (
      this.stmt(
        `SELECT * FROM rollouts WHERE state IN ${ACTIVE_SQL} OR rollback IN ('pending', 'sent') OR settle = 'pending' ORDER BY id`,
      ).all() as Row[]
    ).map(toRollout);
  }

  /**
   * id → operator actions so far, of every rollout the driver may have to act on (cheap: it polls this to
   * notice what another process — the local CLI — did).
   */
  operatorMarks(): Map<number, number> {
    const out = new Map<number, number>();
    for (const r of this.stmt(
      `SELECT id, ops FROM rollouts WHERE state IN ${ACTIVE_SQL} OR rollback IN ('pending', 'sent') OR settle = 'pending'`,
    ).all() as Array<{ id: number; ops: number }>)
      out.set(r.id, r.ops);
    return out;
  }

  /** Active rollouts (other than `except`) holding any of these devices. */
  activeHolding(deviceIds: readonly string[], except: number): number[] {
    const found = new Set<number>();
    for (let i = 0; i < deviceIds.length; i += 500) {
      const chunk = deviceIds.slice(i, i + 500);
      for (const r of this.db
        .prepare(
          `SELECT DISTINCT d.rollout_id AS id FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout_id
           WHERE r.state IN ${ACTIVE_SQL} AND d.rollout_id <> ? AND d.device_id IN (${chunk.map(() => '?').join(',')})`,
        )
        .all(except, ...chunk) as Array<{ id: number }>)
        found.add(r.id);
    }
    return [...found].sort((a, b) => a - b);
  }

  /** Active group rollouts (other than `except`) of this group: their last phase would set its target. */
  activeForGroup(group: string, except: number): number[] {
    return (
      this.stmt(
        `SELECT id FROM rollouts WHERE grp = ? AND id <> ? AND state IN ${ACTIVE_SQL} ORDER BY id`,
      ).all(group, except) as Array<{ id: number }>
    ).map((r) => r.id);
  }

  // ---- counts -----------------------------------------------------------------------------------

  /** Per-phase outcome counts (index 0 = phase 1). */
  counts(id: number, phases: number): PhaseCounts[] {
    const out: PhaseCounts[] = Array.from({ length: phases }, noCounts);
    for (const r of this.stmt(
      `SELECT phase, outcome, online, COUNT(*) AS n FROM rollout_devices WHERE rollout_id = ?
       GROUP BY phase, outcome, online`,
    ).all(id) as Array<{ phase: number; outcome: Outcome; online: number; n: number }>) {
      const p = out[r.phase - 1];
      if (!p) continue;
      p.total += r.n;
      p[r.outcome] += r.n;
      if (r.outcome === 'pending' && r.online === 0) p.offline += r.n;
    }
    return out;
  }

  /** How the rollback stands: devices moved (and rolled back or kept), returned. */
  rollbackCounts(id: number): Record<RollbackState, number> {
    const out: Record<RollbackState, number> = { none: 0, pending: 0, published: 0, returned: 0, kept: 0 };
    for (const r of this.stmt(
      'SELECT rb, COUNT(*) AS n FROM rollout_devices WHERE rollout_id = ? GROUP BY rb',
    ).all(id) as Array<{ rb: RollbackState; n: number }>)
      out[r.rb] = r.n;
    return out;
  }

  // ---- devices ----------------------------------------------------------------------------------

  /** A page of a rollout's devices in its order (keyset on position). */
  devicePage(id: number, q: RolloutDeviceQuery = {}): Page<RolloutDeviceRow> {
    const limit = pageLimit(q.limit);
    const where = ['rollout_id = @id'];
    const params: Record<string, unknown> = { id, limit: limit + 1 };
    if (q.phase !== undefined) {
      where.push('phase = @phase');
      params.phase = q.phase;
    }
    if (q.outcome !== undefined) {
      where.push('outcome = @outcome');
      params.outcome = q.outcome;
    }
    const total = (
      this.db
        .prepare(`SELECT COUNT(*) AS n FROM rollout_devices WHERE ${where.join(' AND ')}`)
        .get(params) as {
        n: number;
      }
    ).n;
    if (q.cursor !== undefined) {
      where.push('position > @cursor');
      params.cursor = idCursor(q.cursor);
    }
    const rows = this.db
      .prepare(`SELECT * FROM rollout_devices WHERE ${where.join(' AND ')} ORDER BY position LIMIT @limit`)
      .all(params) as DevRow[];
    const more = rows.length > limit;
    const items = rows.slice(0, limit).map(toDevice);
    const last = items[items.length - 1];
    return { items, total, ...(more && last ? { nextCursor: String(last.position) } : {}) };
  }

  /** Every device row of a rollout, in its order (the driver's refresh; a rollout has at most its fleet). */
  devices(id: number, where?: { phase?: number; publish?: RolloutDeviceRow['publish'] }): RolloutDeviceRow[] {
    const cond = ['rollout_id = @id'];
    const params: Record<string, unknown> = { id };
    if (where?.phase !== undefined) {
      cond.push('phase = @phase');
      params.phase = where.phase;
    }
    if (where?.publish !== undefined) {
      cond.push('publish = @publish');
      params.publish = where.publish;
    }
    return (
      this.db
        .prepare(`SELECT * FROM rollout_devices WHERE ${cond.join(' AND ')} ORDER BY position`)
        .all(params) as DevRow[]
    ).map(toDevice);
  }

  device(id: number, deviceId: string): RolloutDeviceRow | undefined {
    const r = this.stmt('SELECT * FROM rollout_devices WHERE rollout_id = ? AND device_id = ?').get(
      id,
      deviceId,
    ) as DevRow | undefined;
    return r ? toDevice(r) : undefined;
  }

  /** Which of these rollouts hold which devices (the driver's index for routing device reports). */
  memberships(ids: readonly number[]): Array<{ rolloutId: number; deviceId: string }> {
    if (ids.length === 0) return [];
    return (
      this.db
        .prepare(
          `SELECT rollout_id, device_id FROM rollout_devices WHERE rollout_id IN (${ids.map(() => '?').join(',')})`,
        )
        .all(...ids) as Array<{ rollout_id: number; device_id: string }>
    ).map((r) => ({ rolloutId: r.rollout_id, deviceId: r.device_id }));
  }

  /** Whether a deployment is an override a rollout made (moving a device, or rolling it back). */
  madeByRollout(deploymentId: number): boolean {
    return (
      this.stmt(
        'SELECT 1 FROM rollout_devices WHERE deployment_id = ? UNION ALL SELECT 1 FROM rollout_devices WHERE rb_deployment_id = ? LIMIT 1',
      ).get(deploymentId, deploymentId) !== undefined
    );
  }

  /** Intent: these devices are being sent the target (call inside the reservation's transaction). */
  markSending(
    id: number,
    rows: ReadonlyArray<{
      deviceId: string;
      deploymentId: number | null;
      viaGroup: boolean;
      want: ScopeRef;
      prev: ScopeRef | null;
      /** whether the device is online now (counted as offline while pending otherwise) */
      online?: boolean | undefined;
    }>,
    now: number,
  ): void {
    const up = this.stmt(
      `UPDATE rollout_devices SET publish = 'pending', outcome = 'pending', online = @on, deployment_id = @dep, via_group = @vg, want_kind = @wk,
         want_id = @wi, want_version = @wv, prev_kind = @pk, prev_id = @pi, prev_version = @pv, updated_at = @now
       WHERE rollout_id = @id AND device_id = @dev AND publish = 'none'`,
    );
    tx(this.db, () => {
      for (const r of rows) {
        const res = up.run({
          id,
          dev: r.deviceId,
          dep: r.deploymentId,
          vg: r.viaGroup ? 1 : 0,
          wk: r.want.kind,
          wi: r.want.id,
          wv: r.want.version,
          pk: r.prev?.kind ?? null,
          pi: r.prev?.id ?? null,
          pv: r.prev?.version ?? null,
          on: r.online ? 1 : 0,
          now,
        });
        // never twice for one device and phase: a row already being sent is a bug upstream, not a retry
        if (res.changes !== 1)
          throw conflict(`rollout ${id}: device ${r.deviceId} is already being sent the target`);
      }
      this.touch(id, now);
    });
  }

  /** Sent (call inside the deployments' commit transaction). */
  markSent(id: number, deviceIds: readonly string[], now: number): void {
    const up = this.stmt(
      `UPDATE rollout_devices SET publish = 'published', published_at = @now, updated_at = @now,
         outcome = CASE WHEN outcome = 'queued' THEN 'pending' ELSE outcome END
       WHERE rollout_id = @id AND device_id = @dev AND publish = 'pending'`,
    );
    tx(this.db, () => {
      for (const dev of deviceIds) up.run({ id, dev, now });
      this.touch(id, now);
    });
  }

  /** A recorded send whose deployment never reached the broker: queued again (a new version next time). */
  unmarkSending(id: number, deviceIds: readonly string[], now: number): void {
    const up = this.stmt(
      `UPDATE rollout_devices SET publish = 'none', outcome = 'queued', deployment_id = NULL, via_group = 0,
         want_kind = NULL, want_id = NULL, want_version = NULL, updated_at = @now
       WHERE rollout_id = @id AND device_id = @dev AND publish = 'pending'`,
    );
    tx(this.db, () => {
      for (const dev of deviceIds) up.run({ id, dev, now });
      this.touch(id, now);
    });
  }

  /** Devices of a phase the rollout cannot send to (revoked, another target applies): superseded, unsent. */
  skip(id: number, rows: ReadonlyArray<{ deviceId: string; detail: string }>, now: number): void {
    const up = this.stmt(
      `UPDATE rollout_devices SET outcome = 'superseded', detail = @detail, updated_at = @now
       WHERE rollout_id = @id AND device_id = @dev AND publish = 'none'`,
    );
    tx(this.db, () => {
      for (const r of rows) up.run({ id, dev: r.deviceId, detail: r.detail, now });
      this.touch(id, now);
    });
  }

  /** These devices' rows of one rollout (unknown ids left out). */
  devicesByIds(id: number, deviceIds: readonly string[]): RolloutDeviceRow[] {
    const out: RolloutDeviceRow[] = [];
    for (let i = 0; i < deviceIds.length; i += 500) {
      const chunk = deviceIds.slice(i, i + 500);
      out.push(
        ...(
          this.db
            .prepare(
              `SELECT * FROM rollout_devices WHERE rollout_id = ? AND device_id IN (${chunk.map(() => '?').join(',')})`,
            )
            .all(id, ...chunk) as DevRow[]
        ).map(toDevice),
      );
    }
    return out;
  }

  /** Outcomes as the devices report them; returns the rows that changed. */
  setOutcomes(batch: readonly OutcomeUpdate[], now: number): OutcomeUpdate[] {
    if (batch.length === 0) return [];
    const changed: OutcomeUpdate[] = [];
    const up = this.stmt(
      `UPDATE rollout_devices SET outcome = @outcome, online = @online, detail = @detail, updated_at = @now
       WHERE rollout_id = @id AND device_id = @dev AND publish <> 'none'
         AND (outcome <> @outcome OR online <> @online OR COALESCE(detail, '') <> COALESCE(@detail, ''))`,
    );
    tx(this.db, () => {
      const touched = new Set<number>();
      for (const u of batch) {
        const r = up.run({
          id: u.rolloutId,
          dev: u.deviceId,
          outcome: u.outcome,
          online: u.online ? 1 : 0,
          detail: u.detail,
          now,
        });
        if (r.changes > 0) {
          changed.push(u);
          touched.add(u.rolloutId);
        }
      }
      for (const id of touched) this.touch(id, now);
    });
    return changed;
  }

  /** Rollback intent per device: pending with the deployment reserved for it, or kept (nothing to send). */
  markRollback(
    id: number,
    rows: ReadonlyArray<{
      deviceId: string;
      rb: 'pending' | 'kept' | 'published';
      deploymentId: number | null;
      target: ScopeRef | null;
    }>,
    now: number,
  ): void {
    const up = this.stmt(
      `UPDATE rollout_devices SET rb = @rb, rb_deployment_id = @dep, rb_kind = @k, rb_id = @i, rb_version = @v,
         updated_at = @now WHERE rollout_id = @id AND device_id = @dev`,
    );
    tx(this.db, () => {
      for (const r of rows)
        up.run({
          id,
          dev: r.deviceId,
          rb: r.rb,
          dep: r.deploymentId,
          k: r.target?.kind ?? null,
          i: r.target?.id ?? null,
          v: r.target?.version ?? null,
          now,
        });
      this.touch(id, now);
    });
  }

  /** Devices back on their previous target (or kept where they are), as they report it. */
  setRollbackStates(
    id: number,
    rows: ReadonlyArray<{ deviceId: string; rb: RollbackState }>,
    now: number,
  ): void {
    const up = this.stmt(
      'UPDATE rollout_devices SET rb = @rb, updated_at = @now WHERE rollout_id = @id AND device_id = @dev AND rb <> @rb',
    );
    tx(this.db, () => {
      let n = 0;
      for (const r of rows) n += up.run({ id, dev: r.deviceId, rb: r.rb, now }).changes;
      if (n > 0) this.touch(id, now);
    });
  }

  /** Settling after success: an override cleared (pending → published), or kept. */
  markSettle(
    id: number,
    rows: ReadonlyArray<{ deviceId: string; settle: SettleState; deploymentId: number | null }>,
    now: number,
  ): void {
    const up = this.stmt(
      `UPDATE rollout_devices SET settle = @s, settle_deployment_id = COALESCE(@dep, settle_deployment_id),
         updated_at = @now WHERE rollout_id = @id AND device_id = @dev`,
    );
    tx(this.db, () => {
      for (const r of rows) up.run({ id, dev: r.deviceId, s: r.settle, dep: r.deploymentId, now });
      this.touch(id, now);
    });
  }

  private touch(id: number, now: number): void {
    this.stmt('UPDATE rollouts SET updated_at = ? WHERE id = ?').run(now, id);
  }

  // ---- selection (devices of the fleet) -----------------------------------------------------------

  /** Unrevoked devices whose labels satisfy every requirement, by id. */
  matchingDevices(reqs: readonly Requirement[]): string[] {
    if (reqs.length === 0) throw invalidInput('selector: no requirement');
    const where: string[] = ['d.revoked_at IS NULL'];
    const params: unknown[] = [];
    for (const r of reqs) {
      switch (r.op) {
        case 'exists':
          where.push('EXISTS (SELECT 1 FROM device_labels l WHERE l.device_id = d.id AND l.key = ?)');
          params.push(r.key);
          break;
        case 'absent':
          where.push('NOT EXISTS (SELECT 1 FROM device_labels l WHERE l.device_id = d.id AND l.key = ?)');
          params.push(r.key);
          break;
        case 'in':
        case 'notin':
          where.push(
            `${r.op === 'in' ? '' : 'NOT '}EXISTS (SELECT 1 FROM device_labels l WHERE l.device_id = d.id AND l.key = ? AND l.value IN (${r.values.map(() => '?').join(',')}))`,
          );
          params.push(r.key, ...r.values);
          break;
      }
    }
    return (
      this.db
        .prepare(`SELECT d.id FROM devices d WHERE ${where.join(' AND ')} ORDER BY d.id`)
        .all(...params) as Array<{
        id: string;
      }>
    ).map((r) => r.id);
  }

  /** Every unrevoked device, by id. */
  allDevices(): string[] {
    return (
      this.stmt('SELECT id FROM devices WHERE revoked_at IS NULL ORDER BY id').all() as Array<{ id: string }>
    ).map((r) => r.id);
  }
}

function toRollout(r: Row): RolloutRow {
  return {
    id: r.id,
    name: r.name,
    state: r.state,
    reason: r.reason,
    selection: JSON.parse(r.selection_json) as Selection,
    target: JSON.parse(r.target_json) as RolloutTarget,
    phases: JSON.parse(r.phases_json) as PhaseRecord[],
    policy: JSON.parse(r.policy_json) as RolloutPolicy,
    phase: r.phase,
    phaseStartedAt: r.phase_started_at,
    soakSince: r.soak_since,
    group: r.grp,
    groupDeploymentId: r.group_deployment_id,
    groupPreviousId: r.group_previous_id,
    groupRollbackId: r.group_rollback_id,
    rollback: r.rollback,
    settle: r.settle,
    supersededBy: r.superseded_by,
    excluded: r.excluded,
    ops: r.ops,
    createdAt: r.created_at,
    createdBy: r.created_by,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    updatedAt: r.updated_at,
  };
}

function toDevice(r: DevRow): RolloutDeviceRow {
  return {
    rolloutId: r.rollout_id,
    deviceId: r.device_id,
    phase: r.phase,
    position: r.position,
    canary: r.canary === 1,
    publish: r.publish,
    deploymentId: r.deployment_id,
    viaGroup: r.via_group === 1,
    want: ref(r.want_kind, r.want_id, r.want_version),
    prev: ref(r.prev_kind, r.prev_id, r.prev_version),
    publishedAt: r.published_at,
    outcome: r.outcome,
    online: r.online === 1,
    detail: r.detail,
    rb: r.rb,
    rbDeploymentId: r.rb_deployment_id,
    rbTarget: ref(r.rb_kind, r.rb_id, r.rb_version),
    settle: r.settle,
    settleDeploymentId: r.settle_deployment_id,
    updatedAt: r.updated_at,
  };
}
