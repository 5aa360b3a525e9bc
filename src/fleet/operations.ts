/**
 * The operator's operations on a fleet, one implementation for both ways in: the HTTP API calls them
 * with the request's actor (routes check the role first), and the local CLI (`berth fleet …` on the
 * server's state dir) calls them through LocalFleetClient as the `local` actor. Results are the API's wire
 * shapes (src/fleet/api/schemas.ts), so both transports print the same thing.
 *
 * Finer rules than a route's role live here, since they depend on who asks: a user may change their own
 * password, see and revoke their own tokens; everything else about users and other tokens is admin work.
 */
import { compareVersions } from '../core/self-update.js';
import { conflict, invalidInput, notFound, permissionDenied, unavailable } from '../lib/errors.js';
import type {
  ApiToken,
  AuditEntry,
  CommandAnswer,
  Deployment,
  DeploymentQueryInput,
  Device,
  DeviceDetail,
  DeviceEvent,
  DeviceQueryInput,
  EventQueryInput,
  Image,
  MetricQueryInput,
  Metrics,
  Page,
  Release,
  Session,
  TargetRefWire,
  User,
} from './api/schemas.js';
import type { CommandService } from './commands.js';
import type { Role } from './identity/roles.js';
import type { Actor, IdentityService, TokenInfo, UserInfo } from './identity/service.js';
import type { AuditRow } from './identity/store.js';
import type { ReleaseService } from './services/releases.js';
import type { DeploymentRow, DeviceRow, FleetImageRow, FleetStores, ReleaseRow } from './store/index.js';
import { effectiveTarget, formatTargetRef } from './view.js';

export interface FleetOperationsDeps {
  identity: IdentityService;
  stores: FleetStores;
  /** the command service, opened on first use (the local CLI connects to the broker only then) */
  commands: () => Promise<CommandService>;
  /** agent releases (removal deletes blobs from the content store); absent: read-only */
  releases?: (() => ReleaseService | Promise<ReleaseService>) | undefined;
}

export interface AuditQueryInput {
  limit: number;
  cursor?: string | undefined;
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

function ref(r: { kind: TargetRefWire['kind']; id: string; version: number } | null): TargetRefWire | null {
  return r ? { kind: r.kind, id: r.id, version: r.version, text: formatTargetRef(r) } : null;
}

export function toDevice(d: DeviceRow): Device {
  return {
    id: d.id,
    online: d.online,
    status: d.status,
    applied: ref(d.applied),
    previous: ref(d.previous),
    targetStatus: d.targetStatus,
    lastError: d.lastError,
    lastErrorAt: isoOrNull(d.lastErrorAt),
    rejection: d.rejection
      ? { kind: d.rejection.kind, id: d.rejection.id, version: d.rejection.version, at: iso(d.rejection.at) }
      : null,
    platform: d.platform,
    agentVersion: d.agentVersion,
    keyId: d.keyId,
    groups: d.groups,
    labels: d.labels,
    firstSeen: isoOrNull(d.firstSeen),
    lastSeen: isoOrNull(d.lastSeen),
    stateAt: isoOrNull(d.stateAt),
    enrolledAt: isoOrNull(d.enrolledAt),
    revokedAt: isoOrNull(d.revokedAt),
  };
}

export function toImage(r: FleetImageRow): Image {
  return {
    name: r.name,
    digest: r.digest,
    mediaType: r.mediaType,
    size: r.size,
    totalSize: r.totalSize,
    platforms: r.platforms ? r.platforms.split(',') : [],
    pushedAt: iso(r.pushedAt),
  };
}

export function toRelease(r: ReleaseRow): Release {
  return { ...r, createdAt: iso(r.createdAt) };
}

export function toDeployment(r: DeploymentRow): Deployment {
  return {
    id: r.id,
    scope: { kind: r.scope.kind, id: r.scope.id },
    version: r.version,
    text: formatTargetRef({ kind: r.scope.kind, id: r.scope.id, version: r.version }),
    cleared: r.cleared,
    state: r.state,
    images: r.images,
    createdAt: iso(r.createdAt),
    createdBy: r.createdBy,
  };
}

/** "k=v" → must match, "k" → must have. */
function labelFilter(labels: string[] | undefined): { labels: Record<string, string>; keys: string[] } {
  const out: Record<string, string> = {};
  const keys: string[] = [];
  for (const l of labels ?? []) {
    const i = l.indexOf('=');
    if (i < 0) keys.push(l);
    else out[l.slice(0, i)] = l.slice(i + 1);
  }
  return { labels: out, keys };
}

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
  audit(actor: Actor, q: AuditQueryInput): { items: AuditEntry[]; next: string | null } {
    requireAdmin(actor, 'read the audit log');
    const rows = this.identity.auditLog({
      ...q,
      before: q.cursor === undefined ? undefined : Number(q.cursor),
    });
    return {
      items: rows.map(toAudit),
      next: rows.length === q.limit && rows.length > 0 ? String(rows[rows.length - 1]!.id) : null,
    };
  }

