/**
 * The reconcile loop. Single-flight: one run at a time; a trigger during a run makes the run go once more
 * when it ends. A run: promote a pending target, check the health window, check disk space, then
 * plan → run the batch → plan again from fresh state, until the plan is empty (converged), only waits
 * (blocked: retry later) or a step fails (retry later). "Later" backs off exponentially with jitter, from
 * `minDelayMs` to `maxDelayMs` (60 s), and resets on progress — and whenever something changes that may cure
 * the failure (`retryNow`: a new target, the fleet link back, disk space freed, an operator's retry or
 * restart). The pending retry and its last error are readable (`retry`) for the reported state.
 * All timers go through the injected Clock.
 *
 * State lives in SQLite (AgentStore) and in what the ports report, never in this object: a new Reconciler
 * over the same database and device picks up exactly where a killed one stopped.
 */
import { checkSpace, type ImageNeed } from '../core/disk.js';
import { appHosts } from '../core/hosts.js';
import { plan } from '../core/planner.js';
import { DEFAULT_RESTART_BACKOFF, type RestartBackoff } from '../core/restart.js';
import { evaluateRollout, type RolloutVerdict } from '../core/rollback.js';
import type { UpdatePhase } from '../core/self-update.js';
import type { CurrentContainer, CurrentState, HealthStatus } from '../core/state.js';
import { describeStep, isIdleStep, type Step } from '../core/steps.js';
import {
  emptyTarget,
  type Healthcheck,
  originOf,
  type Service,
  specHash,
  type Target,
  type TargetOrigin,
  targetImages,
} from '../core/target.js';
import { RetryPolicy, type RetryState } from '../lib/backoff.js';
import { BerthError, errorMessage, isBerthError, withContext } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { createExecutors, type Executors, runStep } from './executors.js';
import { HealthMonitor, type NetProbes, resolveHealthcheck } from './health.js';
import { Mutex } from './mutex.js';
import {
  type AgentPorts,
  type Clock,
  type EngineContainer,
  LABEL_APP,
  LABEL_DEPENDS_ON,
  LABEL_SERVICE,
  LABEL_SPEC_HASH,
  type TimerHandle,
} from './ports.js';
import type { AgentStore } from './store.js';

/** Targets are named by their origin (device 3, group g1 7), the operator's versions, in every event. */
export type AgentEvent =
  | { type: 'target-accepted'; target: TargetOrigin }
  | { type: 'target-ignored'; target: TargetOrigin; reason: string }
  /** the agent refused a target before it reached the reconciler (signature, schema, topic, replay) */
  | {
      type: 'target-rejected';
      scope?: { kind: 'device' | 'group'; id: string };
      version?: number;
      reason: string;
    }
  | { type: 'step'; step: string; ok: boolean; error?: string }
  | { type: 'converged'; target: TargetOrigin }
  /** the plan is blocked (update lock, hand-over, dependencies, restart backoff); sent when the reasons change */
  | { type: 'waiting'; reasons: string[] }
  | { type: 'rollout-healthy'; target: TargetOrigin }
  | { type: 'rollback'; from: TargetOrigin; to: TargetOrigin; reason: string }
  | { type: 'rollout-failed'; target: TargetOrigin; reason: string }
  | { type: 'error'; code: string; message: string; app?: string }
  | { type: 'interrupted'; steps: string[] }
  | { type: 'health'; container: string; status: HealthStatus; output?: string }
  /** the agent's own update (src/agent/self-update/): downloading, staged, trial, committed, rolled back… */
  | { type: 'agent-update'; version: string; phase: UpdatePhase; from?: string; reason?: string };

export interface ReconcilerOptions {
  ports: AgentPorts;
  store: AgentStore;
  clock: Clock;
  log: Logger;
  emit?: (e: AgentEvent & { at: number }) => void;
  /** health window after converging to a new target (default 60 s) */
  healthWindowMs?: number;
  /** retry backoff of failed or waiting runs: from min (1 s) doubling to max (60 s), jittered */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** jitter source for the retry backoff (tests pin it) */
  random?: () => number;
  /** while a run failed for want of disk space, look at the free space this often (default 5 s) … */
  spaceWatchMs?: number;
  /** … and retry at once when this much more is free (default 16 MiB) */
  spaceFreedBytes?: number;
  /** re-check a converged device this often (restart policies, health window) */
  idleIntervalMs?: number;
  /** bytes to leave free when checking space for an update */
  reserveBytes?: number;
  restartBackoff?: RestartBackoff;
  /** safety valve: batches per run before backing off (a step that "succeeds" without effect) */
  maxBatchesPerRun?: number;
  probes?: NetProbes;
  mutex?: Mutex;
  executors?: Executors;
  /** told the outcome of every run (the self-update trial waits for a completed reconcile) */
  onOutcome?: (o: RunOutcome) => void;
}

