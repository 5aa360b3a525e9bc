/**
 * The operator's operations on a fleet, one implementation for both ways in: the HTTP API calls them
 * with the request's actor (routes check the role first), and the local CLI (`berth fleet …` on the
 * server's state dir) calls them through LocalFleetClient as the `local` actor. Results are the API's wire
 * shapes (src/fleet/api/schemas.ts), so both transports print the same thing.
 *
 * Finer rules than a route's role live here, since they depend on who asks: a user may change their own
 * password, see and revoke their own tokens; everything else about users and other tokens is admin work.
 */
import { conflict, invalidInput, permissionDenied } from '../lib/errors.js';
import type { ApiToken, AuditEntry, CommandAnswer, Session, User } from './api/schemas.js';
import type { CommandService } from './commands.js';
import type { Role } from './identity/roles.js';
import type { Actor, IdentityService, TokenInfo, UserInfo } from './identity/service.js';
import type { AuditRow } from './identity/store.js';

export interface FleetOperationsDeps {
  identity: IdentityService;
  /** the command service, opened on first use (the local CLI connects to the broker only then) */
  commands: () => Promise<CommandService>;
}

export interface AuditQueryInput {
  limit: number;
  before?: number | undefined;
  actor?: string | undefined;
  action?: string | undefined;
  failed?: boolean | undefined;
}

export interface CommandInput {
  kind: 'restart' | 'logs' | 'report' | 'purgeVolume';
  app?: string | undefined;
  service?: string | undefined;
  tail?: number | undefined;
  volume?: string | undefined;
  force?: boolean | undefined;
  timeoutMs?: number | undefined;
  expiresS?: number | undefined;
}

const iso = (ms: number) => new Date(ms).toISOString();
const isoOrNull = (ms: number | null) => (ms === null ? null : iso(ms));

export function toUser(u: UserInfo): User {
  return { name: u.name, role: u.role, createdAt: iso(u.createdAt) };
}

export function toToken(t: TokenInfo): ApiToken {
  return {
    ...t,
    createdAt: iso(t.createdAt),
    expiresAt: isoOrNull(t.expiresAt),
    revokedAt: isoOrNull(t.revokedAt),
    lastUsedAt: isoOrNull(t.lastUsedAt),
  };
}

export function toAudit(r: AuditRow): AuditEntry {
  return { ...r, at: iso(r.at) };
}

export class FleetOperations {
  constructor(readonly deps: FleetOperationsDeps) {}

  private get identity(): IdentityService {
    return this.deps.identity;
  }

  whoami(actor: Actor): Session {
    if (!actor.role) throw permissionDenied('not logged in');
    return {
      user: actor.name,
      role: actor.role,
      via: actor.kind === 'token' ? 'token' : 'session',
      csrfToken: actor.csrf ?? null,
      expiresAt: isoOrNull(actor.expiresAt ?? null),
    };
  }

  // users ------------------------------------------------------------------------------------------
  users(actor: Actor): User[] {
    requireAdmin(actor, 'list users');
    return this.identity.users().map(toUser);
  }

  async addUser(actor: Actor, u: { name: string; role: Role; password: string }): Promise<User> {
    requireAdmin(actor, 'add users');
    return toUser(await this.identity.addUser(u.name, u.role, u.password));
  }

  /**
   * Change a user's role (admin) or password (admin, or the user themself with their current password).
   * Both changes are checked before either is made.
   */
  async updateUser(
    actor: Actor,
    name: string,
    patch: { role?: Role | undefined; password?: string | undefined; currentPassword?: string | undefined },
  ): Promise<User> {
    if (patch.role === undefined && patch.password === undefined)
      throw invalidInput('body: give role and/or password');
    const admin = isAdmin(actor);
    const self = actor.kind === 'user' && actor.name === name;
    if (patch.role !== undefined && !admin) throw permissionDenied('only an admin changes roles');
    if (patch.password !== undefined && !admin) {
      if (!self) throw permissionDenied('only an admin sets another user’s password');
      if (patch.currentPassword === undefined)
        throw invalidInput('body.currentPassword: required to change your own password');
      // the same rate limit as a login: no side door for guessing
      await this.identity.checkPassword(name, patch.currentPassword, `user:${name}`);
    }
    this.identity.user(name); // NotFound before anything changes
    if (patch.role !== undefined) this.identity.setRole(name, patch.role);
    if (patch.password !== undefined) await this.identity.setPassword(name, patch.password);
    return toUser(this.identity.user(name));
  }

  deleteUser(actor: Actor, name: string): void {
    requireAdmin(actor, 'delete users');
    if (actor.kind === 'user' && actor.name === name) throw conflict('you cannot delete yourself');
    this.identity.deleteUser(name);
  }

  // tokens -----------------------------------------------------------------------------------------
  tokens(actor: Actor): ApiToken[] {
    return this.identity.tokens(actor).map(toToken);
  }

  createToken(
    actor: Actor,
    req: { name: string; role: Role; expiresAt?: string | undefined },
  ): { token: string; info: ApiToken } {
    const expiresAt = req.expiresAt === undefined ? undefined : Date.parse(req.expiresAt);
    if (expiresAt !== undefined && !Number.isFinite(expiresAt))
      throw invalidInput(`expiresAt: not a time: ${req.expiresAt}`);
    const made = this.identity.createToken(actor, { name: req.name, role: req.role, expiresAt });
    return { token: made.token, info: toToken(made.info) };
  }

  revokeToken(actor: Actor, id: string): ApiToken {
    return toToken(this.identity.revokeToken(actor, id));
  }

  // audit ------------------------------------------------------------------------------------------
  audit(actor: Actor, q: AuditQueryInput): { items: AuditEntry[]; next: number | null } {
    requireAdmin(actor, 'read the audit log');
    const rows = this.identity.auditLog(q);
    return {
      items: rows.map(toAudit),
      next: rows.length === q.limit && rows.length > 0 ? rows[rows.length - 1]!.id : null,
    };
  }

  // commands ---------------------------------------------------------------------------------------
  async command(_actor: Actor, deviceId: string, req: CommandInput): Promise<CommandAnswer> {
    const { timeoutMs, expiresS, ...body } = req;
    const svc = await this.deps.commands();
    const clean = Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
    return svc.send(deviceId, clean, { timeoutMs, expiresS });
  }
}

function isAdmin(a: Actor): boolean {
  return a.kind === 'local' || a.role === 'admin';
}

function requireAdmin(a: Actor, what: string): void {
  if (!isAdmin(a)) throw permissionDenied(`only an admin may ${what}`);
}