  // devices ----------------------------------------------------------------------------------------
  devices(_actor: Actor, q: DeviceQueryInput): Page<Device> {
    const { labels, keys } = labelFilter(q.label);
    const page = this.deps.stores.devices.list({
      online: q.online,
      status: q.status,
      group: q.group,
      labels,
      labelKeys: keys,
      platform: q.platform,
      idPrefix: q.prefix,
      image: q.image,
      revoked: q.revoked,
      sort: q.sort,
      order: q.order,
      limit: q.limit,
      cursor: q.cursor,
    });
    return { items: page.items.map(toDevice), total: page.total ?? null, next: page.nextCursor ?? null };
  }

  device(_actor: Actor, id: string): DeviceDetail {
    const { devices, deployments } = this.deps.stores;
    const d = devices.detail(id);
    if (!d) throw notFound(`no device ${id} in the fleet`);
    const expected = effectiveTarget(d.id, d.groups, (scope) => deployments.current(scope));
    return {
      ...toDevice(d),
      expected: expected ? ref(expected) : null,
      services: d.services,
      state: d.state,
      info: d.info,
    };
  }

  events(_actor: Actor, q: EventQueryInput): Page<DeviceEvent> {
    const page = this.deps.stores.events.list({
      deviceId: q.device,
      type: q.type,
      since: q.since === undefined ? undefined : Date.parse(q.since),
      limit: q.limit,
      cursor: q.cursor,
    });
    return {
      items: page.items.map((e) => ({ ...e, at: iso(e.at), receivedAt: iso(e.receivedAt) })),
      total: page.total ?? null,
      next: page.nextCursor ?? null,
    };
  }

  metrics(_actor: Actor, deviceId: string, q: MetricQueryInput, now = Date.now()): Metrics {
    if (!this.deps.stores.devices.exists(deviceId)) throw notFound(`no device ${deviceId} in the fleet`);
    const to = q.to === undefined ? now : Date.parse(q.to);
    const from = q.from === undefined ? to - 3600_000 : Date.parse(q.from);
    const series = this.deps.stores.metrics.query({
      deviceId,
      from,
      to,
      series: q.series,
      resolutionMs: q.resolution,
    });
    return { deviceId, from: iso(from), to: iso(to), series };
  }

  // agent releases -----------------------------------------------------------------------------------
  releases(_actor: Actor): Release[] {
    return this.deps.stores.releases
      .list()
      .sort((a, b) => compareVersions(b.version, a.version))
      .map(toRelease);
  }

  release(_actor: Actor, version: string): Release {
    const r = this.deps.stores.releases.get(version);
    if (!r) throw notFound(`no release ${version} in the fleet`);
    return toRelease(r);
  }

  async removeRelease(_actor: Actor, version: string): Promise<void> {
    if (!this.deps.releases) throw unavailable('releases cannot be removed through this server');
    await (await this.deps.releases()).remove(version);
  }

  // images, deployments (read) -----------------------------------------------------------------------
  images(_actor: Actor): Image[] {
    return this.deps.stores.images.list().map(toImage);
  }

  deployments(_actor: Actor, q: DeploymentQueryInput): Page<Deployment> {
    if (q.device !== undefined && q.group !== undefined)
      throw invalidInput('query: device or group, not both');
    const scope =
      q.device !== undefined
        ? { kind: 'device' as const, id: q.device }
        : q.group !== undefined
          ? { kind: 'group' as const, id: q.group }
          : undefined;
    const page = this.deps.stores.deployments.list({ scope, limit: q.limit, cursor: q.cursor });
    return { items: page.items.map(toDeployment), total: page.total ?? null, next: page.nextCursor ?? null };
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