export type RunOutcome =
  | { status: 'converged'; version: number }
  | { status: 'waiting'; reasons: string[] }
  | { status: 'error'; error: BerthError }
  | { status: 'stopped' };

export class Reconciler {
  readonly mutex: Mutex;
  readonly health: HealthMonitor;
  private readonly executors: Executors;
  private readonly o: Required<
    Pick<
      ReconcilerOptions,
      | 'healthWindowMs'
      | 'minDelayMs'
      | 'maxDelayMs'
      | 'idleIntervalMs'
      | 'reserveBytes'
      | 'restartBackoff'
      | 'maxBatchesPerRun'
      | 'spaceWatchMs'
      | 'spaceFreedBytes'
    >
  >;
  private inFlight: Promise<RunOutcome> | undefined;
  private again = false;
  private stopped = true;
  private timer: TimerHandle | undefined;
  private readonly retries: RetryPolicy;
  /** free bytes when a run failed NoSpace, and the timer that looks again */
  private spaceBase: number | undefined;
  private spaceTimer: TimerHandle | undefined;
  private checkCache = new Map<string, Healthcheck>();
  /**
   * Set at start when the current target is on probation: until it has converged again (at the latest
   * until one health window from now), it is not judged, and once it has, its window starts over.
   * While the agent was down nobody watched, and what happened then — a reboot or power cut killing
   * every container, the restarts that bring them back — is not the new version failing.
   */
  private reopenUntil: number | undefined;
  /** what each container's /etc/hosts lists now (written by syncHosts) */
  private hostsWritten = new Map<string, string>();
  /** the isolation last applied (members and pairs), undefined before the first */
  private isolationSet: string | undefined;
  private waitingReasons: string[] = [];
  /** reasons of the last `waiting` event; cleared on convergence, so a crash loop's backoff is told once */
  private waitingTold = '';
  /** counters for tests and the bench */
  readonly stats = { runs: 0, batches: 0, steps: 0 };
  lastOutcome: RunOutcome | undefined;

  /** Why the device is not converging right now (empty unless the last plan was only waits). */
  get waiting(): readonly string[] {
    return this.waitingReasons;
  }

  private setWaiting(reasons: string[]) {
    this.waitingReasons = reasons;
    const key = reasons.join('\n');
    if (reasons.length === 0 || key === this.waitingTold) return;
    this.waitingTold = key;
    this.emit({ type: 'waiting', reasons });
  }

  constructor(private readonly opts: ReconcilerOptions) {
    this.o = {
      healthWindowMs: opts.healthWindowMs ?? 60_000,
      minDelayMs: opts.minDelayMs ?? 1000,
      maxDelayMs: opts.maxDelayMs ?? 60_000,
      idleIntervalMs: opts.idleIntervalMs ?? 10_000,
      reserveBytes: opts.reserveBytes ?? 32 * 1024 * 1024,
      restartBackoff: opts.restartBackoff ?? DEFAULT_RESTART_BACKOFF,
      maxBatchesPerRun: opts.maxBatchesPerRun ?? 200,
      spaceWatchMs: opts.spaceWatchMs ?? 5000,
      spaceFreedBytes: opts.spaceFreedBytes ?? 16 * 1024 * 1024,
    };
    this.retries = new RetryPolicy({
      initialMs: this.o.minDelayMs,
      maxMs: this.o.maxDelayMs,
      ...(opts.random ? { random: opts.random } : {}),
    });
    this.mutex = opts.mutex ?? new Mutex();
    this.executors =
      opts.executors ??
      createExecutors({
        ports: opts.ports,
        store: opts.store,
        clock: opts.clock,
        backoff: this.o.restartBackoff,
      });
    this.health = new HealthMonitor({
      engine: opts.ports.engine,
      clock: opts.clock,
      ...(opts.probes ? { probes: opts.probes } : {}),
      onChange: (id, status, output) => {
        this.opts.store.updateContainer(id, { health: status }, this.opts.clock.now());
        this.emit({ type: 'health', container: id, status, ...(output ? { output } : {}) });
        if (status !== 'starting') void this.trigger();
      },
    });
  }

