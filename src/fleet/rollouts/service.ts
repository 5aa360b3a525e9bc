/**
 * Rollouts as operators ask for them: check everything before anything is stored (`plan`), create, start,
 * pause, resume, approve, abort, read. Every operator action is a transition of the stored rollout, checked
 * by the pure `operatorTransition` and written in one transaction; publishing is the driver's work
 * (./driver.ts, inside `fleet serve`): in the server the service pokes it, from the local CLI the server
 * notices the action within a second (`ops` is polled).
 *
 * What a group rollout selects: the devices of the group for which the group's target is the one that
 * applies — as `fleet deploy --group` does. A device with an override the operator made (`deploy --device`)
 * or one that follows an earlier group of its own with a target is left out (listed as excluded, with why).
 * Overrides made by rollouts are not the operator's: a newer rollout takes those devices.
 */
import { BerthError, conflict, invalidInput, notFound, unavailable } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import type { FleetBus, RolloutChange } from '../bus.js';
import type { DeployInput, DeployService } from '../services/deploy.js';
import type { DeploymentRow, DeviceRow, FleetStores, Page } from '../store/index.js';
import type {
  PhaseRecord,
  RolloutDeviceQuery,
  RolloutDeviceRow,
  RolloutPatch,
  RolloutQuery,
  RolloutRow,
  RolloutTarget,
  Selection,
} from '../store/rollouts.js';
import { effectiveTarget, formatTargetRef, type ScopeKey, type ScopeVersion } from '../view.js';
import {
  ACTIVE_STATES,
  DEFAULT_POLICY,
  type OperatorAction,
  operatorTransition,
  type PhaseCounts,
  type RolloutPolicy,
} from './machine.js';
import {
  type Assignment,
  assignPhases,
  formatPhase,
  type PhaseSpec,
  parsePhases,
  phaseSizes,
} from './phases.js';
import { formatSelector, parseSelector } from './selector.js';

export const MAX_SELECTED_IDS = 10_000;
const DAY = 24 * 3600_000;

export interface RolloutSelectionInput {
  group?: string | undefined;
  selector?: string | undefined;
  devices?: string[] | undefined;
  all?: boolean | undefined;
}

export interface RolloutInput {
  name?: string | undefined;
  target: DeployInput;
  selection: RolloutSelectionInput;
  phases?: ReadonlyArray<number | string> | undefined;
  canaries?: string[] | undefined;
  policy?: Partial<RolloutPolicy> | undefined;
  draft?: boolean | undefined;
  createdBy?: string | undefined;
}

/** What `plan` found: everything `create` stores, and what a dry run shows. */
export interface RolloutPlan {
  name: string | null;
  selection: Selection;
  group: string | null;
  deviceIds: string[];
  excluded: Array<{ deviceId: string; reason: string }>;
  specs: PhaseSpec[];
  sizes: number[];
  canaries: string[];
  target: RolloutTarget;
  policy: RolloutPolicy;
  /** the signed size of the biggest target the rollout will publish */
  bytes: number;
}

/** A rollout with its counts: what the API and the CLI show. */
export interface RolloutView {
  row: RolloutRow;
  counts: PhaseCounts[];
  rollback: { moved: number; returned: number; pending: number };
  /** the group target the last phase set (group rollouts) */
  groupTarget: { kind: 'group'; id: string; version: number } | null;
}

export interface RolloutDriverHook {
  /** act on this rollout now (the server's driver; nothing where it does not run); resolves when it has */
  kick(id: number): Promise<void>;
  /** start a one-phase draft and send it in this process (`deliverNow` in ./driver.ts) */
  deliverNow(r: RolloutRow, start: () => void): Promise<boolean>;
}

/**
 * A plain `fleet deploy --group`: one phase of every device the group's target applies to, waiting for
 * them all (success 100 %), never aborting on a failure before every device answered (errors 100 %), and
 * no fleet-wide rollback — each device already rolls back on its own when its health check fails.
 */
export const DEPLOY_POLICY: RolloutPolicy = {
  ...DEFAULT_POLICY,
  successThreshold: 100,
  errorThreshold: 100,
  rollback: false,
};

/** What a group deploy made: the rollout and the group target its one phase published. */
export interface GroupDeploy {
  rollout: RolloutRow;
  deployment: DeploymentRow;
}

export interface RolloutServiceOptions {
  stores: FleetStores;
  deploy: DeployService;
  bus?: FleetBus | undefined;
  log: Logger;
  now?: () => number;
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9 _.:@/+-]{0,63}$/;

