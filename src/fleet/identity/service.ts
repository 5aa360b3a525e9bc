/**
 * Users, API tokens, browser sessions, the one-time setup token and the audit log of the fleet API.
 *
 * Lifecycle of a caller's identity:
 * - the first admin is made with `berth fleet user add <name> --role admin` on the server's state dir, or
 *   through `POST /api/v1/setup` with the one-time setup token `fleet serve` prints while no user exists;
 * - a user logs in (name + password, rate-limited per name and per address) and gets a session: an opaque
 *   cookie value (only its sha256 is stored) plus a CSRF token the browser sends back in a header;
 *   sessions end at logout, after `sessionIdleMs` without use, or `sessionMaxMs` after login;
 * - API tokens (`berth_<id>_<secret>`, shown once, stored as sha256) carry a role no higher than their
 *   creator's, may expire, and are revoked by id; a token acts with min(its role, creator's role now).
 * Every mutating call — also refused ones — is written to the audit log by the caller of `audit()`.
 */
import {
  BerthError,
  conflict,
  invalidInput,
  notFound,
  permissionDenied,
  unauthenticated,
} from '../../lib/errors.js';
import { FailureLimiter } from './rate-limit.js';
import { lesserRole, type Role, roleAllows } from './roles.js';
import {
  checkPasswordPolicy,
  dummyPasswordHash,
  hashPassword,
  newApiToken,
  parseApiToken,
  randomSecret,
  safeEqual,
  sha256Hex,
  verifyPassword,
} from './secrets.js';
import type { AuditEntry, AuditQuery, AuditRow, IdentityStore, TokenRow, UserRow } from './store.js';

/** Who is calling: resolved once per request (or per local CLI run) and handed to services and the audit. */
export interface Actor {
  kind: 'user' | 'token' | 'local' | 'anonymous';
  /** user name, token name, local unix user; 'anonymous' */
  name: string;
  role: Role | null;
  userId: number | null;
  tokenId?: string;
  /** session cookie value hash, for logout and CSRF */
  sessionHash?: string;
  csrf?: string;
  /** when the session or token stops working (ms) */
  expiresAt?: number | null;
}

export const ANONYMOUS: Actor = { kind: 'anonymous', name: 'anonymous', role: null, userId: null };

/** How an actor is written in the audit log. */
export function actorLabel(a: Actor): string {
  return `${a.kind === 'anonymous' ? 'anonymous' : `${a.kind}:${a.name}`}`;
}

export interface UserInfo {
  name: string;
  role: Role;
  createdAt: number;
}

export interface TokenInfo {
  id: string;
  name: string;
  role: Role;
  user: string | null;
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
  lastUsedAt: number | null;
  /** active | expired | revoked */
  state: 'active' | 'expired' | 'revoked';
}

export interface IdentityOptions {
  now?: () => number;
  sessionIdleMs?: number;
  sessionMaxMs?: number;
  /** failed logins per user name (and ×3 per remote address) within `loginWindowMs` before 429 */
  loginMaxFailures?: number;
  loginWindowMs?: number;
  /** audit rows older than this are dropped by prune() (default 400 days) */
  auditRetentionMs?: number;
}

const USER_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$/;
const TOKEN_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.@ -]{0,63}$/;

export function assertUserName(name: string): string {
  if (!USER_NAME.test(name))
    throw invalidInput(
      `user name ${JSON.stringify(name)}: use 1-64 of [A-Za-z0-9_.@-], not starting with . @ or -`,
    );
  return name;
}

export class IdentityService {
  private readonly now: () => number;
  private readonly idleMs: number;
  private readonly maxMs: number;
  private readonly byUser: FailureLimiter;
  private readonly byAddress: FailureLimiter;
  private setupTokenHash: string | undefined;
  private readonly auditRetentionMs: number;

  constructor(
    private readonly store: IdentityStore,
    opts: IdentityOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.idleMs = opts.sessionIdleMs ?? 12 * 3600_000;
    this.maxMs = opts.sessionMaxMs ?? 7 * 24 * 3600_000;
    const max = opts.loginMaxFailures ?? 10;
    const windowMs = opts.loginWindowMs ?? 15 * 60_000;
    this.byUser = new FailureLimiter({ max, windowMs }, this.now);
    this.byAddress = new FailureLimiter({ max: max * 3, windowMs }, this.now);
    this.auditRetentionMs = opts.auditRetentionMs ?? 400 * 24 * 3600_000;
  }

  // users ------------------------------------------------------------------------------------------
  async addUser(name: string, role: Role, password: string): Promise<UserInfo> {
    assertUserName(name);
    checkPasswordPolicy(password);
    const passwordHash = await hashPassword(password);
    return this.store.transaction(() => {
      if (this.store.userByName(name)) throw conflict(`user ${name} exists`);
      return userInfo(this.store.insertUser({ name, role, passwordHash, createdAt: this.now() }));
    });
  }

  users(): UserInfo[] {
    return this.store.users().map(userInfo);
  }

  user(name: string): UserInfo {
    return userInfo(this.requireUser(name));
  }