  private emit(e: AgentEvent) {
    this.opts.emit?.({ ...e, at: this.opts.clock.now() });
  }

  /** Start the loop: report interrupted steps of a previous life, then converge to what SQLite holds. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    if (this.opts.store.getTarget('current')?.status === 'converged')
      this.reopenUntil = this.opts.clock.now() + this.o.healthWindowMs;
    const interrupted = this.opts.store.takeInterruptedSteps();
    if (interrupted.length > 0) {
      this.opts.log.warn(
        { steps: interrupted.map(describeStep) },
        'steps interrupted by a restart; re-planning',
      );
      this.emit({ type: 'interrupted', steps: interrupted.map(describeStep) });
    }
    void this.trigger();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.opts.clock.clearTimeout(this.timer);
    this.timer = undefined;
    if (this.spaceTimer) this.opts.clock.clearTimeout(this.spaceTimer);
    this.spaceTimer = undefined;
    this.health.close();
    await this.inFlight;
  }

  /** A new target from the fleet (already verified and validated). Stored, then applied. */
  setTarget(target: Target): boolean {
    const r = this.opts.store.receiveTarget(target, this.opts.clock.now());
    if (!r.accepted) {
      this.emit({ type: 'target-ignored', target: originOf(target), reason: r.reason! });
      return false;
    }
    this.emit({ type: 'target-accepted', target: originOf(target) });
    this.retries.reset();
    void this.trigger();
    return true;
  }

  /**
   * Something changed that may cure what the last run failed or waited on (the fleet link is back, the
   * fleet sent a target again, disk space was freed, an operator asked): forget the backoff and run now.
   */
  retryNow(why: string): Promise<RunOutcome> {
    const r = this.retries.state;
    this.retries.reset();
    if (r && !this.stopped)
      this.opts.log.info({ why, attempt: r.attempt, lastError: r.lastError }, 'retrying now; backoff reset');
    return this.trigger();
  }

  /** The retry pending after a failed or waiting run: when, which attempt, the last error. */
  get retry(): RetryState | undefined {
    return this.retries.state;
  }

  /** Run now (single-flight). Resolves with the outcome of the run that covers this trigger. */
  trigger(): Promise<RunOutcome> {
    if (this.stopped) return Promise.resolve({ status: 'stopped' });
    if (this.inFlight) {
      this.again = true;
      return this.inFlight;
    }
    if (this.timer) this.opts.clock.clearTimeout(this.timer);
    this.timer = undefined;
    const p = (async () => {
      let out: RunOutcome;
      do {
        this.again = false;
        out = await this.runOnce();
      } while (this.again && !this.stopped);
      return out;
    })().finally(() => {
      this.inFlight = undefined;
    });
    this.inFlight = p;
    return p;
  }

  /** Whether a run is in flight. */
  get busy(): boolean {
    return this.inFlight !== undefined;
  }

  /** Resolves when no run is in flight. */
  async idle(): Promise<void> {
    while (this.inFlight) await this.inFlight;
  }

  private schedule(ms: number) {
    if (this.stopped) return;
    if (this.timer) this.opts.clock.clearTimeout(this.timer);
    this.timer = this.opts.clock.setTimeout(
      () => {
        this.timer = undefined;
        void this.trigger();
      },
      Math.max(0, ms),
    );
  }

  /** Schedule the next try after the backoff (or at `notAfter`, a wait's known end, when sooner). */
  private retryLater(lastError?: string, notAfter?: number): void {
    const now = this.opts.clock.now();
    const r = this.retries.fail(now, lastError, notAfter);
    this.schedule(Math.max(r.at - now, 10));
  }