export class RolloutService {
  private readonly now: () => number;
  /** set in `fleet serve`: the driver that publishes */
  driver: RolloutDriverHook | undefined;

  constructor(private readonly o: RolloutServiceOptions) {
    this.now = o.now ?? Date.now;
  }

  // ---- pre-checks --------------------------------------------------------------------------------

  /**
   * Every check a rollout must pass before it is stored; throws InvalidInput/NotFound naming the problem.
   * `allowEmpty`: a group with no device yet is fine (a deploy: the group target waits for its devices).
   */
  plan(input: RolloutInput, o: { allowEmpty?: boolean } = {}): RolloutPlan {
    const name = input.name ?? null;
    if (name !== null && !NAME.test(name))
      throw invalidInput(`name ${JSON.stringify(name)}: use 1-64 of [A-Za-z0-9 _.:@/+-]`);
    const policy = checkPolicy(input.policy ?? {});
    const specs = parsePhases(input.phases ?? ['100%']);
    const sel = this.resolveSelection(input.selection);
    if (sel.deviceIds.length === 0 && !(o.allowEmpty && sel.group !== null)) {
      const why = sel.excluded.length
        ? `; ${sel.excluded.length} left out: ${sel.excluded
            .slice(0, 5)
            .map((e) => `${e.deviceId} (${e.reason})`)
            .join(', ')}${sel.excluded.length > 5 ? ', …' : ''}`
        : '';
      throw invalidInput(
        `the selection (${describeSelection(sel.selection)}) has no device to roll out to${why}`,
      );
    }
    // the release: the agent's schema, the images in the fleet (digests pinned now), the signed size —
    // checked for the longest device id a target can name, and for the group when the last phase is its target
    const scopes: Array<{ kind: 'device' | 'group'; id: string }> = [{ kind: 'device', id: 'x'.repeat(128) }];
    if (sel.group) scopes.push({ kind: 'group', id: sel.group });
    let target: RolloutTarget | undefined;
    let bytes = 0;
    for (const scope of scopes) {
      const t = this.o.deploy.validate(input.target, scope);
      target ??= { apps: t.apps, images: t.images, ...(t.agent ? { agent: t.agent } : {}) };
      bytes = Math.max(bytes, Buffer.byteLength(JSON.stringify(t)));
    }
    this.checkPlatforms(target!, sel.deviceIds);
    const canaries = input.canaries ?? [];
    if (canaries.length > 1000) throw invalidInput('canaries: at most 1000');
    // canaries must be selected (assignPhases says which is not); the seed does not matter for this check
    assignPhases('check', sel.deviceIds, specs, canaries);
    return {
      name,
      selection: sel.selection,
      group: sel.group,
      deviceIds: sel.deviceIds,
      excluded: sel.excluded,
      specs,
      sizes: phaseSizes(specs, sel.deviceIds.length),
      canaries,
      target: target!,
      policy,
      bytes,
    };
  }

  private resolveSelection(s: RolloutSelectionInput): {
    selection: Selection;
    group: string | null;
    deviceIds: string[];
    excluded: Array<{ deviceId: string; reason: string }>;
  } {
    const { stores } = this.o;
    const given = [
      s.group !== undefined,
      s.selector !== undefined,
      s.devices !== undefined,
      s.all === true,
    ].filter(Boolean).length;
    if (given !== 1)
      throw invalidInput(
        'selection: give exactly one of a group, a label selector, device ids, or all devices',
      );
    if (s.group !== undefined) {
      checkName('group', s.group);
      return { selection: { kind: 'group', group: s.group }, group: s.group, ...this.groupDevices(s.group) };
    }
    if (s.selector !== undefined) {
      const reqs = parseSelector(s.selector);
      return {
        selection: { kind: 'selector', selector: formatSelector(reqs) },
        group: null,
        deviceIds: stores.rollouts.matchingDevices(reqs),
        excluded: [],
      };
    }
    if (s.devices !== undefined) {
      if (!Array.isArray(s.devices) || s.devices.length === 0)
        throw invalidInput('devices: give at least one id');
      if (s.devices.length > MAX_SELECTED_IDS) throw invalidInput(`devices: at most ${MAX_SELECTED_IDS} ids`);
      const seen = new Set<string>();
      for (const id of s.devices) {
        checkName('device id', id);
        if (seen.has(id)) throw invalidInput(`devices: ${id} is named twice`);
        seen.add(id);
      }
      const rows = new Map(stores.devices.rows(s.devices).map((d) => [d.id, d]));
      const unknown = s.devices.filter((id) => !rows.has(id));
      if (unknown.length)
        throw notFound(`devices not in the fleet: ${list(unknown)} (misspelt? not enrolled yet?)`);
      const revoked = s.devices.filter((id) => rows.get(id)!.revokedAt !== null);
      if (revoked.length)
        throw invalidInput(`devices revoked, they can no longer receive targets: ${list(revoked)}`);
      return {
        selection: { kind: 'devices', devices: [...s.devices] },
        group: null,
        deviceIds: [...s.devices],
        excluded: [],
      };
    }
    return { selection: { kind: 'all' }, group: null, deviceIds: stores.rollouts.allDevices(), excluded: [] };
  }