  userNameOf(id: number): string | undefined {
    return this.store.userById(id)?.name;
  }

  hasUsers(): boolean {
    return this.store.countUsers() > 0;
  }

  /** Change a role; the last admin cannot be demoted (the fleet would have nobody to manage users). */
  setRole(name: string, role: Role): UserInfo {
    return this.store.transaction(() => {
      const u = this.requireUser(name);
      if (u.role === 'admin' && role !== 'admin' && this.store.countUsers('admin') === 1)
        throw conflict(`user ${name} is the last admin; make another admin first`);
      this.store.updateUser(u.id, { role });
      return userInfo({ ...u, role });
    });
  }

  /** Set a password and end every session of the user (a changed password must lock out a thief). */
  async setPassword(name: string, password: string): Promise<void> {
    checkPasswordPolicy(password);
    const passwordHash = await hashPassword(password);
    this.store.transaction(() => {
      const u = this.requireUser(name);
      this.store.updateUser(u.id, { passwordHash });
      this.store.deleteSessionsOf(u.id);
    });
  }

  /** Delete a user: their sessions and the tokens they made go with them. */
  deleteUser(name: string): void {
    this.store.transaction(() => {
      const u = this.requireUser(name);
      if (u.role === 'admin' && this.store.countUsers('admin') === 1)
        throw conflict(`user ${name} is the last admin; make another admin first`);
      this.store.deleteUser(u.id);
    });
  }

  private requireUser(name: string): UserRow {
    const u = this.store.userByName(name);
    if (!u) throw notFound(`user ${name} not found`);
    return u;
  }

  // setup ------------------------------------------------------------------------------------------
  /** A one-time token to create the first admin over HTTP, while no user exists (kept in memory only). */
  beginSetup(): string | undefined {
    if (this.hasUsers()) return undefined;
    const token = `setup_${randomSecret(24)}`;
    this.setupTokenHash = sha256Hex(token);
    return token;
  }

  async completeSetup(token: string, name: string, password: string): Promise<UserInfo> {
    if (!this.setupTokenHash || !safeEqual(sha256Hex(token), this.setupTokenHash))
      throw unauthenticated(
        'setup token is not valid (it is printed once by `berth fleet serve` while no user exists)',
      );
    assertUserName(name);
    checkPasswordPolicy(password);
    const passwordHash = await hashPassword(password);
    return this.store.transaction(() => {
      if (this.hasUsers()) throw conflict('the fleet already has users; setup is closed');
      const u = this.store.insertUser({ name, role: 'admin', passwordHash, createdAt: this.now() });
      this.setupTokenHash = undefined;
      return userInfo(u);
    });
  }

  // sessions ---------------------------------------------------------------------------------------
  /**
   * Check a password and open a session. Unknown names cost the same scrypt as known ones; after
   * `loginMaxFailures` failures for a name (or 3× that from an address) within the window, every
   * attempt — right or wrong — is refused with RateLimited until the window moves on.
   */
  async login(
    name: string,
    password: string,
    source: string,
  ): Promise<{ cookie: string; csrf: string; user: UserInfo; expiresAt: number }> {
    const u = await this.checkPassword(name, password, source);
    const cookie = randomSecret(32);
    const csrf = randomSecret(32);
    const now = this.now();
    const expiresAt = now + this.maxMs;
    this.store.insertSession({
      idHash: sha256Hex(cookie),
      userId: u.id,
      csrf,
      createdAt: now,
      expiresAt,
      lastSeenAt: now,
    });
    return { cookie, csrf, user: userInfo(u), expiresAt };
  }

  /** Check a user's password under the login rate limit (logins, and a user changing their password). */
  async checkPassword(name: string, password: string, source: string): Promise<UserRow> {
    const keys = [`user:${name}`, `addr:${source}`] as const;
    const wait = Math.max(this.byUser.retryAfter(keys[0]), this.byAddress.retryAfter(keys[1]));
    if (wait > 0)
      throw new BerthError(
        'RateLimited',
        `too many failed logins; try again in ${Math.ceil(wait / 1000)} s`,
        {
          details: { retryAfterSeconds: Math.ceil(wait / 1000) },
        },
      );
    const u = this.store.userByName(name);
    const ok = await verifyPassword(password, u?.passwordHash ?? (await dummyPasswordHash()));
    if (!u || !ok) {
      this.byUser.fail(keys[0]);
      this.byAddress.fail(keys[1]);
      throw unauthenticated('wrong user name or password');
    }
    this.byUser.reset(keys[0]);
    return u;
  }

  /** The actor behind a session cookie, or undefined (unknown, expired, idle too long). */
  sessionActor(cookie: string): Actor | undefined {
    if (cookie.length > 128) return undefined;
    const idHash = sha256Hex(cookie);
    const s = this.store.session(idHash);
    if (!s) return undefined;
    const now = this.now();
    if (s.expiresAt <= now || s.lastSeenAt + this.idleMs <= now) {
      this.store.deleteSession(idHash);
      return undefined;
    }
    const u = this.store.userById(s.userId);
    if (!u) return undefined;
    // Write the last use at most once a minute: every API call must not become a database write.
    if (now - s.lastSeenAt > 60_000) this.store.touchSession(idHash, now);
    return {
      kind: 'user',
      name: u.name,
      role: u.role,
      userId: u.id,
      sessionHash: idHash,
      csrf: s.csrf,
      expiresAt: Math.min(s.expiresAt, s.lastSeenAt + this.idleMs),
    };
  }

