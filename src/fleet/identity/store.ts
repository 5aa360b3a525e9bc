/**
 * The fleet's identity tables: users, API tokens, browser sessions and the audit log. SQL stays here;
 * the rules (who may, expiry, rate limits) are in service.ts.
 */
import type { Db } from '../../db/database.js';
import type { Role } from './roles.js';

export interface UserRow {
  id: number;
  name: string;
  role: Role;
  passwordHash: string;
  createdAt: number;
}

export interface TokenRow {
  id: string;
  name: string;
  role: Role;
  userId: number | null;
  /** the creator's name (null: made on the server's state dir) */
  userName: string | null;
  /** the creator's current role, which caps the token's */
  userRole: Role | null;
  secretHash: string;
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
  lastUsedAt: number | null;
}

export interface SessionRow {
  idHash: string;
  userId: number;
  csrf: string;
  createdAt: number;
  expiresAt: number;
  lastSeenAt: number;
}

export interface AuditEntry {
  at: number;
  actor: string;
  role: Role | null;
  action: string;
  target: string | null;
  source: string;
  result: string;
  status: number | null;
  message: string | null;
}

export interface AuditRow extends AuditEntry {
  id: number;
}

export interface AuditQuery {
  /** rows with id below this (paging backwards from the newest) */
  before?: number | undefined;
  limit: number;
  actor?: string | undefined;
  action?: string | undefined;
  /** only failures (result ≠ ok) */
  failed?: boolean | undefined;
}

type Raw = Record<string, unknown>;

const toUser = (r: Raw): UserRow => ({
  id: r.id as number,
  name: r.name as string,
  role: r.role as Role,
  passwordHash: r.password_hash as string,
  createdAt: r.created_at as number,
});

const toToken = (r: Raw): TokenRow => ({
  id: r.id as string,
  name: r.name as string,
  role: r.role as Role,
  userId: (r.user_id as number | null) ?? null,
  userName: (r.user_name as string | null) ?? null,
  userRole: (r.user_role as Role | null) ?? null,
  secretHash: r.secret_hash as string,
  createdAt: r.created_at as number,
  expiresAt: (r.expires_at as number | null) ?? null,
  revokedAt: (r.revoked_at as number | null) ?? null,
  lastUsedAt: (r.last_used_at as number | null) ?? null,
});

const toSession = (r: Raw): SessionRow => ({
  idHash: r.id_hash as string,
  userId: r.user_id as number,
  csrf: r.csrf as string,
  createdAt: r.created_at as number,
  expiresAt: r.expires_at as number,
  lastSeenAt: r.last_seen_at as number,
});

const toAudit = (r: Raw): AuditRow => ({
  id: r.id as number,
  at: r.at as number,
  actor: r.actor as string,
  role: (r.role as Role | null) ?? null,
  action: r.action as string,
  target: (r.target as string | null) ?? null,
  source: r.source as string,
  result: r.result as string,
  status: (r.status as number | null) ?? null,
  message: (r.message as string | null) ?? null,
});

const TOKEN_SELECT = `SELECT t.*, u.name AS user_name, u.role AS user_role
  FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id`;

export class IdentityStore {
  constructor(readonly db: Db) {}

  /** Run `fn` in one transaction (several writes that must land together, or not at all). */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  // users ------------------------------------------------------------------------------------------
  insertUser(u: Omit<UserRow, 'id'>): UserRow {
    const r = this.db
      .prepare('INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)')
      .run(u.name, u.role, u.passwordHash, u.createdAt);
    return { ...u, id: Number(r.lastInsertRowid) };
  }

  userByName(name: string): UserRow | undefined {
    const r = this.db.prepare('SELECT * FROM users WHERE name = ?').get(name) as Raw | undefined;
    return r && toUser(r);
  }

  userById(id: number): UserRow | undefined {
    const r = this.db.prepare('SELECT * FROM users WHERE id = ?').get(id) as Raw | undefined;
    return r && toUser(r);
  }

  users(): UserRow[] {
    return (this.db.prepare('SELECT * FROM users ORDER BY name').all() as Raw[]).map(toUser);
  }

  countUsers(role?: Role): number {
    const r = (
      role
        ? this.db.prepare('SELECT COUNT(*) AS n FROM users WHERE role = ?').get(role)
        : this.db.prepare('SELECT COUNT(*) AS n FROM users').get()
    ) as { n: number };
    return r.n;
  }

