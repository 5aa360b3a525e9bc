import { type Db, tx } from '../db/database.js';
import { conflict, invalidInput, notFound } from '../lib/errors.js';
import type { SnapshotInfo, SnapshotKind } from './snapshotter.js';

/**
 * Snapshot metadata shared by every backend: one SQLite row per snapshot in table `snapshots`
 * (migration "snapshots" in src/db/migrations.ts), scoped by driver so backends never see each other.
 *
 * Intent first. Every operation that touches the disk goes through three steps:
 *
 *     const rec = meta.beginPrepare(...)   // 1. one transaction: checks + row in state `preparing`
 *     await backend.createOnDisk(rec)      // 2. act (subvolume, dirs, thin device…)
 *     meta.finishPrepare(rec.id)           // 3. one transaction: state `ready`
 *
 * and likewise beginCommit/finishCommit (`committing`), beginRemove/finishRemove (`removing`). A crash
 * between 1 and 3 leaves the row in its intent state; `pending()` lists those rows for the recovery pass,
 * which undoes a prepare (remove whatever was created, drop the row), and finishes a commit or a remove
 * (their disk steps are idempotent). The generic form is `transition()` below; src/snapshots/base.ts
 * builds the whole contract on top of it.
 *
 * The row id never changes, commit included (a commit renames the row and flips its kind), so backends
 * name their on-disk objects by `id` and never have to move anything.
 */
export type SnapshotState = 'preparing' | 'ready' | 'committing' | 'removing';

export interface SnapshotRecord {
  id: number;
  driver: string;
  name: string;
  kind: SnapshotKind;
  parent: string | undefined;
  /** Whatever the backend needs to find its object again (thin device id, subvolume id…). */
  backendId: string | undefined;
  labels: Record<string, string>;
  state: SnapshotState;
  /** For `committing`: { name, labels } of the commit; for others: backend-defined or undefined. */
  intent: Record<string, unknown> | undefined;
  /** Usage recorded at commit time, when the backend records it. */
  size: number | undefined;
  inodes: number | undefined;
  createdAt: number;
  updatedAt: number;
}

interface Row {
  id: number;
  driver: string;
  name: string;
  kind: SnapshotKind;
  parent: string | null;
  backend_id: string | null;
  labels: string;
  state: SnapshotState;
  intent: string | null;
  size: number | null;
  inodes: number | null;
  created_at: number;
  updated_at: number;
}

