/**
 * Deployments: every signed target the fleet published, per scope (a device or a group), versions counted
 * per scope from 1 — the numbers the operator sees. `scope_targets` holds the current one per scope (what
 * the broker retains) and the version before it. A cleared device override is a deployment too: a signed
 * "no target for this scope" at the next version, so it is ordered and replay-safe like any target.
 *
 * Intent first (`reserve` → publish → `commit` | `fail`): two deploys to one scope at once get different
 * versions, and a version is never reused, whatever happened to its publication.
 */
import { tx } from '../../db/database.js';
import { conflict } from '../../lib/errors.js';
import type { SignedTarget, TargetScope } from '../../transport/messages.js';
import type { ScopeKey, ScopeVersion } from '../view.js';
import { idCursor, type Page, pageLimit, SqlStore } from './sql.js';

export interface DeploymentRow {
  id: number;
  scope: TargetScope;
  version: number;
  cleared: boolean;
  state: 'pending' | 'published' | 'failed';
  images: Array<{ name: string; digest: string }>;
  createdAt: number;
  createdBy: string | null;
  /** a redeploy: the id of the earlier deployment whose release it re-published */
  redeployOf: number | null;
}

export interface ScopeTargetRow extends ScopeVersion {
  deploymentId: number;
  previousVersion: number | null;
  updatedAt: number;
}

export interface DeploymentQuery {
  scope?: ScopeKey | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
}

interface Row {
  id: number;
  scope_kind: 'device' | 'group';
  scope_id: string;
  version: number;
  cleared: number;
  state: DeploymentRow['state'];
  images_json: string;
  created_at: number;
  created_by: string | null;
  redeploy_of: number | null;
}

export class DeploymentStore extends SqlStore {
  /**
   * Intent first: reserve the next version of `scope` and record the target `sign(version)` makes, as
   * `pending`, in one transaction (a version is never handed out twice, nor recorded without its signed
   * target). Then publish, then `commit` (it becomes the scope's current target) or `fail`. A pending row
   * found at start may have reached the broker before a crash: the server commits and republishes it.
   * A failed one keeps its version used, so a version number never means two different targets.
   */
  reserve(
    scope: TargetScope,
    sign: (version: number) => SignedTarget,
    o: { cleared?: boolean; createdBy?: string | undefined; now: number },
  ): { row: DeploymentRow; signed: SignedTarget } {
    return tx(this.db, () => {
      const version = this.nextVersion(scope);
      const signed = sign(version);
      const t = signed.target;
      if (t.version !== version || t.scope.kind !== scope.kind || t.scope.id !== scope.id)
        throw conflict('signed target does not match the reserved scope and version');
      const cleared = o.cleared ? 1 : 0;
      const id = Number(
        this.stmt(
          `INSERT INTO deployments (scope_kind, scope_id, version, cleared, state, signed_json, images_json, created_at, created_by)
           VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)`,
        ).run(
          scope.kind,
          scope.id,
          version,
          cleared,
          JSON.stringify(signed),
          JSON.stringify(t.images),
          o.now,
          o.createdBy ?? null,
        ).lastInsertRowid,
      );
      const row: DeploymentRow = {
        id,
        scope,
        version,
        cleared: cleared === 1,
        state: 'pending',
        images: t.images,
        createdAt: o.now,
        createdBy: o.createdBy ?? null,
        redeployOf: null,
      };
      return { signed, row };
    });
  }

  /** Published: the deployment becomes its scope's current target (the one before it is kept as previous). */
  commit(id: number, now: number): void {
    tx(this.db, () => {
      const r = this.stmt("SELECT * FROM deployments WHERE id = ? AND state = 'pending'").get(id) as
        | Row
        | undefined;
      if (!r) return;
      this.stmt("UPDATE deployments SET state = 'published' WHERE id = ?").run(id);
      this.stmt(
        `INSERT INTO scope_targets (scope_kind, scope_id, deployment_id, version, cleared, previous_version, updated_at)
         VALUES (@k, @i, @d, @v, @c, NULL, @now)
         ON CONFLICT(scope_kind, scope_id) DO UPDATE SET previous_version = scope_targets.version,
           deployment_id = @d, version = @v, cleared = @c, updated_at = @now
         WHERE scope_targets.version < @v`,
      ).run({ k: r.scope_kind, i: r.scope_id, d: id, v: r.version, c: r.cleared, now });
    });
  }

  /**
   * Note that deployment `id` re-published the release of deployment `of` (a redeploy). Written after the
   * publish: the release itself is the signed target; a crash in between loses only this note.
   */
  noteRedeploy(id: number, of: number): void {
    this.stmt('UPDATE deployments SET redeploy_of = ? WHERE id = ?').run(of, id);
  }

  /** Never reached the broker. */
  fail(id: number): void {
    this.stmt("UPDATE deployments SET state = 'failed' WHERE id = ? AND state = 'pending'").run(id);
  }

  /** Deployments left pending by a crash (see `reserve`). */
  pending(): DeploymentRow[] {
    return (this.stmt("SELECT * FROM deployments WHERE state = 'pending' ORDER BY id").all() as Row[]).map(
      toRow,
    );
  }

