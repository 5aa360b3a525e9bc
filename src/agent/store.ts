/**
 * The agent's records in SQLite — its single source of truth across restarts, with or without a broker.
 *
 * Targets have three roles: `pending` (received, not yet started), `current` (being applied or applied)
 * and `previous` (the target a rollback goes back to, and what GC keeps: the last one that passed its health
 * window, or one that converged and was replaced before its window ended when there was none). A target
 * moves pending → current (status applying → converged → healthy | failed). A target that failed its window
 * is remembered by its origin (scope + operator version) and never applied again.
 */

import type { Statement } from 'better-sqlite3';
import type { Rollout } from '../core/rollback.js';
import type { HealthStatus } from '../core/state.js';
import type { Step } from '../core/steps.js';
import { originLabel, originOf, parseTarget, type Target } from '../core/target.js';
import type { Db } from '../db/database.js';
import { tx } from '../db/database.js';

export type TargetRole = 'current' | 'previous' | 'pending';
export type TargetStatus = 'received' | 'applying' | 'converged' | 'healthy' | 'failed';

export interface StoredTarget {
  target: Target;
  status: TargetStatus;
  reason?: string | undefined;
  updatedAt: number;
}

export interface ContainerRecord {
  id: string;
  app: string;
  service: string;
  specHash: string;
  image: string;
  restarts: number;
  stoppedByUser: boolean;
  health: HealthStatus;
  lastError?: string | undefined;
}

interface TargetRow {
  version: number;
  body: string;
  status: TargetStatus;
  reason: string | null;
  updated_at: number;
}

interface ContainerRow {
  id: string;
  app: string;
  service: string;
  spec_hash: string;
  image: string;
  restarts: number;
  stopped_by_user: number;
  health: HealthStatus;
  last_error: string | null;
}

export class AgentStore {
  /** parsed targets by body: the reconciler reads them every run, validation is not free */
  private parsed = new Map<TargetRole, { body: string; target: Target }>();
  /** last written app status, to skip writes that change nothing (flash) */
  private appStatus = new Map<string, string>();

  private stmts = new Map<string, Statement>();

  constructor(readonly db: Db) {}