  /**
   * A run failed for want of space: watch the free bytes, and retry at once when enough was freed
   * (an operator cleaned up, a log rotated) instead of at the end of the backoff.
   */
  private async watchSpace(): Promise<void> {
    const { images } = this.opts.ports;
    const stillShort = () =>
      this.lastOutcome?.status === 'error' && this.lastOutcome.error.code === 'NoSpace';
    this.spaceBase = await images.availableBytes().catch(() => undefined);
    const look = () => {
      if (this.stopped || this.spaceTimer || this.spaceBase === undefined) return;
      this.spaceTimer = this.opts.clock.setTimeout(async () => {
        this.spaceTimer = undefined;
        if (!stillShort() || this.spaceBase === undefined) return;
        const free = await images.availableBytes().catch(() => undefined);
        if (free !== undefined && free - this.spaceBase >= this.o.spaceFreedBytes) {
          const mib = Math.round((free - this.spaceBase) / 1024 / 1024);
          this.spaceBase = undefined;
          void this.retryNow(`disk space freed (${mib} MiB)`);
          return;
        }
        look();
      }, this.o.spaceWatchMs);
    };
    look();
  }

  private async runOnce(): Promise<RunOutcome> {
    this.stats.runs++;
    const out = await this.runOnceInner().catch((err: unknown): RunOutcome => {
      const e = err instanceof BerthError ? err : withContext('reconcile', err);
      return { status: 'error', error: e };
    });
    this.lastOutcome = out;
    this.opts.onOutcome?.(out);
    if (out.status === 'error' && this.stopped) return { status: 'stopped' };
    if (out.status === 'error') {
      this.retryLater(`${out.error.code}: ${out.error.message}`);
      this.opts.log.warn(
        { err: out.error.message, code: out.error.code, retryInMs: this.retry!.at - this.opts.clock.now() },
        'reconcile failed; backing off',
      );
      this.emit({ type: 'error', code: out.error.code, message: out.error.message });
      if (out.error.code === 'NoSpace' && !this.spaceTimer) await this.watchSpace();
    }
    return out;
  }

  private async runOnceInner(): Promise<RunOutcome> {
    const { store, clock } = this.opts;
    const promoted = store.promotePending(clock.now());
    if (promoted) {
      this.opts.log.info({ version: promoted.version }, 'applying new target');
      this.reopenUntil = undefined; // a new target gets its own window when it converges
    }
    let spaceChecked = false;

    for (let batch = 0; batch < this.o.maxBatchesPerRun; batch++) {
      if (this.stopped) return { status: 'stopped' };
      const cur = store.getTarget('current');
      const target = cur?.target ?? emptyTarget();
      const previous = store.getTarget('previous')?.target;
      const state = await this.gather(target, previous);

      // A target on probation is judged before anything else, so a crash loop cannot keep it alive.
      if (this.reopenUntil !== undefined && clock.now() >= this.reopenUntil) this.reopenUntil = undefined;
      if (cur?.status === 'converged' && this.reopenUntil === undefined) {
        const verdict = this.judge(target, state);
        if (verdict.status === 'failed') {
          this.rollBack(target, verdict.reason);
          continue;
        }
        if (verdict.status === 'healthy') {
          store.setCurrentStatus('healthy', clock.now());
          store.endRollout();
          this.emit({ type: 'rollout-healthy', target: originOf(target) });
        }
      }

      let unsized: string | undefined;
      if (!spaceChecked && cur && cur.status === 'applying') {
        unsized = await this.checkSpace(target, previous, state);
        spaceChecked = unsized === undefined;
      }

      let steps = plan(state, target, {
        now: clock.now(),
        keepImages: previous ? targetImages(previous) : [],
        backoff: this.o.restartBackoff,
      });
      // Nothing is fetched before the space check has passed; everything else (restarting the running
      // version after a reboot without network, say) goes on.
      if (unsized !== undefined)
        steps = steps.map((x) =>
          x.kind === 'fetch' ? { kind: 'wait', reason: `${describeStep(x)}: ${unsized}` } : x,
        );

      if (steps.length === 0) return this.converged(target, state);

      const actionable = steps.filter((s) => !isIdleStep(s));
      if (actionable.length === 0) {
        const reasons = steps.map(describeStep);
        this.setWaiting(reasons);
        const untils = steps.flatMap((s) => (s.kind === 'wait' && s.until !== undefined ? [s.until] : []));
        this.retryLater(undefined, untils.length > 0 ? Math.min(...untils) : undefined);
        return { status: 'waiting', reasons };
      }

      this.stats.batches++;
      this.setWaiting([]);
      await this.mutex.run(() => this.runBatch(actionable));
      this.retries.succeed();
      for (const app of Object.keys(target.apps)) store.setAppStatus(app, 'applying', clock.now());
    }
    const reason = `no convergence after ${this.o.maxBatchesPerRun} batches`;
    this.retryLater(reason);
    return { status: 'waiting', reasons: [reason] };
  }

