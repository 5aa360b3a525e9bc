/**
 * The operator's operations on a fleet, one implementation for both ways in: the HTTP API calls them
 * with the request's actor (routes check the role first), and the local CLI (`berth fleet …` on the
 * server's state dir) calls them through LocalFleetClient as the `local` actor. Results are the API's wire
 * shapes (src/fleet/api/schemas.ts), so both transports print the same thing.
 *
 * Finer rules than a route's role live here, since they depend on who asks: a user may change their own
 * password, see and revoke their own tokens; everything else about users and other tokens is admin work.
 */

import type { Readable } from 'node:stream';
import { importImage } from '../content/import.js';
import type { ContentStore } from '../content/store.js';
import { compareVersions } from '../core/self-update.js';
import type { Db } from '../db/database.js';
import { conflict, invalidInput, notFound, permissionDenied } from '../lib/errors.js';
import { hostPlatform } from '../oci/platform.js';
import type { WireReportedState } from '../transport/reports.js';
import type {
  ApiToken,
  AuditEntry,
  CommandAnswer,
  Deployment,
  DeploymentProgress,
  DeploymentQueryInput,
  DeployRequestBody,
  DeployValidation,
  Device,
  DeviceDetail,
  DeviceEvent,
  DeviceQueryInput,
  EnrollmentCreateBody,
  EnrollmentToken,
  EventQueryInput,
  Image,
  MetricQueryInput,
  Metrics,
  Page,
  RedeployRequestBody,
  Release,
  RolloutAbortBody,
  RolloutCreateBody,
  RolloutDeviceQueryInput,
  RolloutDeviceWire,
  RolloutPreview,
  RolloutQueryInput,
  RolloutWire,
  Session,
  TargetRefWire,
  User,
} from './api/schemas.js';
import type { CommandService } from './commands.js';
import { readDeployText } from './deploy-file.js';
import type { Role } from './identity/roles.js';
import {
  type Actor,
  actorLabel,
  type IdentityService,
  type TokenInfo,
  type UserInfo,
} from './identity/service.js';
import type { AuditRow } from './identity/store.js';
import { describeFleetImage } from './image-record.js';
import { describeSelection as describeSelectionText, type RolloutInput } from './rollouts/service.js';
import { toRolloutDeviceWire, toRolloutWire } from './rollouts/wire.js';
import type { DeployInput } from './services/deploy.js';
import type { EnrollRequest, EnrollResponse, FleetServices } from './services/index.js';
import { MAX_REDEPLOY_REASON } from './services/redeploy.js';
import type {
  DeploymentRow,
  DeviceRow,
  EnrollmentTokenRow,
  FleetImageRow,
  FleetStores,
  ReleaseRow,
} from './store/index.js';
import { effectiveTarget, formatTargetRef, type ScopeKey, type ScopeVersion } from './view.js';

export interface FleetOperationsDeps {
  identity: IdentityService;
  stores: FleetStores;
  /** fleet-core's services (deploy, devices, enrollment) over the same stores; the local CLI opens them
   * (fleet key, MQTT link) only when a call needs them */
  services: () => FleetServices | Promise<FleetServices>;
  /** the fleet's content store and its database (blobs of pushed images) */
  content: { store: ContentStore; db: Db };
  /** the command service, opened on first use (the local CLI connects to the broker only then) */
  commands: () => Promise<CommandService>;
}

export interface AuditQueryInput {
  limit: number;
  cursor?: string | undefined;
  actor?: string | undefined;
  action?: string | undefined;
  failed?: boolean | undefined;
}