  /** A group's devices for which the group's target applies (see the file comment), and the others. */
  private groupDevices(group: string): {
    deviceIds: string[];
    excluded: Array<{ deviceId: string; reason: string }>;
  } {
    const { stores } = this.o;
    const targetOf = scopeCache(stores);
    const deviceIds: string[] = [];
    const excluded: Array<{ deviceId: string; reason: string }> = [];
    for (const d of stores.devices.rows(stores.devices.inGroup(group))) {
      const why = shadowedBy(stores, d, group, targetOf);
      if (why) excluded.push({ deviceId: d.id, reason: why });
      else deviceIds.push(d.id);
    }
    return { deviceIds, excluded };
  }

  /** Each image must have a manifest for each selected device's platform (a device that never said is let be). */
  private checkPlatforms(target: RolloutTarget, deviceIds: readonly string[]): void {
    const { stores } = this.o;
    const byPlatform = new Map<string, string[]>();
    for (const d of stores.devices.rows(deviceIds)) {
      if (!d.platform) continue;
      const list = byPlatform.get(d.platform) ?? [];
      list.push(d.id);
      byPlatform.set(d.platform, list);
    }
    const problems: string[] = [];
    for (const img of target.images) {
      const row = stores.images.get(img.name);
      if (!row) throw notFound(`image ${img.name} is not in the fleet: push it first`);
      const has = row.platforms ? row.platforms.split(',') : [];
      if (has.length === 0) continue; // a manifest that names no platform: the agent decides
      for (const [platform, ids] of byPlatform)
        if (!has.some((p) => platformServes(p, platform)))
          problems.push(
            `image ${img.name} has no manifest for ${platform} (it has ${has.join(', ')}): ${ids.length} device${ids.length === 1 ? '' : 's'} ${list(ids)}`,
          );
    }
    if (problems.length) throw invalidInput(`${problems.join('; ')} (nothing was published)`);
  }

  // ---- lifecycle ---------------------------------------------------------------------------------

  /** Plan, store (devices placed in phases), and start unless a draft. */
  async create(input: RolloutInput): Promise<RolloutRow> {
    const row = this.store(this.plan(input), input.createdBy);
    return input.draft ? row : this.start(row.id, input.createdBy);
  }

  /**
   * `fleet deploy --group`: a one-phase rollout (DEPLOY_POLICY) whose phase is the group's target,
   * published now by this process, whichever it is (the server for the API and the console, the local CLI
   * on the state dir) — so a deploy never waits for a driver, and exactly one process sends it. The
   * running server's driver (here, or polling the database) then follows the devices and ends the rollout.
   * The agent release the group's target names stays named unless `input` names another (as a deploy does).
   */
  async deployGroup(
    input: DeployInput,
    group: string,
    o: { createdBy?: string | undefined } = {},
  ): Promise<GroupDeploy> {
    const { stores, deploy } = this.o;
    const agent = input.agent ?? deploy.currentInput({ kind: 'group', id: group }).agent;
    const plan = this.plan(
      {
        name: 'deploy',
        target: { ...input, ...(agent ? { agent } : {}) },
        selection: { group },
        phases: ['100%'],
        policy: DEPLOY_POLICY,
        createdBy: o.createdBy,
      },
      { allowEmpty: true },
    );
    // the broker link first: a fleet that cannot publish stores no rollout
    await deploy.ready();
    const draft = this.store(plan, o.createdBy);
    const driver = this.driver;
    if (!driver) throw unavailable('no rollout driver in this process');
    let started: { row: RolloutRow; superseded: RolloutRow[] } | undefined;
    let sent: boolean;
    try {
      sent = await driver.deliverNow(draft, () => {
        started = this.startInTransaction(draft.id);
      });
    } catch (err) {
      if (!started) this.discard(draft.id, err);
      throw err;
    }
    if (!started) throw conflict(`rollout ${draft.id} could not start`);
    this.announceStart(started, o.createdBy);
    const r = stores.rollouts.require(draft.id);
    const dep = r.groupDeploymentId !== null ? stores.deployments.get(r.groupDeploymentId) : undefined;
    if (!dep) throw conflict(`rollout ${r.id} published no group target`);
    if (!sent)
      throw new BerthError(
        'Unavailable',
        `publishing group ${group} version ${dep.version} did not complete; it is recorded (rollout ${r.id}) and the fleet server publishes it at its next connect if the broker lacks it`,
      );
    await driver.kick(r.id);
    return { rollout: stores.rollouts.require(r.id), deployment: dep };
  }