  logout(actor: Actor): void {
    if (actor.sessionHash) this.store.deleteSession(actor.sessionHash);
  }

  /** Housekeeping (the server runs it hourly): ended sessions, audit rows past their retention. */
  prune(): { sessions: number; audit: number } {
    return {
      sessions: this.store.deleteExpiredSessions(this.now(), this.idleMs),
      audit: this.store.pruneAudit(this.now() - this.auditRetentionMs),
    };
  }

  // tokens -----------------------------------------------------------------------------------------
  /**
   * Make an API token. The local CLI (the server's state dir) may make any role; a user, or a token acting
   * for its user, makes tokens up to its own role, owned by that user (a server-made token's are the
   * server's).
   */
  createToken(
    creator: Actor,
    opts: { name: string; role: Role; expiresAt?: number | undefined },
  ): { token: string; info: TokenInfo } {
    if (!TOKEN_NAME.test(opts.name))
      throw invalidInput(`token name ${JSON.stringify(opts.name)}: use 1-64 of [A-Za-z0-9_.@ -]`);
    if (opts.expiresAt !== undefined && opts.expiresAt <= this.now())
      throw invalidInput('expires: must be in the future');
    if (creator.kind !== 'local') {
      if (!creator.role) throw permissionDenied('API tokens are made by a logged-in user or another token');
      if (!roleAllows(creator.role, opts.role))
        throw permissionDenied(`a ${creator.role} cannot make a ${opts.role} token`);
    }
    const t = newApiToken();
    const row = {
      id: t.id,
      name: opts.name,
      role: opts.role,
      userId: creator.kind === 'local' ? null : creator.userId,
      secretHash: sha256Hex(t.secret),
      createdAt: this.now(),
      expiresAt: opts.expiresAt ?? null,
    };
    this.store.insertToken(row);
    return { token: t.token, info: this.tokenInfo(this.store.token(t.id)!) };
  }

  /** Tokens `actor` may see: all for an admin or the local CLI, else their own. */
  tokens(actor: Actor): TokenInfo[] {
    const all = actor.kind === 'local' || actor.role === 'admin';
    return this.store.tokens(all ? {} : { userId: actor.userId ?? -1 }).map((t) => this.tokenInfo(t));
  }

  revokeToken(actor: Actor, id: string): TokenInfo {
    const t = this.store.token(id);
    const mine = t && t.userId !== null && t.userId === actor.userId;
    if (!t || !(mine || actor.kind === 'local' || actor.role === 'admin'))
      throw notFound(`token ${id} not found`);
    if (!this.store.revokeToken(id, this.now())) throw conflict(`token ${id} is already revoked`);
    return this.tokenInfo(this.store.token(id)!);
  }

  /** The actor behind `Authorization: Bearer <token>`, or undefined (malformed, unknown, expired, revoked). */
  tokenActor(bearer: string): Actor | undefined {
    const p = parseApiToken(bearer);
    if (!p) return undefined;
    const t = this.store.token(p.id);
    if (!t || !safeEqual(sha256Hex(p.secret), t.secretHash)) return undefined;
    const now = this.now();
    if (t.revokedAt !== null || (t.expiresAt !== null && t.expiresAt <= now)) return undefined;
    if (t.userId !== null && t.userRole === null) return undefined; // creator gone (cascade raced)
    if (t.lastUsedAt === null || now - t.lastUsedAt > 60_000) this.store.touchToken(t.id, now);
    const role = t.userRole ? lesserRole(t.role, t.userRole) : t.role;
    return { kind: 'token', name: t.name, role, userId: t.userId, tokenId: t.id, expiresAt: t.expiresAt };
  }

  private tokenInfo(t: TokenRow): TokenInfo {
    const state =
      t.revokedAt !== null
        ? 'revoked'
        : t.expiresAt !== null && t.expiresAt <= this.now()
          ? 'expired'
          : 'active';
    return {
      id: t.id,
      name: t.name,
      role: t.role,
      user: t.userName,
      createdAt: t.createdAt,
      expiresAt: t.expiresAt,
      revokedAt: t.revokedAt,
      lastUsedAt: t.lastUsedAt,
      state,
    };
  }

  // audit ------------------------------------------------------------------------------------------
  audit(entry: Omit<AuditEntry, 'at'> & { at?: number }): void {
    this.store.insertAudit({
      ...entry,
      at: entry.at ?? this.now(),
      message: entry.message === null ? null : entry.message.slice(0, 1000),
      target: entry.target === null ? null : entry.target.slice(0, 300),
    });
  }

  auditLog(q: AuditQuery): AuditRow[] {
    return this.store.audit(q);
  }
}

function userInfo(u: UserRow): UserInfo {
  return { name: u.name, role: u.role, createdAt: u.createdAt };
}