  updateUser(id: number, set: { role?: Role; passwordHash?: string }): void {
    if (set.role !== undefined) this.db.prepare('UPDATE users SET role = ? WHERE id = ?').run(set.role, id);
    if (set.passwordHash !== undefined)
      this.db.prepare('UPDATE users SET password_hash = ? WHERE id = ?').run(set.passwordHash, id);
  }

  deleteUser(id: number): void {
    this.db.prepare('DELETE FROM users WHERE id = ?').run(id);
  }

  // tokens -----------------------------------------------------------------------------------------
  insertToken(t: Omit<TokenRow, 'userName' | 'userRole' | 'lastUsedAt' | 'revokedAt'>): void {
    this.db
      .prepare(
        `INSERT INTO api_tokens (id, name, role, user_id, secret_hash, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(t.id, t.name, t.role, t.userId, t.secretHash, t.createdAt, t.expiresAt);
  }

  token(id: string): TokenRow | undefined {
    const r = this.db.prepare(`${TOKEN_SELECT} WHERE t.id = ?`).get(id) as Raw | undefined;
    return r && toToken(r);
  }

  tokens(filter: { userId?: number } = {}): TokenRow[] {
    const rows =
      filter.userId !== undefined
        ? this.db.prepare(`${TOKEN_SELECT} WHERE t.user_id = ? ORDER BY t.created_at`).all(filter.userId)
        : this.db.prepare(`${TOKEN_SELECT} ORDER BY t.created_at`).all();
    return (rows as Raw[]).map(toToken);
  }

  revokeToken(id: string, at: number): boolean {
    return (
      this.db.prepare('UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(at, id)
        .changes === 1
    );
  }

  touchToken(id: string, at: number): void {
    this.db.prepare('UPDATE api_tokens SET last_used_at = ? WHERE id = ?').run(at, id);
  }

  // sessions ---------------------------------------------------------------------------------------
  insertSession(s: SessionRow): void {
    this.db
      .prepare(
        `INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at, last_seen_at)
         VALUES (@idHash, @userId, @csrf, @createdAt, @expiresAt, @lastSeenAt)`,
      )
      .run(s);
  }

  session(idHash: string): SessionRow | undefined {
    const r = this.db.prepare('SELECT * FROM sessions WHERE id_hash = ?').get(idHash) as Raw | undefined;
    return r && toSession(r);
  }

  touchSession(idHash: string, at: number): void {
    this.db.prepare('UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?').run(at, idHash);
  }

  deleteSession(idHash: string): void {
    this.db.prepare('DELETE FROM sessions WHERE id_hash = ?').run(idHash);
  }

  deleteSessionsOf(userId: number): void {
    this.db.prepare('DELETE FROM sessions WHERE user_id = ?').run(userId);
  }

  deleteExpiredSessions(now: number, idleMs: number): number {
    return this.db
      .prepare('DELETE FROM sessions WHERE expires_at <= ? OR last_seen_at <= ?')
      .run(now, now - idleMs).changes;
  }

  // audit ------------------------------------------------------------------------------------------
  insertAudit(e: AuditEntry): number {
    const r = this.db
      .prepare(
        `INSERT INTO audit_log (at, actor, role, action, target, source, result, status, message)
         VALUES (@at, @actor, @role, @action, @target, @source, @result, @status, @message)`,
      )
      .run(e);
    return Number(r.lastInsertRowid);
  }

  audit(q: AuditQuery): AuditRow[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.before !== undefined) {
      where.push('id < ?');
      args.push(q.before);
    }
    if (q.actor !== undefined) {
      where.push('actor = ?');
      args.push(q.actor);
    }
    if (q.action !== undefined) {
      where.push('action = ?');
      args.push(q.action);
    }
    if (q.failed) where.push("result <> 'ok'");
    const sql = `SELECT * FROM audit_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY id DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, q.limit) as Raw[]).map(toAudit);
  }

  /** Keep the audit log bounded: drop rows older than `before` (ms). */
  pruneAudit(before: number): number {
    return this.db.prepare('DELETE FROM audit_log WHERE at < ?').run(before).changes;
  }
}