  /** A draft that never started (its publish failed before anything was reserved): aborted, saying why. */
  private discard(id: number, err: unknown): void {
    const now = this.now();
    const r = this.o.stores.rollouts.update(
      id,
      {
        state: 'aborted',
        reason: `nothing was published: ${err instanceof Error ? err.message : String(err)}`,
        finishedAt: now,
      },
      now,
    );
    this.tell(r, 'aborted');
  }

  /** Store a planned rollout as a draft, its devices placed in phases. */
  private store(plan: RolloutPlan, createdBy: string | undefined): RolloutRow {
    const now = this.now();
    const { stores } = this.o;
    const row = stores.rollouts.create(
      {
        name: plan.name,
        state: 'draft',
        selection: plan.selection,
        target: plan.target,
        phases: plan.specs.map(
          (s, i): PhaseRecord => ({
            spec: formatPhase(s),
            size: plan.sizes[i]!,
            startedAt: null,
            passedAt: null,
          }),
        ),
        policy: plan.policy,
        group: plan.group,
        excluded: plan.excluded.length,
        createdBy: createdBy ?? null,
      },
      (id): Assignment[] => assignPhases(String(id), plan.deviceIds, plan.specs, plan.canaries).assignments,
      now,
    );
    this.o.log.info(
      { rollout: row.id, devices: plan.deviceIds.length, phases: plan.sizes, by: createdBy },
      'rollout created',
    );
    this.tell(row, 'created');
    return row;
  }

  /** A draft starts: phase 1 begins; active rollouts holding any of its devices are superseded. */
  async start(id: number, by?: string): Promise<RolloutRow> {
    this.announceStart(
      this.o.stores.rollouts.transaction(() => this.startInTransaction(id)),
      by,
    );
    await this.driver?.kick(id);
    return this.o.stores.rollouts.require(id);
  }

  /**
   * The start of a draft (inside the caller's transaction): phase 1 begins; active rollouts holding any of
   * its devices — or, for a group rollout, setting the same group's target — are superseded.
   */
  private startInTransaction(id: number): { row: RolloutRow; superseded: RolloutRow[] } {
    const { stores } = this.o;
    const superseded: RolloutRow[] = [];
    const row = stores.rollouts.transaction(() => {
      const r = stores.rollouts.require(id);
      operatorTransition(id, r.state, 'start', r.reason);
      this.checkImagesUnchanged(r);
      const now = this.now();
      const ids = stores.rollouts.devices(id).map((d) => d.deviceId);
      const others = new Set(stores.rollouts.activeHolding(ids, id));
      if (r.group !== null) for (const o of stores.rollouts.activeForGroup(r.group, id)) others.add(o);
      for (const other of [...others].sort((a, b) => a - b))
        superseded.push(
          stores.rollouts.update(
            other,
            { state: 'superseded', reason: `superseded by rollout ${id}`, supersededBy: id, finishedAt: now },
            now,
            { operator: true },
          ),
        );
      const phases = r.phases.map((p, i) => (i === 0 ? { ...p, startedAt: now } : p));
      return stores.rollouts.update(
        id,
        { state: 'running', phase: 1, phaseStartedAt: now, soakSince: null, startedAt: now, phases },
        now,
        { operator: true },
      );
    });
    return { row, superseded };
  }

  private announceStart(s: { row: RolloutRow; superseded: RolloutRow[] }, by: string | undefined): void {
    for (const o of s.superseded) {
      this.o.log.info({ rollout: o.id, by: s.row.id }, 'rollout superseded');
      this.tell(o, 'superseded');
    }
    this.o.log.info({ rollout: s.row.id, by }, 'rollout started');
    this.tell(s.row, 'started');
  }

