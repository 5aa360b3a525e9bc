/**
 * The rollout driver: the thin, event-driven side of the rollout state machine (./machine.ts), run by
 * `fleet serve`. It listens to the fleet's bus (a device reported state, came or went, was revoked; a
 * deployment was made), recomputes how each concerned device stands in each rollout that holds it
 * (deviceProgress against the exact target the rollout sent it), stores the outcomes, asks the machine
 * what to do, records the transition and publishes — intent first:
 *
 *   reserve the deployments + mark the devices `pending` (one transaction) → publish → commit + mark
 *   them `published` (one transaction)
 *
 * A kill -9 anywhere leaves either nothing (not reserved: sent later, once), or `pending` rows whose
 * deployments the server's republish at its next connect settles — published if the broker does not hold
 * them, committed either way (src/fleet/services/deploy.ts) — so a device is never sent the target twice
 * for one phase. Devices are never polled: the driver reads the stored reports when a device's report
 * arrives, and all of a rollout's devices only when it starts tracking it (server start, an operator's
 * action, a reconnect). Timers only for soak ends and phase timeouts (`wake`), on the injected clock.
 *
 * Delivery. Earlier phases move devices with their own targets (overrides), one per device. The last phase
 * of a group rollout is the group's target itself — one publish reaches the rest of the group — and, when
 * the rollout succeeds, the overrides of the earlier phases are cleared ("settled"): a clear carries no
 * content, the device falls back to the group target whose content it already runs, so every device that
 * ends on the release got it exactly once. A device that failed keeps its override (the release it refused
 * and rolled back from, which the agent never applies again) so it does not retry it through the group.
 *
 * Abort with rollback: the group target goes back to the group's previous deployment (republished at the
 * next version, or cleared if there was none), each device moved by an override gets its previous target —
 * its previous own target republished, or its override cleared so its group's target applies again — and the
 * rollout counts the devices that report they run it again ("returned").
 */
import { type Clock, systemClock } from '../../agent/ports.js';
import { errorMessage } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import type { TargetAgent } from '../../transport/messages.js';
import type { FleetBus, FleetEvent, RolloutChange, RolloutPhaseProgress } from '../bus.js';
import type { DeployService } from '../services/deploy.js';
import type { DeploymentRow, DeviceRow, FleetStores } from '../store/index.js';
import type {
  OutcomeUpdate,
  RolloutDeviceRow,
  RolloutPatch,
  RolloutRow,
  RolloutTarget,
  ScopeRef,
} from '../store/rollouts.js';
import { deviceProgress, effectiveTarget, type ScopeKey, type ScopeVersion, snapshotOf } from '../view.js';
import { type Decision, planRollout, TERMINAL_STATES } from './machine.js';
import { fallbackTarget, type RolloutService, scopeCache, shadowedBy } from './service.js';

export interface RolloutDriverOptions {
  stores: FleetStores;
  deploy: DeployService;
  service: RolloutService;
  bus: FleetBus;
  log: Logger;
  clock?: Clock | undefined;
  /** how often the store is asked whether another process (the local CLI) acted on a rollout (default 1 s) */
  pollMs?: number | undefined;
  /** devices per publish batch (default 500) */
  batch?: number | undefined;
  /** rollout.progress events at most this often per rollout (default 250 ms) */
  progressMs?: number | undefined;
}

type Step =
  | { kind: 'again' }
  | { kind: 'idle' }
  | { kind: 'untrack' }
  | { kind: 'publish'; r: RolloutRow; phase: number }
  | { kind: 'rollback'; r: RolloutRow }
  | { kind: 'settle'; r: RolloutRow };

const toRef = (v: ScopeVersion | undefined | null): ScopeRef | null =>
  v && !v.cleared ? { kind: v.kind, id: v.id, version: v.version } : null;

export class RolloutDriver {
  private readonly clock: Clock;
  /** device id → ids of the tracked rollouts holding it */
  private readonly index = new Map<string, Set<number>>();
  private readonly tracked = new Set<number>();
  private marks = new Map<number, number>();
  private readonly dirtyDevices = new Set<string>();
  private readonly dirty = new Set<number>();
  private readonly refresh = new Set<number>();
  private readonly wakes = new Map<number, { at: number; h: ReturnType<Clock['setTimeout']> }>();
  private readonly progressTimers = new Map<number, ReturnType<Clock['setTimeout']>>();
  private running: Promise<void> | undefined;
  private again = false;
  private scheduled = false;
  private stopped = true;
  private unsubscribe: (() => void) | undefined;
  private pollTimer: ReturnType<Clock['setTimeout']> | undefined;

  constructor(private readonly o: RolloutDriverOptions) {
    this.clock = o.clock ?? systemClock;
  }