  private async runBatch(steps: Step[]): Promise<void> {
    const { store, clock, log } = this.opts;
    for (const step of steps) {
      const intent = store.beginStep(step, clock.now());
      this.stats.steps++;
      let aborted = false;
      try {
        await runStep(this.executors, step);
        log.debug({ step: describeStep(step) }, 'step done');
      } catch (err) {
        // Aborted by stop() (a pull cut short): not a failure of the step; the intent stays, so the next
        // start reports it interrupted and re-plans.
        aborted = this.stopped;
        if (aborted) throw err;
        const e = withContext(describeStep(step), err);
        const app = 'app' in step ? step.app : undefined;
        if (app) store.setAppStatus(app, 'error', clock.now(), e.message);
        if ('id' in step) store.updateContainer(step.id, { lastError: e.message }, clock.now());
        this.emit({ type: 'step', step: describeStep(step), ok: false, error: e.message });
        throw e;
      } finally {
        if (!aborted) store.endStep(intent);
      }
      this.emit({ type: 'step', step: describeStep(step), ok: true });
    }
  }

  private converged(target: Target, state: CurrentState): RunOutcome {
    const { store, clock } = this.opts;
    this.retries.succeed();
    this.setWaiting([]);
    this.waitingTold = '';
    const cur = store.getTarget('current');
    for (const app of Object.keys(target.apps)) store.setAppStatus(app, 'running', clock.now());
    let next = this.o.idleIntervalMs;
    if (cur?.status === 'applying') {
      this.openHealthWindow(target, state);
      this.emit({ type: 'converged', target: originOf(target) });
      next = Math.min(next, this.o.healthWindowMs);
    } else if (cur?.status === 'converged' && this.reopenUntil !== undefined) {
      this.reopenUntil = undefined;
      this.openHealthWindow(target, state);
      this.opts.log.info(
        { version: target.version },
        'health window started over: the agent restarted while the target was on probation',
      );
      next = Math.min(next, this.o.healthWindowMs);
    } else if (cur?.status === 'converged') {
      const r = store.getRollout();
      if (r) next = Math.min(next, Math.max(10, r.convergedAt + r.windowMs - clock.now()));
    }
    this.schedule(next);
    return { status: 'converged', version: target.version };
  }

  /** Probation starts now; restarts so far are the baseline (only new ones count as crashes). */
  private openHealthWindow(target: Target, state: CurrentState): void {
    const baselineRestarts: Record<string, number> = {};
    for (const c of state.containers) baselineRestarts[c.id] = c.restarts;
    const now = this.opts.clock.now();
    this.opts.store.markConverged(
      { version: target.version, convergedAt: now, windowMs: this.o.healthWindowMs, baselineRestarts },
      now,
    );
  }

  private judge(target: Target, state: CurrentState): RolloutVerdict {
    const r = this.opts.store.getRollout();
    if (!r || r.version !== target.version) {
      // converged without a window on record (older database): open one now
      this.opts.store.markConverged(
        {
          version: target.version,
          convergedAt: this.opts.clock.now(),
          windowMs: this.o.healthWindowMs,
          baselineRestarts: {},
        },
        this.opts.clock.now(),
      );
      return { status: 'pending', until: 0, reason: 'health window opened' };
    }
    return evaluateRollout(target, state.containers, r, this.opts.clock.now());
  }

  private rollBack(failed: Target, reason: string) {
    const { store, clock, log } = this.opts;
    const back = store.rollBack(reason, clock.now());
    if (back) {
      log.warn(
        { from: failed.version, to: back.version, reason },
        'target failed its health window; rolling back',
      );
      this.emit({ type: 'rollback', from: originOf(failed), to: originOf(back), reason });
    } else {
      log.error(
        { version: failed.version, reason },
        'target failed its health window and there is nothing to roll back to',
      );
      this.emit({ type: 'rollout-failed', target: originOf(failed), reason });
    }
    for (const app of Object.keys(failed.apps)) store.setAppStatus(app, 'error', clock.now(), reason);
  }