  async pause(id: number, by?: string, reason?: string): Promise<RolloutRow> {
    return this.act(id, 'pause', by, (r) => ({
      reason: `paused by ${by ?? 'an operator'}${reason ? `: ${reason}` : ''}`,
      // the timeout counts again from the resume
      soakSince: null,
      phases: r.phases,
    }));
  }

  async resume(id: number, by?: string): Promise<RolloutRow> {
    return this.act(id, 'resume', by, () => ({ reason: null, soakSince: null, phaseStartedAt: this.now() }));
  }

  async approve(id: number, by?: string): Promise<RolloutRow> {
    return this.act(id, 'approve', by, (r) => {
      const now = this.now();
      const next = r.phase + 1;
      return {
        phase: next,
        phaseStartedAt: now,
        soakSince: null,
        reason: null,
        phases: r.phases.map((p, i) => (i === next - 1 ? { ...p, startedAt: now } : p)),
      };
    });
  }

  /** Abort: by hand, with or without giving the moved devices their previous target back. */
  async abort(
    id: number,
    by?: string,
    o: { reason?: string | undefined; rollback?: boolean | undefined } = {},
  ): Promise<RolloutRow> {
    return this.act(id, 'abort', by, (r) => {
      const rollback = o.rollback ?? r.policy.rollback;
      const moved =
        this.o.stores.rollouts.devices(id).some((d) => d.publish !== 'none') || r.groupDeploymentId !== null;
      return {
        reason: `aborted by ${by ?? 'an operator'}${o.reason ? `: ${o.reason}` : ''}`,
        finishedAt: this.now(),
        rollback: rollback && moved ? 'pending' : 'none',
      };
    });
  }

  private async act(
    id: number,
    action: OperatorAction,
    by: string | undefined,
    patch: (r: RolloutRow) => RolloutPatch,
  ): Promise<RolloutRow> {
    const { stores } = this.o;
    const row = stores.rollouts.transaction(() => {
      const r = stores.rollouts.require(id);
      const state = operatorTransition(id, r.state, action, r.reason);
      return stores.rollouts.update(id, { ...patch(r), state }, this.now(), { operator: true });
    });
    const change: Record<OperatorAction, RolloutChange> = {
      start: 'started',
      pause: 'paused',
      resume: 'resumed',
      approve: 'phase',
      abort: 'aborted',
    };
    this.o.log.info({ rollout: id, action, by }, `rollout ${action}`);
    this.tell(row, change[action]);
    await this.driver?.kick(id);
    return stores.rollouts.require(id);
  }

  /** The images were pinned at creation; a draft started later must still find them as they were. */
  private checkImagesUnchanged(r: RolloutRow): void {
    for (const img of r.target.images) {
      const now = this.o.stores.images.get(img.name);
      if (!now)
        throw conflict(`image ${img.name} was removed from the fleet since rollout ${r.id} was created`);
      if (now.digest !== img.digest)
        throw conflict(
          `image ${img.name} was pushed again since rollout ${r.id} was created (${img.digest.slice(0, 19)} → ${now.digest.slice(0, 19)}); create a new rollout`,
        );
    }
  }

  tell(r: RolloutRow, change: RolloutChange): void {
    this.o.bus?.emit({
      type: 'rollout',
      at: this.now(),
      rolloutId: r.id,
      state: r.state,
      phase: r.phase,
      reason: r.reason,
      change,
    });
  }

  // ---- reads -------------------------------------------------------------------------------------

  view(id: number): RolloutView {
    const { stores } = this.o;
    const row = stores.rollouts.require(id);
    return this.viewOf(row);
  }

  viewOf(row: RolloutRow): RolloutView {
    const { stores } = this.o;
    const rb = stores.rollouts.rollbackCounts(row.id);
    const dep = row.groupDeploymentId !== null ? stores.deployments.get(row.groupDeploymentId) : undefined;
    return {
      row,
      counts: stores.rollouts.counts(row.id, row.phases.length),
      rollback: {
        moved: rb.pending + rb.published + rb.returned + rb.kept,
        returned: rb.returned,
        pending: rb.pending + rb.published,
      },
      groupTarget:
        dep && dep.state === 'published' && dep.scope.kind === 'group'
          ? { kind: 'group', id: dep.scope.id, version: dep.version }
          : null,
    };
  }

  list(q: RolloutQuery): Page<RolloutView> {
    const page = this.o.stores.rollouts.list(q);
    return { ...page, items: page.items.map((r) => this.viewOf(r)) };
  }