  /** Track every rollout with work left, judge each from the stored reports, and listen. */
  async start(): Promise<void> {
    this.stopped = false;
    this.unsubscribe = this.o.bus.subscribe((e) => this.onEvent(e));
    this.marks = this.o.stores.rollouts.operatorMarks();
    for (const r of this.o.stores.rollouts.inFlight()) this.want(r.id);
    this.poll();
    await this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.pollTimer) this.clock.clearTimeout(this.pollTimer);
    for (const w of this.wakes.values()) this.clock.clearTimeout(w.h);
    for (const t of this.progressTimers.values()) this.clock.clearTimeout(t);
    this.wakes.clear();
    this.progressTimers.clear();
    await this.running?.catch(() => undefined);
  }

  /** Act on a rollout now (an operator's action in this process); resolves once the driver has. */
  async kick(id: number): Promise<void> {
    if (this.stopped) return;
    this.want(id);
    await this.run();
  }

  /** Look at every tracked rollout again (after a reconnect: publishes left in doubt are settled now). */
  async resync(): Promise<void> {
    if (this.stopped) return;
    for (const id of this.tracked) this.want(id);
    for (const r of this.o.stores.rollouts.inFlight()) this.want(r.id);
    await this.run();
  }

  /** Resolves when nothing is left to do (tests). */
  async idle(): Promise<void> {
    while (this.running || this.scheduled) {
      await this.running;
      await Promise.resolve();
    }
  }

  private want(id: number): void {
    this.track(id);
    this.refresh.add(id);
    this.dirty.add(id);
  }

  private track(id: number): void {
    if (this.tracked.has(id)) return;
    this.tracked.add(id);
    for (const m of this.o.stores.rollouts.memberships([id])) {
      const s = this.index.get(m.deviceId) ?? new Set<number>();
      this.index.set(m.deviceId, s);
      s.add(id);
    }
  }

  private untrack(id: number): void {
    if (!this.tracked.delete(id)) return;
    for (const [dev, s] of this.index) {
      s.delete(id);
      if (s.size === 0) this.index.delete(dev);
    }
    const w = this.wakes.get(id);
    if (w) this.clock.clearTimeout(w.h);
    this.wakes.delete(id);
  }

  private onEvent(e: FleetEvent): void {
    if (this.stopped) return;
    switch (e.type) {
      case 'device.state':
      case 'deployment.progress':
      case 'device.online':
      case 'device.offline':
      case 'device.revoked':
        if (this.index.has(e.deviceId)) {
          this.dirtyDevices.add(e.deviceId);
          this.schedule();
        }
        return;
      case 'deployment':
        // an operator's deploy may make another target apply to devices a rollout holds
        if (e.createdBy?.startsWith('rollout ')) return;
        if (e.scope.kind === 'device') {
          if (this.index.has(e.scope.id)) {
            this.dirtyDevices.add(e.scope.id);
            this.schedule();
          }
        } else {
          for (const id of this.tracked) {
            this.refresh.add(id);
            this.dirty.add(id);
          }
          this.schedule();
        }
        return;
      default:
        return;
    }
  }

  /** Run after the current burst of events (the ingest tells a whole batch synchronously). */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      void this.run();
    });
  }

  private run(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    const p = (async () => {
      do {
        this.again = false;
        try {
          await this.loop();
        } catch (err) {
          this.o.log.error(
            { err: errorMessage(err) },
            'rollout driver step failed; retrying at the next event',
          );
        }
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = undefined;
    });
    this.running = p;
    return p;
  }

  private async loop(): Promise<void> {
    while (!this.stopped && (this.dirtyDevices.size || this.refresh.size || this.dirty.size)) {
      if (this.dirtyDevices.size) {
        const ids = [...this.dirtyDevices];
        this.dirtyDevices.clear();
        this.judgeDevices(ids);
      }
      for (const id of [...this.refresh]) {
        this.refresh.delete(id);
        this.judgeRollout(id);
      }
      for (const id of [...this.dirty]) {
        this.dirty.delete(id);
        await this.step(id);
        this.progress(id);
      }
    }
  }

  // ---- outcomes ------------------------------------------------------------------------------------

  /** Devices that reported: their outcome in each tracked rollout holding them. */
  private judgeDevices(ids: readonly string[]): void {
    const byRollout = new Map<number, string[]>();
    for (const dev of ids)
      for (const rid of this.index.get(dev) ?? []) {
        const list = byRollout.get(rid) ?? [];
        list.push(dev);
        byRollout.set(rid, list);
      }
    if (byRollout.size === 0) return;
    const devices = new Map(this.o.stores.devices.rows([...new Set(ids)]).map((d) => [d.id, d]));
    const targetOf = scopeCache(this.o.stores);
    for (const [rid, devs] of byRollout)
      this.judge(rid, this.o.stores.rollouts.devicesByIds(rid, devs), devices, targetOf);
  }

  /** Every device of a rollout (when the driver starts tracking it, or something changed wholesale). */
  private judgeRollout(id: number): void {
    const r = this.o.stores.rollouts.get(id);
    if (!r) return;
    const rows = this.o.stores.rollouts.devices(id);
    this.settleInDoubt(r, rows);
    const sent = this.o.stores.rollouts.devices(id).filter((x) => x.publish === 'published');
    if (sent.length === 0) return;
    const devices = new Map(this.o.stores.devices.rows(sent.map((x) => x.deviceId)).map((d) => [d.id, d]));
    this.judge(id, sent, devices, scopeCache(this.o.stores));
  }

  private judge(
    id: number,
    rows: readonly RolloutDeviceRow[],
    devices: ReadonlyMap<string, DeviceRow>,
    targetOf: (s: ScopeKey) => ScopeVersion | undefined,
  ): void {
    const { stores, bus } = this.o;
    const now = this.clock.now();
    const agent = stores.rollouts.get(id)?.target.agent?.version;
    const updates: OutcomeUpdate[] = [];
    const returned: Array<{ deviceId: string; rb: 'returned' }> = [];
    for (const x of rows) {
      if (x.publish !== 'published' || !x.want) continue; // queued, or being sent
      const d = devices.get(x.deviceId);
      updates.push({ rolloutId: id, deviceId: x.deviceId, ...outcomeOf(x, d, targetOf, agent) });
      if (x.rb === 'published' && d && hasReturned(x, d, targetOf))
        returned.push({ deviceId: x.deviceId, rb: 'returned' });
    }
    const changed = stores.rollouts.setOutcomes(updates, now);
    if (returned.length) stores.rollouts.setRollbackStates(id, returned, now);
    if (changed.length || returned.length) this.dirty.add(id);
    const phaseOf = new Map(rows.map((x) => [x.deviceId, x.phase]));
    for (const c of changed)
      bus.emit({
        type: 'rollout.device',
        at: now,
        rolloutId: id,
        deviceId: c.deviceId,
        phase: phaseOf.get(c.deviceId) ?? 0,
        outcome: c.outcome,
        ...(c.detail ? { detail: c.detail } : {}),
      });
  }

  /**
   * Rows recorded as being sent whose publish this process is not doing (a crash, a failed publish): once
   * their deployments are settled (the republish after a connect commits them) they count as sent.
   */
  private settleInDoubt(r: RolloutRow, rows: readonly RolloutDeviceRow[]): void {
    const { stores } = this.o;
    const inDoubt = rows.filter((x) => x.publish === 'pending');
    if (inDoubt.length === 0) return;
    const state = (id: number | null) => (id === null ? 'published' : stores.deployments.get(id)?.state);
    const group = r.groupDeploymentId;
    const sent: string[] = [];
    const lost: string[] = [];
    for (const x of inDoubt) {
      const states = [state(x.deploymentId), ...(x.viaGroup ? [state(group)] : [])];
      if (states.every((s) => s === 'published')) sent.push(x.deviceId);
      else if (states.some((s) => s === 'failed' || s === undefined)) lost.push(x.deviceId);
    }
    const now = this.clock.now();
    if (sent.length) stores.rollouts.markSent(r.id, sent, now);
    if (lost.length) stores.rollouts.unmarkSending(r.id, lost, now);
    if (sent.length + lost.length < inDoubt.length)
      this.o.log.info(
        { rollout: r.id, devices: inDoubt.length - sent.length - lost.length },
        'rollout publishes in doubt wait for the next republish',
      );
  }

  // ---- the machine ----------------------------------------------------------------------------------

  private async step(id: number): Promise<void> {
    for (let guard = 0; guard < 100 && !this.stopped; guard++) {
      const { next, told } = this.decide(id);
      for (const [r, change] of told) this.o.service.tell(r, change);
      switch (next.kind) {
        case 'again':
          continue;
        case 'idle':
          return;
        case 'untrack':
          this.untrack(id);
          return;
        case 'publish':
          if (!(await this.deliverPhase(next.r, next.phase))) return;
          continue;
        case 'rollback':
          if (!(await this.rollBack(next.r))) return;
          continue;
        case 'settle':
          if (!(await this.settle(next.r))) return;
          continue;
      }
    }
  }

  /** One transaction: read the rollout and its counts, plan, record the first transition. */
  private decide(id: number): { next: Step; told: Array<[RolloutRow, RolloutChange]> } {
    const { stores } = this.o;
    const told: Array<[RolloutRow, RolloutChange]> = [];
    const next = stores.rollouts.transaction((): Step => {
      const r = stores.rollouts.get(id);
      if (!r) return { kind: 'untrack' };
      if (TERMINAL_STATES.includes(r.state)) {
        if (r.rollback === 'pending' || r.rollback === 'sent') return { kind: 'rollback', r };
        if (r.settle === 'pending') return { kind: 'settle', r };
        return { kind: 'untrack' };
      }
      const now = this.clock.now();
      const counts = stores.rollouts.counts(id, r.phases.length);
      const decisions = planRollout(
        {
          id,
          state: r.state,
          phase: r.phase,
          phases: counts,
          phaseStartedAt: r.phaseStartedAt,
          soakSince: r.soakSince,
          policy: r.policy,
          groupTargetDue: r.group !== null && r.groupDeploymentId === null,
        },
        now,
      );
      const wake = decisions.find((d): d is Extract<Decision, { kind: 'wake' }> => d.kind === 'wake');
      this.setWake(id, wake?.at);
      const d = decisions.find((x) => x.kind !== 'wake');
      if (!d) return { kind: 'idle' };
      const k = r.phase;
      const upd = (patch: RolloutPatch, change?: RolloutChange) => {
        const row = stores.rollouts.update(id, patch, now);
        if (change) told.push([row, change]);
        return row;
      };
      const passed = (i: number) =>
        r.phases.map((p, j) => (j === i - 1 && p.passedAt === null ? { ...p, passedAt: now } : p));
      switch (d.kind) {
        case 'publish':
          return { kind: 'publish', r, phase: d.phase };
        case 'soak':
          upd({ soakSince: d.since }, 'soaking');
          return { kind: 'again' };
        case 'soak-reset':
          upd({ soakSince: null });
          return { kind: 'again' };
        case 'advance': {
          const phases = passed(k).map((p, j) => (j === d.phase - 1 ? { ...p, startedAt: now } : p));
          upd({ phase: d.phase, phaseStartedAt: now, soakSince: null, phases }, 'phase');
          this.o.log.info({ rollout: id, phase: d.phase }, 'rollout phase started');
          return { kind: 'again' };
        }
        case 'await-approval':
          upd({ state: 'waiting-approval', soakSince: null, phases: passed(k) }, 'waiting-approval');
          this.o.log.info({ rollout: id, phase: d.phase }, 'rollout waits for approval');
          return { kind: 'again' };
        case 'succeed':
          upd(
            {
              state: 'succeeded',
              finishedAt: now,
              soakSince: null,
              phases: passed(k),
              settle: r.group !== null ? 'pending' : 'none',
            },
            'succeeded',
          );
          this.o.log.info({ rollout: id }, 'rollout succeeded');
          return { kind: 'again' };
        case 'abort': {
          const moved =
            counts.some((c) => c.total - c.queued - c.superseded > 0) || r.groupDeploymentId !== null;
          upd(
            {
              state: 'aborted',
              reason: d.reason,
              finishedAt: now,
              soakSince: null,
              rollback: r.policy.rollback && moved ? 'pending' : 'none',
            },
            'aborted',
          );
          this.o.log.warn({ rollout: id, reason: d.reason }, 'rollout aborted');
          return { kind: 'again' };
        }
      }
    });
    return { next, told };
  }

  private setWake(id: number, at: number | undefined): void {
    const cur = this.wakes.get(id);
    if (cur && cur.at === at) return;
    if (cur) this.clock.clearTimeout(cur.h);
    this.wakes.delete(id);
    if (at === undefined) return;
    const h = this.clock.setTimeout(
      () => {
        this.wakes.delete(id);
        this.dirty.add(id);
        void this.run();
      },
      Math.max(0, at - this.clock.now()),
    );
    this.wakes.set(id, { at, h });
  }

  // ---- publishing -----------------------------------------------------------------------------------

  /**
   * Start a draft rollout of one phase and send it now, in this process — a `fleet deploy --group`, which
   * publishes at once whether or not a fleet server runs on the state dir (docs/rollouts.md). `start` runs
   * inside the transaction that records the publish intent, so no driver (this one or the server's, which
   * polls the database) ever sees the rollout running with devices unsent: only one of them sends it.
   * Resolves false when the publish did not complete (left in doubt: the server's next republish settles it).
   */
  async deliverNow(r: RolloutRow, start: () => void): Promise<boolean> {
    return this.deliverPhase(r, 1, start);
  }

  /**
   * Send the target to a phase's queued devices; false when nothing could be done now. The intent is
   * recorded only while the rollout still runs (an operator's abort or a newer rollout may have come in
   * between) — or, with `start`, as it starts.
   */
  private async deliverPhase(r: RolloutRow, phase: number, start?: () => void): Promise<boolean> {
    const { stores } = this.o;
    const rows = stores.rollouts
      .devices(r.id, { phase, publish: 'none' })
      .filter((x) => x.outcome === 'queued');
    const final = r.group !== null && phase === r.phases.length;
    // the group target goes out with the last phase even when no device is left for it
    const needGroup = final && r.groupDeploymentId === null;
    if (rows.length === 0 && !needGroup) return false;
    const now = this.clock.now();
    const targetOf = scopeCache(stores);
    const devices = new Map(stores.devices.rows(rows.map((x) => x.deviceId)).map((d) => [d.id, d]));
    const skip: Array<{ deviceId: string; detail: string }> = [];
    const go: Array<{ d: DeviceRow; prev: ScopeRef | null }> = [];
    for (const x of rows) {
      const d = devices.get(x.deviceId);
      const why = !d
        ? 'not in the fleet any more'
        : d.revokedAt !== null
          ? 'revoked'
          : r.group !== null
            ? shadowedBy(stores, d, r.group, targetOf)
            : undefined;
      if (why || !d) skip.push({ deviceId: x.deviceId, detail: why ?? 'not in the fleet any more' });
      else go.push({ d, prev: toRef(effectiveTarget(d.id, d.groups, targetOf)) });
    }
    if (skip.length) stores.rollouts.skip(r.id, skip, now);
    if (go.length === 0 && !needGroup) return skip.length > 0;
    const createdBy = `rollout ${r.id}`;
    // inside each reservation: start the draft, or make sure it still runs (else nothing is reserved)
    const stillOurs = () => {
      if (start) start();
      else if (stores.rollouts.get(r.id)?.state !== 'running') throw new NoLongerRunning();
    };
    try {
      return await this.publishPhase(r, go, { final, needGroup, createdBy, stillOurs });
    } catch (err) {
      if (err instanceof NoLongerRunning) return true; // plan again from its new state
      throw err;
    }
  }

  /** The publishes of one phase: an override per device, or the group target (the last of a group rollout). */
  private async publishPhase(
    r: RolloutRow,
    go: ReadonlyArray<{ d: DeviceRow; prev: ScopeRef | null }>,
    how: { final: boolean; needGroup: boolean; createdBy: string; stillOurs: () => void },
  ): Promise<boolean> {
    const { stores, deploy } = this.o;
    const { final, needGroup, createdBy, stillOurs } = how;
    if (!final) {
      const batch = this.o.batch ?? 500;
      for (let i = 0; i < go.length; i += batch) {
        const chunk = go.slice(i, i + batch);
        const res = await deploy.publishMany(
          chunk.map((g) => ({ scope: { kind: 'device' as const, id: g.d.id }, content: r.target })),
          {
            createdBy,
            reserved: (deps) => {
              stillOurs();
              stores.rollouts.markSending(
                r.id,
                chunk.map((g, j) => ({
                  deviceId: g.d.id,
                  deploymentId: deps[j]!.id,
                  viaGroup: false,
                  want: { kind: 'device', id: g.d.id, version: deps[j]!.version },
                  prev: g.prev,
                  online: g.d.online,
                })),
                this.clock.now(),
              );
            },
            committed: (deps) =>
              stores.rollouts.markSent(
                r.id,
                deps.map((dep) => dep.scope.id),
                this.clock.now(),
              ),
          },
        );
        if (res.inDoubt.length) return false;
        // an operator may have paused or aborted it meanwhile: the rest waits
        if (stores.rollouts.get(r.id)?.state !== 'running') return true;
      }
      return true;
    }
    // the last phase of a group rollout: the group's target, then clears of rollout-made overrides that
    // would shadow it (an older rollout's); the devices count as sent once both reached the broker
    const group = r.group!;
    const previous = stores.deployments.current({ kind: 'group', id: group });
    const clears = go.filter((g) => g.prev?.kind === 'device');
    const items = [
      ...(needGroup ? [{ scope: { kind: 'group' as const, id: group }, content: r.target }] : []),
      ...clears.map((g) => ({ scope: { kind: 'device' as const, id: g.d.id }, clear: true })),
    ];
    let groupDep: Pick<DeploymentRow, 'id' | 'version'> | undefined = needGroup
      ? undefined
      : stores.deployments.get(r.groupDeploymentId!);
    let clearOf = new Map<string, number>();
    const res = await deploy.publishMany(items, {
      createdBy,
      leading: needGroup ? 1 : 0,
      reserved: (deps) => {
        stillOurs();
        if (needGroup) {
          groupDep = deps[0]!;
          stores.rollouts.update(
            r.id,
            { groupDeploymentId: groupDep.id, groupPreviousId: previous?.deploymentId ?? null },
            this.clock.now(),
          );
        }
        clearOf = new Map(deps.slice(needGroup ? 1 : 0).map((dep) => [dep.scope.id, dep.id]));
        stores.rollouts.markSending(
          r.id,
          go.map((g) => ({
            deviceId: g.d.id,
            deploymentId: clearOf.get(g.d.id) ?? null,
            viaGroup: true,
            want: { kind: 'group', id: group, version: groupDep!.version },
            prev: g.prev,
            online: g.d.online,
          })),
          this.clock.now(),
        );
      },
      committed: (deps) => {
        const ok = new Set(deps.map((dep) => dep.id));
        if (needGroup && !ok.has(groupDep!.id)) return;
        const sent = go
          .filter((g) => !clearOf.has(g.d.id) || ok.has(clearOf.get(g.d.id)!))
          .map((g) => g.d.id);
        stores.rollouts.markSent(r.id, sent, this.clock.now());
      },
    });
    if (needGroup && groupDep)
      this.o.log.info(
        { rollout: r.id, group, version: groupDep.version, clears: clears.length },
        'rollout last phase: group target published',
      );
    return res.inDoubt.length === 0;
  }

  /** Give moved devices their previous target back (see the file comment); false when it must wait. */
  private async rollBack(r: RolloutRow): Promise<boolean> {
    const { stores, deploy, log } = this.o;
    const now = () => this.clock.now();
    if (r.rollback === 'sent') {
      const rb = stores.rollouts.rollbackCounts(r.id);
      if (rb.pending + rb.published > 0) return false;
      const row = stores.rollouts.update(r.id, { rollback: 'done' }, now());
      log.info({ rollout: r.id, returned: rb.returned, kept: rb.kept }, 'rollout rollback complete');
      this.o.service.tell(row, 'rolled-back');
      return true;
    }
    const rows = stores.rollouts.devices(r.id).filter((x) => x.publish !== 'none' && x.rb === 'none');
    if (rows.some((x) => x.publish === 'pending')) {
      log.info({ rollout: r.id }, 'rollback waits: some publishes are in doubt until the next republish');
      return false;
    }
    const createdBy = `rollout ${r.id} rollback`;
    // 1. the group target, if the last phase set it and nobody deployed to the group since
    let groupRef: ScopeRef | null = null;
    let groupRolledBack = r.groupRollbackId !== null && r.groupRollbackId > 0;
    if (r.groupDeploymentId !== null && r.groupRollbackId === null) {
      const scope = { kind: 'group' as const, id: r.group! };
      const cur = stores.deployments.current(scope);
      if (cur && cur.deploymentId === r.groupDeploymentId) {
        const prev = r.groupPreviousId !== null ? stores.deployments.get(r.groupPreviousId) : undefined;
        const item =
          prev && !prev.cleared
            ? { scope, content: contentOf(prev.signed.target) }
            : { scope, clear: true as const };
        const res = await deploy.publishMany([item], {
          createdBy,
          reserved: (deps) => stores.rollouts.update(r.id, { groupRollbackId: deps[0]!.id }, now()),
        });
        if (res.inDoubt.length) return false;
        groupRolledBack = true;
      } else {
        stores.rollouts.update(r.id, { groupRollbackId: 0 }, now()); // 0: left alone, a newer deploy stands
        log.info(
          { rollout: r.id, group: r.group },
          'group target changed since the rollout set it: left as it is',
        );
      }
    }
    const fresh = stores.rollouts.get(r.id)!;
    if (groupRolledBack && fresh.groupRollbackId) {
      const dep = stores.deployments.get(fresh.groupRollbackId);
      if (dep && !dep.cleared) groupRef = { kind: 'group', id: dep.scope.id, version: dep.version };
    }
    // 2. each device
    const marks: Array<{
      deviceId: string;
      rb: 'kept' | 'published';
      deploymentId: null;
      target: ScopeRef | null;
    }> = [];
    const sends: Array<{
      x: RolloutDeviceRow;
      item: { scope: { kind: 'device'; id: string }; content?: RolloutTarget; clear?: boolean };
    }> = [];
    for (const x of rows) {
      const scope = { kind: 'device' as const, id: x.deviceId };
      const own = stores.deployments.current(scope);
      const ours = own !== undefined && own.deploymentId === x.deploymentId;
      const prevContent = () => {
        if (x.prev?.kind !== 'device') return undefined;
        const p = stores.deployments.byVersion(scope, x.prev.version);
        const full = p ? stores.deployments.get(p.id) : undefined;
        return full && !full.cleared ? contentOf(full.signed.target) : undefined;
      };
      if (x.viaGroup && (x.deploymentId === null || !ours || x.prev?.kind !== 'device')) {
        // the group target carried it: the group's rollback returns it
        marks.push({
          deviceId: x.deviceId,
          rb: groupRolledBack ? 'published' : 'kept',
          deploymentId: null,
          target: groupRef,
        });
        continue;
      }
      if (!ours) {
        marks.push({ deviceId: x.deviceId, rb: 'kept', deploymentId: null, target: null }); // someone else's target since
        continue;
      }
      const content = prevContent();
      sends.push({ x, item: content ? { scope, content } : { scope, clear: true } });
    }
    if (marks.length) stores.rollouts.markRollback(r.id, marks, now());
    const batch = this.o.batch ?? 500;
    for (let i = 0; i < sends.length; i += batch) {
      const chunk = sends.slice(i, i + batch);
      const res = await deploy.publishMany(
        chunk.map((s) => s.item),
        {
          createdBy,
          reserved: (deps) =>
            stores.rollouts.markRollback(
              r.id,
              chunk.map((s, j) => ({
                deviceId: s.x.deviceId,
                rb: 'pending',
                deploymentId: deps[j]!.id,
                target: null,
              })),
              now(),
            ),
          committed: (deps) => {
            const targetOf = scopeCache(stores);
            const devs = new Map(stores.devices.rows(deps.map((d) => d.scope.id)).map((d) => [d.id, d]));
            stores.rollouts.markRollback(
              r.id,
              deps.map((dep) => {
                const d = devs.get(dep.scope.id);
                const target: ScopeRef | null = dep.cleared
                  ? d
                    ? toRef(effectiveTarget(d.id, d.groups, targetOf))
                    : null
                  : { kind: 'device', id: dep.scope.id, version: dep.version };
                return { deviceId: dep.scope.id, rb: 'published', deploymentId: dep.id, target };
              }),
              now(),
            );
          },
        },
      );
      if (res.inDoubt.length) return false;
    }
    const row = stores.rollouts.update(r.id, { rollback: 'sent' }, now());
    const rb = stores.rollouts.rollbackCounts(r.id);
    log.info(
      { rollout: r.id, moved: rb.pending + rb.published + rb.returned + rb.kept, sent: sends.length },
      'rollout rolled back: previous targets published',
    );
    this.refresh.add(r.id);
    void row;
    return true;
  }

  /** After success: clear the earlier phases' overrides so their devices follow the group target. */
  private async settle(r: RolloutRow): Promise<boolean> {
    const { stores, deploy, log } = this.o;
    const now = () => this.clock.now();
    const rows = stores.rollouts
      .devices(r.id)
      .filter((x) => !x.viaGroup && x.publish === 'published' && x.settle === 'none');
    const targetOf = scopeCache(stores);
    const devs = new Map(stores.devices.rows(rows.map((x) => x.deviceId)).map((d) => [d.id, d]));
    const kept: Array<{ deviceId: string; settle: 'kept'; deploymentId: null }> = [];
    const clear: RolloutDeviceRow[] = [];
    for (const x of rows) {
      const d = devs.get(x.deviceId);
      const own = stores.deployments.current({ kind: 'device', id: x.deviceId });
      const fb = d ? fallbackTarget(d, targetOf) : undefined;
      const ok =
        d !== undefined &&
        d.revokedAt === null &&
        (x.outcome === 'converged' || x.outcome === 'pending') &&
        own?.deploymentId === x.deploymentId &&
        fb?.kind === 'group' &&
        fb.id === r.group;
      if (ok) clear.push(x);
      else kept.push({ deviceId: x.deviceId, settle: 'kept', deploymentId: null });
    }
    if (kept.length) stores.rollouts.markSettle(r.id, kept, now());
    const batch = this.o.batch ?? 500;
    for (let i = 0; i < clear.length; i += batch) {
      const chunk = clear.slice(i, i + batch);
      const res = await deploy.publishMany(
        chunk.map((x) => ({ scope: { kind: 'device' as const, id: x.deviceId }, clear: true })),
        {
          createdBy: `rollout ${r.id}`,
          reserved: (deps) =>
            stores.rollouts.markSettle(
              r.id,
              chunk.map((x, j) => ({ deviceId: x.deviceId, settle: 'pending', deploymentId: deps[j]!.id })),
              now(),
            ),
          committed: (deps) =>
            stores.rollouts.markSettle(
              r.id,
              deps.map((dep) => ({ deviceId: dep.scope.id, settle: 'published', deploymentId: dep.id })),
              now(),
            ),
        },
      );
      if (res.inDoubt.length) return false;
    }
    const row = stores.rollouts.update(r.id, { settle: 'done' }, now());
    log.info(
      { rollout: r.id, cleared: clear.length, kept: kept.length },
      'rollout settled: overrides cleared',
    );
    this.o.service.tell(row, 'settled');
    return true;
  }

  // ---- progress events and polling --------------------------------------------------------------

  private progress(id: number): void {
    if (this.progressTimers.has(id)) return;
    const h = this.clock.setTimeout(() => {
      this.progressTimers.delete(id);
      const r = this.o.stores.rollouts.get(id);
      if (!r) return;
      const v = this.o.service.viewOf(r);
      const phases: RolloutPhaseProgress[] = v.counts.map((c, i) => ({
        index: i + 1,
        size: c.total,
        queued: c.queued,
        pending: c.pending,
        offline: c.offline,
        converged: c.converged,
        failed: c.failed,
        superseded: c.superseded,
      }));
      this.o.bus.emit({
        type: 'rollout.progress',
        at: this.clock.now(),
        rolloutId: id,
        state: r.state,
        phase: r.phase,
        phases,
        rollback: { state: r.rollback, moved: v.rollback.moved, returned: v.rollback.returned },
      });
    }, this.o.progressMs ?? 250);
    this.progressTimers.set(id, h);
  }

  /** Notice what another process (the local CLI on the state dir) did: new rollouts, operator actions. */
  private poll(): void {
    if (this.stopped) return;
    try {
      const marks = this.o.stores.rollouts.operatorMarks();
      let any = false;
      for (const [id, ops] of marks)
        if (this.marks.get(id) !== ops) {
          this.want(id);
          any = true;
        }
      this.marks = marks;
      if (any) void this.run();
    } catch (err) {
      this.o.log.warn({ err: errorMessage(err) }, 'rollout poll failed');
    }
    this.pollTimer = this.clock.setTimeout(() => this.poll(), this.o.pollMs ?? 1000);
  }
}

