/**
 * The agent, assembled from its parts over the ports. The composition root (`berth agent`, wired by the
 * lead with the runtime, storage and transport implementations) builds the ports and hands them in:
 *
 *   const agent = new Agent({ db, ports, transport, log, stateDir });
 *   await agent.start();                 // converges to the target in SQLite at once, broker or not
 *   transport.onTarget((t) => agent.receiveTarget(t));      // verified + parsed by the transport layer
 *   transport.onCommand(async (c) => reply(await agent.command(c)));
 *   …
 *   await agent.stop();
 */

import type { AgentReport } from '../core/report.js';
import type { Target } from '../core/target.js';
import type { Db } from '../db/database.js';
import type { SystemInformation } from '../device/info.js';
import type { Logger } from '../lib/logger.js';
import { EventLog } from '../runtime/events.js';
import { AgentApi, type ImageCatalog } from './api.js';
import { agentSocketPath } from './api-client.js';
import { type CommandDeps, type CommandResult, dispatchCommand } from './commands.js';
import { Mutex } from './mutex.js';
import { Outbox, type OutboxOptions } from './outbox.js';
import { type AgentPorts, type Clock, systemClock, type TimerHandle, type Transport } from './ports.js';
import { type AgentEvent, Reconciler, type ReconcilerOptions, type RunOutcome } from './reconciler.js';
import { Reporter } from './reporter.js';
import { AgentStore } from './store.js';

export interface AgentOptions {
  db: Db;
  ports: AgentPorts;
  transport: Transport;
  log: Logger;
  stateDir: string;
  clock?: Clock;
  socketPath?: string;
  /** false: no local API socket (tests of other parts) */
  api?: boolean;
  /** images on the device for the local API (`berth images`, `berth inspect <image>`) */
  catalog?: ImageCatalog;
  sys?: SystemInformation;
  metricsIntervalMs?: number;
  /**
   * How often the containers' states are looked at between reconcile runs (default 2 s; 0 = never): a
   * container that stops — crashed, killed, stopped by hand — is reported within that, not at the next event.
   */
  stateWatchMs?: number;
  reconciler?: Partial<
    Omit<ReconcilerOptions, 'ports' | 'store' | 'clock' | 'log' | 'emit' | 'mutex' | 'onOutcome'>
  >;
  outbox?: Partial<Omit<OutboxOptions, 'db' | 'clock'>>;
  /** the agent's version and self-update status in the reported state */
  agentReport?: () => AgentReport;
}

export class Agent {
  readonly store: AgentStore;
  readonly outbox: Outbox;
  readonly reconciler: Reconciler;
  readonly reporter: Reporter;
  readonly api: AgentApi;
  readonly mutex = new Mutex();
  private readonly commandDeps: CommandDeps;
  private reportQueued = false;
  private offOnline: (() => void) | undefined;
  private readonly outcomeListeners: Array<(o: RunOutcome) => void> = [];
  private watchTimer: TimerHandle | undefined;
  private lastStates = '';
  private stopped = true;

  constructor(private readonly o: AgentOptions) {
    const clock = o.clock ?? systemClock;
    this.store = new AgentStore(o.db);
    this.outbox = new Outbox({ db: o.db, clock, ...o.outbox });
    this.reconciler = new Reconciler({
      ...o.reconciler,
      ports: o.ports,
      store: this.store,
      clock,
      log: o.log,
      mutex: this.mutex,
      emit: (e) => this.onEvent(e),
      onOutcome: (out) => {
        for (const fn of this.outcomeListeners) fn(out);
        // the next retry's time changed: the reported state shows it (errors are reported as events anyway)
        if (out.status === 'waiting') this.reportSoon();
      },
    });
    this.reporter = new Reporter({
      transport: o.transport,
      outbox: this.outbox,
      store: this.store,
      reconciler: this.reconciler,
      engine: o.ports.engine,
      clock,
      log: o.log,
      stateDir: o.stateDir,
      ...(o.agentReport ? { agent: o.agentReport } : {}),
      ...(o.sys ? { sys: o.sys } : {}),
      ...(o.metricsIntervalMs !== undefined ? { metricsIntervalMs: o.metricsIntervalMs } : {}),
    });
    this.commandDeps = {
      engine: o.ports.engine,
      volumes: o.ports.volumes,
      store: this.store,
      clock,
      mutex: this.mutex,
      isLocked: (app) => o.ports.locks.held(app),
      reconcile: (why) => void this.reconciler.retryNow(why),
      report: async () => {
        await this.reporter.reportInfo(true);
        await this.reporter.reportState(true);
      },
    };
    this.api = new AgentApi({
      engine: o.ports.engine,
      events: new EventLog(o.db),
      catalog: o.catalog,
      images: o.ports.images,
      store: this.store,
      clock,
      mutex: this.mutex,
      log: o.log,
      commands: this.commandDeps,
      state: () => this.reporter.currentState(),
    });
  }