  devices(id: number, q: RolloutDeviceQuery): Page<RolloutDeviceRow> {
    this.o.stores.rollouts.require(id);
    return this.o.stores.rollouts.devicePage(id, q);
  }

  isActive(r: RolloutRow): boolean {
    return ACTIVE_STATES.includes(r.state);
  }
}

/** The target that applies to each scope, read once per scope. */
export function scopeCache(stores: FleetStores): (s: ScopeKey) => ScopeVersion | undefined {
  const cache = new Map<string, ScopeVersion | undefined>();
  return (s) => {
    const k = `${s.kind}/${s.id}`;
    if (!cache.has(k)) cache.set(k, stores.deployments.current(s));
    return cache.get(k);
  };
}

/**
 * Why the target of `group` would not apply to device `d` (undefined: it would): an override the operator
 * made, or an earlier group of the device's with a target. Overrides made by rollouts do not count.
 */
export function shadowedBy(
  stores: FleetStores,
  d: Pick<DeviceRow, 'id' | 'groups'>,
  group: string,
  targetOf: (s: ScopeKey) => ScopeVersion | undefined,
): string | undefined {
  const own = targetOf({ kind: 'device', id: d.id });
  if (own && !own.cleared) {
    const cur = stores.deployments.current({ kind: 'device', id: d.id });
    if (!cur || !stores.rollouts.madeByRollout(cur.deploymentId))
      return `its own target ${formatTargetRef(own)} applies (clear it with fleet deploy --device ${d.id} --clear)`;
  }
  for (const g of d.groups) {
    if (g === group) return undefined;
    const t = targetOf({ kind: 'group', id: g });
    if (t && !t.cleared)
      return `group ${g}'s target applies (it comes before ${group} in the device's groups)`;
  }
  return undefined;
}

/** The target that applies to a device without its own target (what it falls back to when that is cleared). */
export function fallbackTarget(
  d: Pick<DeviceRow, 'id' | 'groups'>,
  targetOf: (s: ScopeKey) => ScopeVersion | undefined,
): ScopeVersion | undefined {
  return effectiveTarget(d.id, d.groups, (s) => (s.kind === 'device' ? undefined : targetOf(s)));
}

/** An image platform entry serves a device platform: same os/arch, and the variant when the image names one. */
export function platformServes(image: string, device: string): boolean {
  const [io, ia, iv] = image.split('/');
  const [dos, da, dv] = device.split('/');
  if (io !== dos || ia !== da) return false;
  return iv === undefined || dv === undefined || iv === dv;
}

function checkPolicy(p: Partial<RolloutPolicy>): RolloutPolicy {
  const out: RolloutPolicy = { ...DEFAULT_POLICY, ...stripUndefined(p) };
  for (const k of ['successThreshold', 'errorThreshold', 'maxPending'] as const) {
    const v = out[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 100)
      throw invalidInput(`${k}: ${String(v)} is not a percentage from 0 to 100`);
  }
  if (!Number.isInteger(out.soakMs) || out.soakMs < 0 || out.soakMs > 30 * DAY)
    throw invalidInput(`soak: ${out.soakMs} ms is not a duration from 0 to 30 days`);
  if (
    out.phaseTimeoutMs !== null &&
    (!Number.isInteger(out.phaseTimeoutMs) || out.phaseTimeoutMs < 1000 || out.phaseTimeoutMs > 30 * DAY)
  )
    throw invalidInput(`phase timeout: ${out.phaseTimeoutMs} ms is not a duration from 1 s to 30 days`);
  if (typeof out.approval !== 'boolean' || typeof out.rollback !== 'boolean')
    throw invalidInput('approval and rollback are true or false');
  return out;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function checkName(what: string, s: string): void {
  if (typeof s !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(s))
    throw invalidInput(`${what} ${JSON.stringify(s)}: use 1-128 of [A-Za-z0-9_.-]`);
}

function list(ids: readonly string[], max = 10): string {
  return ids.length <= max ? ids.join(', ') : `${ids.slice(0, max).join(', ')} and ${ids.length - max} more`;
}

export function describeSelection(s: Selection): string {
  switch (s.kind) {
    case 'group':
      return `group ${s.group}`;
    case 'selector':
      return `labels ${s.selector}`;
    case 'devices':
      return `${s.devices?.length ?? 0} device${s.devices?.length === 1 ? '' : 's'}`;
    case 'all':
      return 'all devices';
  }
}