/**
 * How a device stands with the exact target a rollout sent it (and the agent release it names: converged
 * once the device runs that too, as `deploy --wait` counts it).
 */
export function outcomeOf(
  x: RolloutDeviceRow,
  d: DeviceRow | undefined,
  targetOf: (s: ScopeKey) => ScopeVersion | undefined,
  agent?: string | undefined,
): Pick<OutcomeUpdate, 'outcome' | 'online' | 'detail'> {
  if (!d) return { outcome: 'pending', online: false, detail: 'never seen by the fleet' };
  if (d.revokedAt !== null) return { outcome: 'superseded', online: false, detail: 'revoked' };
  const want = x.want!;
  const expected = effectiveTarget(d.id, d.groups, targetOf);
  // a newer target of the same scope that the rollout did not make replaced it
  if (expected && expected.kind === want.kind && expected.id === want.id && expected.version > want.version)
    return {
      outcome: 'superseded',
      online: d.online,
      detail: `${expected.kind === 'device' ? 'its own target' : `group ${expected.id}'s target`} was deployed again (version ${expected.version})`,
    };
  const p = deviceProgress({ ...want, agent }, snapshotOf(d, expected));
  const outcome =
    p.state === 'converged'
      ? 'converged'
      : p.state === 'failed' || p.state === 'rejected'
        ? 'failed'
        : p.state === 'superseded'
          ? 'superseded'
          : 'pending';
  return { outcome, online: d.online, detail: p.detail ?? (p.state !== outcome ? p.state : null) };
}

/** Whether a device runs again what the rollback gave it (or, with nothing to go back to, not the release). */
function hasReturned(
  x: RolloutDeviceRow,
  d: DeviceRow,
  targetOf: (s: ScopeKey) => ScopeVersion | undefined,
): boolean {
  const t = x.rbTarget;
  if (!t) {
    const a = d.applied;
    return a !== null && !(a.kind === x.want?.kind && a.id === x.want.id && a.version === x.want.version);
  }
  const expected = effectiveTarget(d.id, d.groups, targetOf);
  const p = deviceProgress(t, snapshotOf(d, expected));
  return p.state === 'converged' || p.state === 'verifying';
}

/** The rollout intent was not recorded: the rollout stopped running meanwhile (an abort, a newer rollout). */
class NoLongerRunning extends Error {}

function contentOf(t: {
  apps?: unknown;
  images: Array<{ name: string; digest: string }>;
  agent?: TargetAgent | undefined;
}): RolloutTarget {
  return { apps: t.apps ?? {}, images: t.images, ...(t.agent ? { agent: t.agent } : {}) };
}