  /**
   * Refuse an update that cannot fit — before the first step, so a running app is never left half-updated.
   * Returns why the check could not be made (an image's size is unknown while the fleet is unreachable),
   * undefined when it passed; throws NoSpace when it failed.
   */
  private async checkSpace(
    target: Target,
    previous: Target | undefined,
    state: CurrentState,
  ): Promise<string | undefined> {
    const { images } = this.opts.ports;
    const n: ImageNeed[] = [];
    let unsized: string | undefined;
    for (const image of targetImages(target)) {
      const s = state.images[image];
      if (s?.fetched && s.unpacked) continue;
      try {
        n.push({ image, ...(await images.missingBytes(image)) });
      } catch (err) {
        if (!isBerthError(err, 'Unavailable')) throw err;
        unsized ??= `disk space not checked yet (${errorMessage(err)})`;
      }
    }
    if (n.length === 0) return unsized;
    let check = checkSpace(n, await images.availableBytes(), this.o.reserveBytes);
    if (check.ok) return unsized;
    // Collect the agent's own images no kept target uses, then look again.
    const keep = new Set([
      ...targetImages(target),
      ...(previous ? targetImages(previous) : []),
      ...state.containers.map((c) => c.image),
    ]);
    const collectable = new Set(this.opts.store.managedImages().filter((i) => !keep.has(i)));
    if (collectable.size > 0) {
      await images.gc((await images.list()).filter((i) => !collectable.has(i)));
      this.opts.store.forgetManagedImages([...collectable]);
    }
    check = checkSpace(n, await images.availableBytes(), this.o.reserveBytes);
    if (check.ok) return unsized;
    for (const app of Object.keys(target.apps))
      this.opts.store.setAppStatus(app, 'error', this.opts.clock.now(), check.error!.message);
    throw check.error!;
  }

  /** What is on the device now, as plain data for the planner. */
  async gather(target: Target, previous?: Target): Promise<CurrentState> {
    const { engine, images, volumes, networks, locks } = this.opts.ports;
    const [list, vols, nets, stored] = await Promise.all([
      engine.list(),
      volumes.list(),
      networks.list(),
      images.list(),
    ]);
    const records = new Map(this.opts.store.containers().map((r) => [r.id, r]));
    const managed = list.filter(
      (c) => c.labels[LABEL_APP] && c.labels[LABEL_SERVICE] && c.labels[LABEL_SPEC_HASH],
    );

    // Health: every running managed container with a real check is watched; until its first verdict it is
    // "starting", so depends_on/hand-over never treat an unchecked container as healthy.
    const watch: Array<{ container: EngineContainer; check: Healthcheck }> = [];
    for (const c of managed) {
      if (c.status !== 'running') continue;
      const spec = target.apps[c.labels[LABEL_APP]!]?.services[c.labels[LABEL_SERVICE]!];
      const specForCheck = spec && specHash(spec) === c.labels[LABEL_SPEC_HASH] ? spec : undefined;
      watch.push({ container: c, check: await this.checkFor(c, specForCheck) });
    }
    this.health.sync(watch);
    await this.syncHosts(target, managed);

    const containers: CurrentContainer[] = managed.map((c) => {
      const r = records.get(c.id);
      const labels: Record<string, string> = {};
      for (const [k, v] of Object.entries(c.labels)) if (!k.startsWith('io.berth.')) labels[k] = v;
      return {
        id: c.id,
        app: c.labels[LABEL_APP]!,
        service: c.labels[LABEL_SERVICE]!,
        specHash: c.labels[LABEL_SPEC_HASH]!,
        image: c.image,
        status: c.status,
        exitCode: c.exitCode,
        startedAt: c.startedAt,
        finishedAt: c.finishedAt,
        createdAt: c.createdAt,
        health: c.status === 'running' ? this.health.status(c.id) : 'none',
        restarts: r?.restarts ?? 0,
        stoppedByUser: r?.stoppedByUser ?? false,
        dependsOn: (c.labels[LABEL_DEPENDS_ON] ?? '').split(',').filter(Boolean),
        labels,
      };
    });

    // Images the planner may see: the targets' and the ones the agent fetched itself. Images pulled by hand
    // (`berth pull`, `berth run`) stay out of its sight, so its cleanup never collects them.
    const storedSet = new Set(stored);
    const refs = new Set([
      ...targetImages(target),
      ...(previous ? targetImages(previous) : []),
      ...this.opts.store.managedImages().filter((i) => storedSet.has(i)),
    ]);
    const imageStates: CurrentState['images'] = {};
    await Promise.all(
      [...refs].map(async (ref) => {
        imageStates[ref] = await images.has(ref);
      }),
    );

    const apps = new Set([...Object.keys(target.apps), ...containers.map((c) => c.app)]);
    const lockState: Record<string, boolean> = {};
    const handovers: Record<string, number> = {};
    await Promise.all(
      [...apps].map(async (a) => {
        lockState[a] = await locks.held(a);
        const at = await locks.handoverSignalAt?.(a);
        if (at !== undefined) handovers[a] = at;
      }),
    );
    return { containers, images: imageStates, volumes: vols, networks: nets, locks: lockState, handovers };
  }