  /** Prepared once, reused: preparing dominated a reconcile cycle's CPU time. */
  private stmt(sql: string): Statement {
    let st = this.stmts.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.stmts.set(sql, st);
    }
    return st;
  }

  getTarget(role: TargetRole): StoredTarget | undefined {
    const row = this.stmt('SELECT * FROM agent_targets WHERE role = ?').get(role) as TargetRow | undefined;
    if (!row) return undefined;
    let hit = this.parsed.get(role);
    if (hit?.body !== row.body) {
      hit = { body: row.body, target: parseTarget(JSON.parse(row.body), `stored ${role} target`) };
      this.parsed.set(role, hit);
    }
    return {
      target: hit.target,
      status: row.status,
      reason: row.reason ?? undefined,
      updatedAt: row.updated_at,
    };
  }

  private putTarget(role: TargetRole, target: Target, status: TargetStatus, now: number, reason?: string) {
    this.stmt(
      `INSERT INTO agent_targets (role, version, body, status, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(role) DO UPDATE SET version = excluded.version, body = excluded.body, status = excluded.status,
           reason = excluded.reason, updated_at = excluded.updated_at`,
    ).run(role, target.version, JSON.stringify(target), status, reason ?? null, now);
  }

  private dropTarget(role: TargetRole) {
    this.stmt('DELETE FROM agent_targets WHERE role = ?').run(role);
  }

  /** A version above every target this agent has held, pending, applied or refused. */
  nextVersion(): number {
    const r = this.stmt(
      `SELECT MAX(v) AS v FROM (SELECT MAX(version) AS v FROM agent_targets
         UNION ALL SELECT MAX(version) FROM agent_rejected_targets)`,
    ).get() as { v: number | null };
    return (r.v ?? 0) + 1;
  }

  /**
   * A target arrived (from the fleet or a file). Older than what we apply, or rejected before: ignored
   * (returns why). Otherwise it replaces any pending one.
   */
  receiveTarget(target: Target, now: number): { accepted: boolean; reason?: string } {
    return tx(this.db, () => {
      const rejected = (
        target.origin
          ? this.stmt('SELECT reason FROM agent_rejected_targets WHERE origin = ?').get(originKey(target))
          : this.stmt('SELECT reason FROM agent_rejected_targets WHERE version = ? AND origin IS NULL').get(
              target.version,
            )
      ) as { reason: string } | undefined;
      if (rejected)
        return {
          accepted: false,
          reason: `target ${originLabel(originOf(target))} was rolled back before: ${rejected.reason}`,
        };
      const cur = this.getTarget('current');
      const pend = this.getTarget('pending');
      const newest = Math.max(cur?.target.version ?? -1, pend?.target.version ?? -1);
      if (
        target.version <= newest &&
        !(cur && cur.target.version === target.version && cur.status === 'failed')
      )
        return { accepted: false, reason: `target ${target.version} is not newer than ${newest}` };
      this.putTarget('pending', target, 'received', now);
      return { accepted: true };
    });
  }

  /**
   * Move pending to current. A healthy current becomes previous (what a rollback returns to); so does a
   * converged one still in its health window when there is no previous yet — it ran and had not failed,
   * which beats having nothing to go back to. Returns the promoted target, if any.
   */
  promotePending(now: number): Target | undefined {
    return tx(this.db, () => {
      const pend = this.getTarget('pending');
      if (!pend) return undefined;
      const cur = this.getTarget('current');
      if (cur?.status === 'healthy') this.putTarget('previous', cur.target, 'healthy', now);
      else if (cur?.status === 'converged' && !this.getTarget('previous'))
        this.putTarget('previous', cur.target, 'converged', now);
      this.putTarget('current', pend.target, 'applying', now);
      this.dropTarget('pending');
      this.stmt('DELETE FROM agent_rollout').run();
      return pend.target;
    });
  }

  setCurrentStatus(status: TargetStatus, now: number, reason?: string): void {
    this.stmt(
      'UPDATE agent_targets SET status = ?, reason = COALESCE(?, reason), updated_at = ? WHERE role = ?',
    ).run(status, reason ?? null, now, 'current');
  }

  /** The current target failed: remember never to apply it again, and go back to the previous one. */
  rollBack(reason: string, now: number): Target | undefined {
    return tx(this.db, () => {
      const cur = this.getTarget('current');
      const prev = this.getTarget('previous');
      if (!cur) return undefined;
      this.stmt(
        'INSERT OR REPLACE INTO agent_rejected_targets (version, reason, at, origin) VALUES (?, ?, ?, ?)',
      ).run(cur.target.version, reason, now, cur.target.origin ? originKey(cur.target) : null);
      this.stmt('DELETE FROM agent_rollout').run();
      if (!prev) {
        this.setCurrentStatus('failed', now, reason);
        return undefined;
      }
      this.putTarget(
        'current',
        prev.target,
        'applying',
        now,
        `rollback from ${originLabel(originOf(cur.target))}: ${reason}`,
      );
      this.dropTarget('previous');
      return prev.target;
    });
  }

  getRollout(): Rollout | undefined {
    const row = this.stmt('SELECT * FROM agent_rollout WHERE id = 1').get() as
      | { version: number; converged_at: number; window_ms: number; baseline: string }
      | undefined;
    if (!row) return undefined;
    return {
      version: row.version,
      convergedAt: row.converged_at,
      windowMs: row.window_ms,
      baselineRestarts: JSON.parse(row.baseline) as Record<string, number>,
    };
  }

  startRollout(r: Rollout): void {
    this.stmt(
      'INSERT OR REPLACE INTO agent_rollout (id, version, converged_at, window_ms, baseline) VALUES (1, ?, ?, ?, ?)',
    ).run(r.version, r.convergedAt, r.windowMs, JSON.stringify(r.baselineRestarts));
  }

  /** The current target converged: its health window opens (one transaction, so the two never disagree). */
  markConverged(r: Rollout, now: number): void {
    tx(this.db, () => {
      this.setCurrentStatus('converged', now);
      this.startRollout(r);
    });
  }

  endRollout(): void {
    this.stmt('DELETE FROM agent_rollout').run();
  }

  // --- containers -------------------------------------------------------------------------------

  containers(): ContainerRecord[] {
    return (this.stmt('SELECT * FROM agent_containers').all() as ContainerRow[]).map((r) => ({
      id: r.id,
      app: r.app,
      service: r.service,
      specHash: r.spec_hash,
      image: r.image,
      restarts: r.restarts,
      stoppedByUser: r.stopped_by_user === 1,
      health: r.health,
      lastError: r.last_error ?? undefined,
    }));
  }

  recordContainer(
    c: Pick<ContainerRecord, 'id' | 'app' | 'service' | 'specHash' | 'image'>,
    now: number,
  ): void {
    this.stmt(
      `INSERT OR REPLACE INTO agent_containers (id, app, service, spec_hash, image, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ).run(c.id, c.app, c.service, c.specHash, c.image, now, now);
  }

  updateContainer(
    id: string,
    patch: Partial<Pick<ContainerRecord, 'restarts' | 'stoppedByUser' | 'health' | 'lastError'>>,
    now: number,
  ): void {
    const sets: string[] = [];
    const args: unknown[] = [];
    if (patch.restarts !== undefined) sets.push('restarts = ?') && args.push(patch.restarts);
    if (patch.stoppedByUser !== undefined)
      sets.push('stopped_by_user = ?') && args.push(patch.stoppedByUser ? 1 : 0);
    if (patch.health !== undefined) sets.push('health = ?') && args.push(patch.health);
    if ('lastError' in patch) sets.push('last_error = ?') && args.push(patch.lastError ?? null);
    if (sets.length === 0) return;
    this.stmt(`UPDATE agent_containers SET ${sets.join(', ')}, updated_at = ? WHERE id = ?`).run(
      ...args,
      now,
      id,
    );
  }

  forgetContainer(id: string): void {
    this.stmt('DELETE FROM agent_containers WHERE id = ?').run(id);
  }

  // --- apps ---------------------------------------------------------------------------------------

  setAppStatus(app: string, status: 'applying' | 'running' | 'error', now: number, lastError?: string): void {
    const key = `${status}\0${lastError ?? ''}`;
    if (this.appStatus.get(app) === key) return;
    this.appStatus.set(app, key);
    this.stmt(
      `INSERT INTO agent_apps (name, status, last_error, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(name) DO UPDATE SET status = excluded.status, last_error = excluded.last_error,
           updated_at = excluded.updated_at`,
    ).run(app, status, lastError ?? null, now);
  }

  apps(): Array<{ name: string; status: string; lastError?: string }> {
    return (
      this.stmt('SELECT name, status, last_error FROM agent_apps').all() as Array<{
        name: string;
        status: string;
        last_error: string | null;
      }>
    ).map((r) => ({ name: r.name, status: r.status, ...(r.last_error ? { lastError: r.last_error } : {}) }));
  }

  // --- images fetched for targets ---------------------------------------------------------------

  addManagedImage(image: string, now: number): void {
    this.stmt('INSERT OR IGNORE INTO agent_images (image, fetched_at) VALUES (?, ?)').run(image, now);
  }

  forgetManagedImages(images: readonly string[]): void {
    const del = this.stmt('DELETE FROM agent_images WHERE image = ?');
    tx(this.db, () => {
      for (const i of images) del.run(i);
    });
  }

  managedImages(): string[] {
    return (this.stmt('SELECT image FROM agent_images ORDER BY image').all() as Array<{ image: string }>).map(
      (r) => r.image,
    );
  }

  // --- step intents -------------------------------------------------------------------------------

  beginStep(step: Step, now: number): number {
    return Number(
      this.stmt('INSERT INTO agent_step_intents (step, started_at) VALUES (?, ?)').run(
        JSON.stringify(step),
        now,
      ).lastInsertRowid,
    );
  }

  endStep(id: number): void {
    this.stmt('DELETE FROM agent_step_intents WHERE id = ?').run(id);
  }

  /** Steps that were running when the agent died; cleared. The planner re-plans from what is really there. */
  takeInterruptedSteps(): Step[] {
    return tx(this.db, () => {
      const rows = this.stmt('SELECT step FROM agent_step_intents ORDER BY id').all() as Array<{
        step: string;
      }>;
      this.stmt('DELETE FROM agent_step_intents').run();
      return rows.map((r) => JSON.parse(r.step) as Step);
    });
  }
}

/** A target's origin as one string, the key rejected targets are found by. */
function originKey(t: Target): string {
  const o = originOf(t);
  return `${o.kind}/${o.id}/${o.version}`;
}
