/** What every fleet store shares: prepared statements cached per SQL text, and page bounds. */
import type { Statement } from 'better-sqlite3';
import { type Db, tx } from '../../db/database.js';
import { invalidInput } from '../../lib/errors.js';

export interface Page<T> {
  items: T[];
  /** rows matching the filter (all pages), where counting is cheap */
  total?: number | undefined;
  /** pass as `cursor` for the next page; absent on the last page */
  nextCursor?: string | undefined;
}

export const MAX_PAGE = 500;

export abstract class SqlStore {
  private readonly stmts = new Map<string, Statement>();

  constructor(protected readonly db: Db) {}

  /** Run `fn` in one transaction (nested: a savepoint), e.g. a deployment and a rollout's intent together. */
  transaction<T>(fn: () => T): T {
    return tx(this.db, fn);
  }

  /** Prepared once, reused. */
  protected stmt(sql: string): Statement {
    let st = this.stmts.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.stmts.set(sql, st);
    }
    return st;
  }
}

/** A page size: 1..MAX_PAGE, default 50. */
export function pageLimit(limit: number | undefined): number {
  const n = limit ?? 50;
  if (!Number.isInteger(n) || n < 1 || n > MAX_PAGE)
    throw invalidInput(`limit ${limit}: expected 1-${MAX_PAGE}`);
  return n;
}

/** A cursor that is the last row id seen (lists ordered by id, newest first). */
export function idCursor(cursor: string): number {
  if (!/^\d{1,16}$/.test(cursor)) throw invalidInput('cursor: not a cursor this server gave out');
  return Number(cursor);
}