  nextVersion(scope: TargetScope): number {
    const r = this.stmt(
      'SELECT MAX(version) AS v FROM deployments WHERE scope_kind = ? AND scope_id = ?',
    ).get(scope.kind, scope.id) as { v: number | null };
    return (r.v ?? 0) + 1;
  }

  /** The current target of a scope (cleared ones included: `cleared` says so). */
  current(scope: ScopeKey): ScopeTargetRow | undefined {
    const r = this.stmt('SELECT * FROM scope_targets WHERE scope_kind = ? AND scope_id = ?').get(
      scope.kind,
      scope.id,
    ) as Record<string, unknown> | undefined;
    return r ? toScopeTarget(r) : undefined;
  }

  /** The signed target of the current deployment of every scope: what the broker must retain. */
  currentSigned(): SignedTarget[] {
    return (
      this.stmt(
        'SELECT d.signed_json FROM scope_targets s JOIN deployments d ON d.id = s.deployment_id ORDER BY d.id',
      ).all() as Array<{ signed_json: string }>
    ).map((r) => JSON.parse(r.signed_json) as SignedTarget);
  }

  get(id: number): (DeploymentRow & { signed: SignedTarget }) | undefined {
    const r = this.stmt('SELECT * FROM deployments WHERE id = ?').get(id) as
      | (Row & { signed_json: string })
      | undefined;
    return r ? { ...toRow(r), signed: JSON.parse(r.signed_json) as SignedTarget } : undefined;
  }

  byVersion(scope: ScopeKey, version: number): DeploymentRow | undefined {
    const r = this.stmt(
      'SELECT * FROM deployments WHERE scope_kind = ? AND scope_id = ? AND version = ?',
    ).get(scope.kind, scope.id, version) as Row | undefined;
    return r ? toRow(r) : undefined;
  }

  /** Newest first, a page at a time (cursor = the last id seen). */
  list(q: DeploymentQuery = {}): Page<DeploymentRow> {
    const limit = pageLimit(q.limit);
    const where: string[] = [];
    const params: Record<string, unknown> = { limit: limit + 1 };
    if (q.scope) {
      where.push('scope_kind = @k AND scope_id = @i');
      params.k = q.scope.kind;
      params.i = q.scope.id;
    }
    if (q.cursor !== undefined) {
      where.push('id < @cursor');
      params.cursor = idCursor(q.cursor);
    }
    const rows = this.db
      .prepare(
        `SELECT id, scope_kind, scope_id, version, cleared, state, images_json, created_at, created_by, redeploy_of FROM deployments
         ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT @limit`,
      )
      .all(params) as Row[];
    const more = rows.length > limit;
    const items = rows.slice(0, limit).map(toRow);
    const last = items[items.length - 1];
    return { items, ...(more && last ? { nextCursor: String(last.id) } : {}) };
  }

  /** The scopes whose current target pins image `name` (an image in use must not be deleted). */
  imageInUse(name: string): ScopeKey[] {
    return (
      this.stmt(
        `SELECT s.scope_kind, s.scope_id FROM scope_targets s JOIN deployments d ON d.id = s.deployment_id
         WHERE s.cleared = 0 AND EXISTS (SELECT 1 FROM json_each(d.images_json) j WHERE json_extract(j.value, '$.name') = ?)
         ORDER BY s.scope_kind, s.scope_id`,
      ).all(name) as Array<{ scope_kind: 'device' | 'group'; scope_id: string }>
    ).map((r) => ({ kind: r.scope_kind, id: r.scope_id }));
  }

  /** The scopes whose current target names agent release `version` (a release in use is not deleted). */
  agentInUse(version: string): ScopeKey[] {
    return (
      this.stmt(
        `SELECT s.scope_kind, s.scope_id FROM scope_targets s JOIN deployments d ON d.id = s.deployment_id
         WHERE s.cleared = 0 AND json_extract(d.signed_json, '$.target.agent.version') = ?
         ORDER BY s.scope_kind, s.scope_id`,
      ).all(version) as Array<{ scope_kind: 'device' | 'group'; scope_id: string }>
    ).map((r) => ({ kind: r.scope_kind, id: r.scope_id }));
  }

  /** Every current scope target (for the fleet's "expected" column; scopes are few next to devices). */
  scopeTargets(): ScopeTargetRow[] {
    return (this.stmt('SELECT * FROM scope_targets').all() as Array<Record<string, unknown>>).map(
      toScopeTarget,
    );
  }
}

function toRow(r: Row): DeploymentRow {
  return {
    id: r.id,
    scope: { kind: r.scope_kind, id: r.scope_id },
    version: r.version,
    cleared: r.cleared === 1,
    state: r.state,
    images: JSON.parse(r.images_json) as DeploymentRow['images'],
    createdAt: r.created_at,
    createdBy: r.created_by,
    redeployOf: r.redeploy_of ?? null,
  };
}

function toScopeTarget(r: Record<string, unknown>): ScopeTargetRow {
  return {
    kind: r.scope_kind as 'device' | 'group',
    id: r.scope_id as string,
    version: r.version as number,
    cleared: r.cleared === 1,
    deploymentId: r.deployment_id as number,
    previousVersion: (r.previous_version as number | null) ?? null,
    updatedAt: r.updated_at as number,
  };
}