  /** Publish the reported state if it changed (progress that is not an event). */
  reportSoon(): void {
    this.onEvent(undefined);
  }

  /** Told every reconcile outcome (the self-update trial's "completed a reconcile"). */
  onReconciled(fn: (o: RunOutcome) => void): void {
    this.outcomeListeners.push(fn);
  }

  /**
   * No target pending, applying or on probation, and no reconcile running: the agent's own switch may
   * happen now (it restarts the agent, not the containers).
   */
  settled(): boolean {
    if (this.store.getTarget('pending')) return false;
    const cur = this.store.getTarget('current');
    if (cur && (cur.status === 'applying' || cur.status === 'converged')) return false;
    const out = this.reconciler.lastOutcome?.status;
    return out === 'converged' || out === 'waiting' || (!cur && out !== undefined);
  }

  /**
   * An event from outside the reconciler (the fleet link's refusals, the self-update): queued and
   * reported like its own.
   */
  report(e: AgentEvent & { at: number }): void {
    this.onEvent(e);
  }

  /** An event (undefined: progress only) goes to the outbox; the reported state follows either way. */
  private onEvent(e: (AgentEvent & { at: number }) | undefined) {
    // health "starting" and per-step successes are chatty: they change the reported state, not the event log
    if (e && !(e.type === 'step' && e.ok) && !(e.type === 'health' && e.status === 'starting'))
      this.outbox.enqueue('event', e);
    if (!this.reportQueued && this.o.transport.online) {
      this.reportQueued = true;
      queueMicrotask(() => {
        this.reportQueued = false;
        void this.reporter
          .reportState()
          .catch((err: unknown) => this.o.log.debug({ err }, 'state report failed'));
        void this.outbox.drain(this.o.transport);
      });
    }
  }

  async start(): Promise<void> {
    if (this.o.api !== false) await this.api.listen(this.o.socketPath ?? agentSocketPath(this.o.stateDir));
    this.stopped = false;
    this.reconciler.start();
    this.reporter.start();
    this.watchStates();
    // A run that failed or waits for want of the fleet (a fetch, sizing an image for the space check)
    // backs off up to a minute: the link coming back is the moment to try again, from a fresh backoff.
    this.offOnline = this.o.transport.onOnline(() => {
      const last = this.reconciler.lastOutcome?.status;
      if (last === 'error' || last === 'waiting') void this.reconciler.retryNow('the fleet link is back');
    });
  }

  /**
   * Between reconcile runs, look at the containers' states every `stateWatchMs`: when one changed (a
   * container stopped or started outside a run), report the state now and let the reconciler act on it
   * (restart policies), then report again.
   */
  private watchStates(): void {
    const every = this.o.stateWatchMs ?? 2000;
    if (every <= 0 || this.stopped) return;
    const clock = this.o.clock ?? systemClock;
    this.watchTimer = clock.setTimeout(async () => {
      try {
        // a run in flight reports what it changes through its own events; look again next time
        if (!this.reconciler.busy) {
          const list = await this.o.ports.engine.list();
          const key = list
            .map((c) => `${c.id}:${c.status}`)
            .sort()
            .join(',');
          if (this.lastStates !== '' && key !== this.lastStates) {
            await this.reporter.reportState();
            await this.reconciler.trigger();
            await this.reporter.reportState();
          }
          this.lastStates = key;
        }
      } catch (err) {
        this.o.log.debug({ err }, 'container state watch failed');
      }
      this.watchStates();
    }, every);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.watchTimer) (this.o.clock ?? systemClock).clearTimeout(this.watchTimer);
    this.offOnline?.();
    const reporting = this.reporter.stop();
    await this.reconciler.stop();
    await reporting;
    await this.api.close();
    this.outbox.close();
  }

  /** A verified, parsed target from the fleet (or a file). */
  receiveTarget(target: Target): boolean {
    return this.reconciler.setTarget(target);
  }

  command(raw: unknown): Promise<CommandResult> {
    return dispatchCommand(raw, this.commandDeps);
  }
}