  /** Each running container's /etc/hosts lists the services of its app it shares a network with. */
  private async syncHosts(target: Target, managed: readonly EngineContainer[]): Promise<void> {
    const { engine } = this.opts.ports;
    if (!engine.setHosts) return;
    const running = managed.filter((c) => c.status === 'running');
    const wanted = appHosts(
      running.map((c) => {
        const app = c.labels[LABEL_APP]!;
        const service = c.labels[LABEL_SERVICE]!;
        return {
          id: c.id,
          app,
          service,
          ip: c.ip,
          networks: target.apps[app]?.services[service]?.networks ?? [],
          startedAt: c.startedAt,
        };
      }),
    );
    for (const [id, entries] of wanted) {
      const key = JSON.stringify(entries);
      if (this.hostsWritten.get(id) === key) continue;
      try {
        await engine.setHosts(id, entries);
        this.hostsWritten.set(id, key);
      } catch (err) {
        this.opts.log.warn({ id, err: errorMessage(err) }, 'could not update /etc/hosts');
      }
    }
    for (const id of this.hostsWritten.keys()) if (!wanted.has(id)) this.hostsWritten.delete(id);

    // The same relation on the wire: between the app containers, only those that share a network talk.
    if (!engine.setIsolation) return;
    const ipOf = new Map(running.flatMap((c) => (c.ip ? [[c.id, c.ip] as const] : [])));
    const members = [...ipOf.values()].sort();
    const pairs: Array<[string, string]> = [];
    for (const [id, entries] of wanted) for (const e of entries) pairs.push([ipOf.get(id)!, e.ip]);
    pairs.sort((a, b) => `${a}`.localeCompare(`${b}`));
    const key = JSON.stringify([members, pairs]);
    if (key === this.isolationSet || (this.isolationSet === undefined && members.length === 0)) return;
    try {
      const done = await engine.setIsolation(members, pairs);
      if (!done && this.isolationSet === undefined)
        this.opts.log.warn('app networks are not isolated: the firewall cannot filter bridged traffic');
      this.isolationSet = key;
    } catch (err) {
      this.opts.log.warn({ err: errorMessage(err) }, 'could not update app network isolation');
    }
  }

  private async checkFor(c: EngineContainer, spec: Service | undefined): Promise<Healthcheck> {
    const key = `${c.labels[LABEL_SPEC_HASH]}:${c.image}`;
    const hit = this.checkCache.get(key);
    if (hit) return hit;
    let imageCheck: Awaited<ReturnType<AgentPorts['images']['healthcheck']>>;
    try {
      imageCheck = await this.opts.ports.images.healthcheck(c.image);
    } catch (err) {
      this.opts.log.debug({ image: c.image, err: errorMessage(err) }, 'no image health check');
    }
    const check = spec
      ? resolveHealthcheck(spec, imageCheck)
      : resolveHealthcheck({ healthcheck: undefined } as Service, imageCheck);
    if (this.checkCache.size > 256) this.checkCache.clear();
    this.checkCache.set(key, check);
    return check;
  }
}