export interface CommandInput {
  kind: 'restart' | 'logs' | 'report' | 'purgeVolume' | 'retry';
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

/** The reconcile retry a reported state says is pending (docs/agent.md), as the API shows it. */
function retryOf(state: WireReportedState | null): DeviceDetail['retry'] {
  const r = state?.target.retry;
  return r ? { at: iso(r.at), attempt: r.attempt, lastError: r.lastError ?? null } : null;
}

export function toDevice(d: DeviceRow, expected: ScopeVersion | undefined): Device {
  return {
    id: d.id,
    online: d.online,
    status: d.status,
    applied: ref(d.applied),
    expected: expected && !expected.cleared ? ref(expected) : null,
    previous: ref(d.previous),
    targetStatus: d.targetStatus,
    lastError: d.lastError,
    lastErrorAt: isoOrNull(d.lastErrorAt),
    rejection: d.rejection
      ? { kind: d.rejection.kind, id: d.rejection.id, version: d.rejection.version, at: iso(d.rejection.at) }
      : null,
    platform: d.platform,
    agentVersion: d.agentVersion,
    agentUpdate: d.agentUpdate,
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
    redeployOf: r.redeployOf,
  };
}

/** The scope a query or body names with `device` or `group` (none: undefined; both: refused). */
function scopeOf(q: { device?: string | undefined; group?: string | undefined }, where: string) {
  if (q.device !== undefined && q.group !== undefined)
    throw invalidInput(`${where}: device or group, not both`);
  if (q.device !== undefined) return { kind: 'device' as const, id: q.device };
  return q.group !== undefined ? { kind: 'group' as const, id: q.group } : undefined;
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

export function toEnrollmentToken(r: EnrollmentTokenRow): EnrollmentToken {
  return {
    id: r.id,
    groups: r.groups,
    labels: r.labels,
    expiresAt: iso(r.expiresAt),
    maxUses: r.maxUses,
    uses: r.uses,
    createdAt: iso(r.createdAt),
    createdBy: r.createdBy,
    revokedAt: isoOrNull(r.revokedAt),
  };
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
    const owner = actor.userId === null ? null : (this.identity.userNameOf(actor.userId) ?? null);
    return {
      user: actor.kind === 'local' ? `local:${actor.name}` : actor.kind === 'token' ? owner : actor.name,
      token: actor.kind === 'token' ? actor.name : null,
      role: actor.role,
      via: actor.kind === 'token' ? 'token' : actor.kind === 'local' ? 'local' : 'session',
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
    const expected = this.expectedFor();
    return {
      items: page.items.map((d) => toDevice(d, expected(d))),
      total: page.total ?? null,
      next: page.nextCursor ?? null,
    };
  }

  /** The deployment that applies to a device (scope targets looked up once per call). */
  private expectedFor(): (d: DeviceRow) => ScopeVersion | undefined {
    const cache = new Map<string, ScopeVersion | undefined>();
    const targetOf = (s: ScopeKey) => {
      const k = `${s.kind}/${s.id}`;
      if (!cache.has(k)) cache.set(k, this.deps.stores.deployments.current(s));
      return cache.get(k);
    };
    return (d) => effectiveTarget(d.id, d.groups, targetOf);
  }

  device(_actor: Actor, id: string): DeviceDetail {
    const d = this.deps.stores.devices.detail(id);
    if (!d) throw notFound(`no device ${id} in the fleet`);
    return {
      ...toDevice(d, this.expectedFor()(d)),
      services: d.services,
      retry: retryOf(d.state),
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
    await (await this.deps.services()).releases.remove(version);
  }

  // images, deployments (read) -----------------------------------------------------------------------
  images(_actor: Actor): Image[] {
    return this.deps.stores.images.list().map(toImage);
  }

  deployments(_actor: Actor, q: DeploymentQueryInput): Page<Deployment> {
    const scope = scopeOf(q, 'query');
    const { deployments } = this.deps.stores;
    const page = deployments.list({ scope, limit: q.limit, cursor: q.cursor });
    const current = new Map<string, number | undefined>();
    const currentOf = (s: ScopeKey) => {
      const k = `${s.kind}/${s.id}`;
      if (!current.has(k)) current.set(k, deployments.current(s)?.deploymentId);
      return current.get(k);
    };
    // a rollout publishes with `rollout 7` as its author: name who made the rollout beside it
    const rolloutAuthor = (by: string | null) => {
      const m = by === null ? null : /^rollout (\d+)/.exec(by);
      const who = m ? this.deps.stores.rollouts.get(Number(m[1]))?.createdBy : undefined;
      return who ? `${who} via ${by}` : by;
    };
    return {
      items: page.items.map((r) => ({
        ...toDeployment(r),
        createdBy: rolloutAuthor(r.createdBy),
        current: currentOf(r.scope) === r.id,
      })),
      total: page.total ?? null,
      next: page.nextCursor ?? null,
    };
  }

  // changes: labels, revoke, images ----------------------------------------------------------------
  async setLabels(
    _actor: Actor,
    id: string,
    patch: { set?: Record<string, string> | undefined; remove?: string[] | undefined },
  ): Promise<{ labels: Record<string, string> }> {
    const svc = await this.deps.services();
    return { labels: svc.devices.setLabels(id, patch.set ?? {}, patch.remove ?? []) };
  }

  async revokeDevice(_actor: Actor, id: string): Promise<Device> {
    const row = await (await this.deps.services()).devices.revoke(id);
    return toDevice(row, this.expectedFor()(row));
  }

  /**
   * Import an oci-archive/docker-archive (a path, or a stream such as an HTTP upload, read once) into the
   * fleet's content store with every platform kept, then record it. Bad input leaves no blob and no row.
   */
  async pushImage(
    _actor: Actor,
    source: string | { stream: Readable; name: string },
    tag: string,
    onProgress?: (bytes: number) => void,
  ): Promise<Image> {
    const { store, db } = this.deps.content;
    const res = await importImage(
      source,
      { store, db },
      { platform: hostPlatform(), allPlatforms: true, tag, onProgress },
    );
    const img = res.images[0]!;
    const row = await describeFleetImage(store, img.name, img.digest, img.mediaType);
    this.deps.stores.images.put(row);
    return toImage(row);
  }

  /** Forget an image; refused while a current deployment pins it (its devices may still fetch it). */
  deleteImage(_actor: Actor, name: string): void {
    if (!this.deps.stores.images.get(name)) throw notFound(`image ${name} is not in the fleet`);
    const users = this.deps.stores.deployments.imageInUse(name);
    if (users.length)
      throw conflict(
        `image ${name} is in the current deployment of ${users.map((u) => `${u.kind} ${u.id}`).join(', ')}; deploy something else first`,
      );
    this.deps.stores.images.remove(name);
  }

  // deployments ------------------------------------------------------------------------------------
  private async deployInput(req: DeployRequestBody) {
    const scope =
      req.device !== undefined
        ? { kind: 'device' as const, id: req.device }
        : { kind: 'group' as const, id: req.group! };
    let input: DeployInput = req.file
      ? readDeployText(req.file.text, req.file.name, req.app ? { app: req.app } : {})
      : req.apps !== undefined
        ? { apps: req.apps, images: req.images ?? [] }
        : // only the agent release: the scope's current apps and images stay
          (await this.deps.services()).deploy.currentInput(scope);
    if (req.agent) input = { ...input, agent: req.agent };
    return { scope, input };
  }

  async validateDeployment(_actor: Actor, req: DeployRequestBody): Promise<DeployValidation> {
    const { scope, input } = await this.deployInput(req);
    const target = (await this.deps.services()).deploy.validate(input, scope);
    return {
      ok: true,
      scope,
      images: target.images,
      apps: Object.keys((target.apps ?? {}) as Record<string, unknown>),
      bytes: Buffer.byteLength(JSON.stringify(target)),
    };
  }

  /**
   * A device: its own target (an override), published directly. A group: a one-phase rollout
   * (docs/rollouts.md) that publishes the group's target now; the deployment names it (`rolloutId`).
   */
  async deploy(actor: Actor, req: DeployRequestBody): Promise<Deployment> {
    const { scope, input } = await this.deployInput(req);
    return this.publishDeploy(actor, scope, input, req.allowUnknown === true);
  }

  private async publishDeploy(
    actor: Actor,
    scope: ScopeKey,
    input: DeployInput,
    allowUnknown: boolean,
  ): Promise<Deployment> {
    const svc = await this.deps.services();
    const createdBy = actorLabel(actor);
    if (scope.kind === 'group') {
      const made = await svc.rollouts.deployGroup(input, scope.id, { createdBy });
      return { ...toDeployment(made.deployment), rolloutId: made.rollout.id };
    }
    return toDeployment(await svc.deploy.deploy(input, scope, { allowUnknown, createdBy }));
  }

  /**
   * Publish the release of an earlier deployment again, as its scope's next version, through exactly the
   * path a deploy of that content takes (a group: a one-phase rollout). What may be redeployed and what it
   * becomes: src/fleet/services/redeploy.ts. `expect` guards against acting on another scope's id.
   */
  async redeploy(actor: Actor, id: number, req: RedeployRequestBody = {}): Promise<Deployment> {
    const svc = await this.deps.services();
    // the API's schema bounds it too; the local CLI comes here without it
    if (req.reason !== undefined && req.reason.length > MAX_REDEPLOY_REASON)
      throw invalidInput(`reason: at most ${MAX_REDEPLOY_REASON} characters (got ${req.reason.length})`);
    const { source, input } = svc.deploy.redeployInput(id, scopeOf(req, 'body'));
    // the device was known when its release was first deployed: a device never seen then stays allowed
    const dep = await this.publishDeploy(actor, source.scope, input, true);
    this.deps.stores.deployments.noteRedeploy(dep.id, source.id);
    return { ...dep, redeployOf: source.id };
  }

  async clearOverride(actor: Actor, deviceId: string): Promise<Deployment> {
    const svc = await this.deps.services();
    return toDeployment(await svc.deploy.clear(deviceId, { createdBy: actorLabel(actor) }));
  }

  async progress(_actor: Actor, deploymentId: number): Promise<DeploymentProgress> {
    const d = this.deps.stores.deployments.get(deploymentId);
    if (!d) throw notFound(`no deployment ${deploymentId}`);
    const p = (await this.deps.services()).deploy.progress({ ...d.scope, version: d.version });
    return {
      deployment: toDeployment(d),
      total: p.total,
      converged: p.converged,
      pending: p.pending,
      failed: p.failed,
      done: p.done,
      ok: p.ok,
      devices: p.devices.map((x) => ({
        deviceId: x.deviceId,
        state: x.state,
        online: x.online,
        reported: x.reported,
        ...(x.detail !== undefined ? { detail: x.detail } : {}),
      })),
    };
  }

  // rollouts ---------------------------------------------------------------------------------------
  private rolloutInput(
    actor: Actor,
    b: Omit<RolloutCreateBody, 'draft'> & { draft?: boolean | undefined },
  ): RolloutInput {
    const target = b.file
      ? readDeployText(b.file.text, b.file.name, b.app ? { app: b.app } : {})
      : { apps: b.apps, images: b.images ?? [] };
    return {
      name: b.name,
      target,
      selection: { group: b.group, selector: b.selector, devices: b.devices, all: b.all },
      phases: b.phases,
      canaries: b.canaries,
      policy: {
        successThreshold: b.successThreshold,
        errorThreshold: b.errorThreshold,
        maxPending: b.maxPending,
        soakMs: b.soakMs,
        ...(b.phaseTimeoutMs !== undefined ? { phaseTimeoutMs: b.phaseTimeoutMs } : {}),
        approval: b.approval,
        rollback: b.rollback,
      },
      draft: b.draft,
      createdBy: actorLabel(actor),
    };
  }

  /** Every pre-check of a rollout, nothing stored or published: what it would do. */
  async validateRollout(actor: Actor, b: Omit<RolloutCreateBody, 'draft'>): Promise<RolloutPreview> {
    const plan = (await this.deps.services()).rollouts.plan(this.rolloutInput(actor, b));
    return {
      ok: true,
      selection: describeSelectionText(plan.selection),
      devices: plan.deviceIds.length,
      phases: plan.specs.map((s, i) => ({
        index: i + 1,
        spec: 'count' in s ? String(s.count) : `${s.percent}%`,
        size: plan.sizes[i]!,
      })),
      excluded: plan.excluded.slice(0, 100),
      excludedTotal: plan.excluded.length,
      images: plan.target.images,
      apps: Object.keys((plan.target.apps ?? {}) as Record<string, unknown>),
      bytes: plan.bytes,
      policy: plan.policy,
    };
  }

  async createRollout(actor: Actor, b: RolloutCreateBody): Promise<RolloutWire> {
    const svc = (await this.deps.services()).rollouts;
    const row = await svc.create(this.rolloutInput(actor, b));
    return toRolloutWire(svc.view(row.id));
  }

  async rollouts(_actor: Actor, q: RolloutQueryInput): Promise<Page<RolloutWire>> {
    const page = (await this.deps.services()).rollouts.list({
      state: q.state,
      active: q.active,
      limit: q.limit,
      cursor: q.cursor,
    });
    return { items: page.items.map(toRolloutWire), total: page.total ?? null, next: page.nextCursor ?? null };
  }

  async rollout(_actor: Actor, id: number): Promise<RolloutWire> {
    return toRolloutWire((await this.deps.services()).rollouts.view(id));
  }

  async rolloutDevices(
    _actor: Actor,
    id: number,
    q: RolloutDeviceQueryInput,
  ): Promise<Page<RolloutDeviceWire>> {
    const page = (await this.deps.services()).rollouts.devices(id, {
      phase: q.phase,
      outcome: q.outcome,
      limit: q.limit,
      cursor: q.cursor,
    });
    return {
      items: page.items.map(toRolloutDeviceWire),
      total: page.total ?? null,
      next: page.nextCursor ?? null,
    };
  }

  /** start, pause, resume, approve, abort: a wrong state is a Conflict naming it, nothing published. */
  async rolloutAction(
    actor: Actor,
    id: number,
    action: 'start' | 'pause' | 'resume' | 'approve' | 'abort',
    body: RolloutAbortBody = {},
  ): Promise<RolloutWire> {
    const svc = (await this.deps.services()).rollouts;
    const by = actorLabel(actor);
    if (action === 'start') await svc.start(id, by);
    else if (action === 'pause') await svc.pause(id, by, body.reason);
    else if (action === 'resume') await svc.resume(id, by);
    else if (action === 'approve') await svc.approve(id, by);
    else await svc.abort(id, by, { reason: body.reason, rollback: body.rollback });
    return toRolloutWire(svc.view(id));
  }

  // enrollment -------------------------------------------------------------------------------------
  async enrollmentTokens(_actor: Actor): Promise<EnrollmentToken[]> {
    return (await this.deps.services()).enrollment.list().map(toEnrollmentToken);
  }

  async createEnrollmentToken(
    actor: Actor,
    req: EnrollmentCreateBody,
  ): Promise<{ token: string; info: EnrollmentToken }> {
    const made = (await this.deps.services()).enrollment.create({ ...req, createdBy: actorLabel(actor) });
    return { token: made.token, info: toEnrollmentToken(made.row) };
  }

  async revokeEnrollmentToken(_actor: Actor, id: string): Promise<void> {
    (await this.deps.services()).enrollment.revoke(id);
  }

  /** A device's enrollment exchange (no actor: the enrollment token is the credential). */
  async enroll(body: EnrollRequest, remoteAddress: string): Promise<EnrollResponse> {
    return (await this.deps.services()).enrollment.exchange(body, { remoteAddress });
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