function fromRow(r: Row): SnapshotRecord {
  return {
    id: r.id,
    driver: r.driver,
    name: r.name,
    kind: r.kind,
    parent: r.parent ?? undefined,
    backendId: r.backend_id ?? undefined,
    labels: JSON.parse(r.labels) as Record<string, string>,
    state: r.state,
    intent: r.intent === null ? undefined : (JSON.parse(r.intent) as Record<string, unknown>),
    size: r.size ?? undefined,
    inodes: r.inodes ?? undefined,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export function toSnapshotInfo(r: SnapshotRecord): SnapshotInfo {
  return {
    name: r.name,
    kind: r.kind,
    parent: r.parent,
    labels: r.labels,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  };
}

/** Keys and names: printable, no NUL, bounded. They never become paths (rows are named by id on disk). */
export function assertSnapshotName(what: string, s: string): string {
  if (typeof s !== 'string' || s.length === 0 || s.length > 512 || hasControlChars(s)) {
    throw invalidInput(`invalid snapshot ${what} ${JSON.stringify(s)}: 1-512 printable characters`);
  }
  return s;
}

function hasControlChars(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

function checkLabels(labels: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels ?? {})) {
    if (typeof v !== 'string') throw invalidInput(`snapshot label ${JSON.stringify(k)} must be a string`);
    out[k] = v;
  }
  return out;
}

export class SnapshotMetadata {
  constructor(
    readonly db: Db,
    readonly driver: string,
    private readonly now: () => number = Date.now,
  ) {}

  get(name: string): SnapshotRecord | undefined {
    const r = this.db
      .prepare('SELECT * FROM snapshots WHERE driver = ? AND name = ?')
      .get(this.driver, name) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  getById(id: number): SnapshotRecord | undefined {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE driver = ? AND id = ?').get(this.driver, id) as
      | Row
      | undefined;
    return r ? fromRow(r) : undefined;
  }

  /** A snapshot that exists and is not being created or removed; NotFound otherwise. */
  require(name: string): SnapshotRecord {
    const r = this.get(name);
    if (!r || r.state === 'preparing' || r.state === 'removing') {
      throw notFound(`snapshot ${JSON.stringify(name)} does not exist`);
    }
    return r;
  }

  list(): SnapshotRecord[] {
    return (
      this.db.prepare('SELECT * FROM snapshots WHERE driver = ? ORDER BY id').all(this.driver) as Row[]
    ).map(fromRow);
  }

  children(name: string): SnapshotRecord[] {
    return (
      this.db
        .prepare('SELECT * FROM snapshots WHERE driver = ? AND parent = ? ORDER BY id')
        .all(this.driver, name) as Row[]
    ).map(fromRow);
  }

  /** The parent chain of a record, nearest first (parent, grandparent, …). */
  ancestors(rec: SnapshotRecord): SnapshotRecord[] {
    const out: SnapshotRecord[] = [];
    let p = rec.parent;
    while (p !== undefined) {
      const r = this.get(p);
      if (!r)
        throw notFound(`snapshot ${JSON.stringify(rec.name)}: ancestor ${JSON.stringify(p)} is missing`);
      out.push(r);
      p = r.parent;
    }
    return out;
  }

  /** Rows left in an intent state by an interrupted operation, oldest first: the recovery pass's input. */
  pending(): SnapshotRecord[] {
    return (
      this.db
        .prepare("SELECT * FROM snapshots WHERE driver = ? AND state <> 'ready' ORDER BY id")
        .all(this.driver) as Row[]
    ).map(fromRow);
  }

  /**
   * Intent of prepare/view: checks the key is free and the parent committed, then inserts the row in
   * state `preparing`. Conflict when the key exists, NotFound when the parent is missing or not committed.
   */
  beginPrepare(
    key: string,
    kind: 'active' | 'view',
    parent: string | undefined,
    labels?: Record<string, string>,
  ): SnapshotRecord {
    assertSnapshotName('key', key);
    if (parent !== undefined) assertSnapshotName('parent', parent);
    const cleanLabels = checkLabels(labels);
    return tx(this.db, () => {
      if (this.get(key)) throw conflict(`snapshot ${JSON.stringify(key)} already exists`);
      if (parent !== undefined) {
        const p = this.get(parent);
        if (p?.kind !== 'committed' || p.state !== 'ready') {
          throw notFound(`parent snapshot ${JSON.stringify(parent)} does not exist or is not committed`);
        }
      }
      const t = this.now();
      const info = this.db
        .prepare(
          `INSERT INTO snapshots (driver, name, kind, parent, labels, state, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, 'preparing', ?, ?)`,
        )
        .run(this.driver, key, kind, parent ?? null, JSON.stringify(cleanLabels), t, t);
      return this.getById(Number(info.lastInsertRowid))!;
    });
  }

  finishPrepare(id: number, backendId?: string): SnapshotRecord {
    return this.update(id, "state = 'ready', intent = NULL, backend_id = COALESCE(?, backend_id)", [
      backendId ?? null,
    ]);
  }

  /** Undo of a prepare that failed or was interrupted: the row goes away. */
  abortPrepare(id: number): void {
    this.db.prepare('DELETE FROM snapshots WHERE driver = ? AND id = ?').run(this.driver, id);
  }

  /**
   * Intent of commit: the key must be an active (writable) ready snapshot and the name free. The row
   * moves to `committing` with { name, labels } in its intent; finishCommit renames it.
   */
  beginCommit(name: string, key: string, labels?: Record<string, string>): SnapshotRecord {
    assertSnapshotName('name', name);
    assertSnapshotName('key', key);
    const cleanLabels = labels === undefined ? undefined : checkLabels(labels);
    return tx(this.db, () => {
      const rec = this.get(key);
      if (!rec || rec.state === 'preparing' || rec.state === 'removing') {
        throw notFound(`active snapshot ${JSON.stringify(key)} does not exist`);
      }
      if (rec.kind !== 'active' || rec.state !== 'ready') {
        throw invalidInput(
          `snapshot ${JSON.stringify(key)} is ${rec.kind === 'view' ? 'a read-only view' : rec.state === 'ready' ? 'already committed' : `being ${rec.state}`}: only an active snapshot can be committed`,
        );
      }
      if (this.get(name)) throw conflict(`snapshot ${JSON.stringify(name)} already exists`);
      return this.update(id(rec), "state = 'committing', intent = ?", [
        JSON.stringify({ name, labels: cleanLabels ?? rec.labels }),
      ]);
    });
  }

  finishCommit(id: number, usage?: { size: number; inodes: number }): SnapshotRecord {
    return tx(this.db, () => {
      const rec = this.getById(id);
      if (rec?.state !== 'committing') throw notFound(`snapshot #${id} is not being committed`);
      const intent = rec.intent as { name: string; labels: Record<string, string> };
      return this.update(
        id,
        "name = ?, kind = 'committed', labels = ?, state = 'ready', intent = NULL, size = ?, inodes = ?",
        [intent.name, JSON.stringify(intent.labels ?? {}), usage?.size ?? null, usage?.inodes ?? null],
      );
    });
  }

  /** A commit that failed before anything irreversible: back to a ready active snapshot. */
  abortCommit(id: number): void {
    this.update(id, "state = 'ready', intent = NULL", []);
  }

  /** Intent of remove: the snapshot must exist and have no children (Conflict otherwise). */
  beginRemove(name: string): SnapshotRecord {
    assertSnapshotName('key', name);
    return tx(this.db, () => {
      const rec = this.get(name);
      if (!rec || rec.state === 'removing') throw notFound(`snapshot ${JSON.stringify(name)} does not exist`);
      if (rec.state !== 'ready') {
        throw conflict(`snapshot ${JSON.stringify(name)} is being ${rec.state}; run recovery first`);
      }
      const kids = this.children(name);
      if (kids.length > 0) {
        throw conflict(
          `snapshot ${JSON.stringify(name)} has ${kids.length} child snapshot(s) (${kids
            .slice(0, 3)
            .map((k) => JSON.stringify(k.name))
            .join(', ')}); remove them first`,
        );
      }
      return this.update(rec.id, "state = 'removing'", []);
    });
  }

  finishRemove(id: number): void {
    this.db.prepare('DELETE FROM snapshots WHERE driver = ? AND id = ?').run(this.driver, id);
  }

  /** Backend bookkeeping outside the lifecycle (e.g. a thin device id chosen before the act). */
  setBackendId(id: number, backendId: string | undefined): SnapshotRecord {
    return this.update(id, 'backend_id = ?', [backendId ?? null]);
  }

  /** Backend-defined intent details (devmapper: device state) on a row already in an intent state. */
  setIntent(id: number, intent: Record<string, unknown> | undefined): SnapshotRecord {
    return this.update(id, 'intent = ?', [intent === undefined ? null : JSON.stringify(intent)]);
  }

  private update(rowId: number, set: string, args: unknown[]): SnapshotRecord {
    const info = this.db
      .prepare(`UPDATE snapshots SET ${set}, updated_at = ? WHERE driver = ? AND id = ?`)
      .run(...args, this.now(), this.driver, rowId);
    if (info.changes === 0) throw notFound(`snapshot #${rowId} does not exist`);
    return this.getById(rowId)!;
  }
}

const id = (r: SnapshotRecord) => r.id;

/**
 * The intent-first pattern in one call: `begin` records the intent (a transaction), `act` does the disk
 * work, `finish` records the result. If `act` throws, `undo` runs (best effort) and the error goes up.
 * A crash between begin and finish leaves the intent for `pending()` and the recovery pass.
 */
export async function transition<T>(steps: {
  begin: () => SnapshotRecord;
  act: (rec: SnapshotRecord) => Promise<T>;
  finish: (rec: SnapshotRecord, result: T) => void;
  undo: (rec: SnapshotRecord, err: unknown) => Promise<void> | void;
}): Promise<T> {
  const rec = steps.begin();
  let result: T;
  try {
    result = await steps.act(rec);
  } catch (err) {
    if (!isSimulatedCrash(err)) await Promise.resolve(steps.undo(rec, err)).catch(() => undefined);
    throw err;
  }
  steps.finish(rec, result);
  return result;
}

/**
 * Thrown by a failpoint in tests to stop an operation dead, as a crash would: nothing is undone, the
 * intent stays recorded, and the conformance suite then checks that `recover()` resolves it.
 */
export class SimulatedCrash extends Error {
  constructor(readonly point: string) {
    super(`simulated crash at ${point}`);
    this.name = 'SimulatedCrash';
  }
}

export function isSimulatedCrash(err: unknown): err is SimulatedCrash {
  return err instanceof SimulatedCrash;
}
