/**
 * Reporting to the fleet. Three kinds of data, three policies:
 *   state   — reported state per app/service (core/report.ts), published retained whenever it changes and
 *             again on every reconnect (the broker keeps the latest for the fleet server).
 *   info    — device info (os, arch, cpu, memory, disks, network), retained, at start/reconnect and on change.
 *   metrics — device metrics + per-container cpu/memory (cgroups), sampled every interval and queued in the
 *             outbox only when something moved beyond its threshold; the outbox drains when online.
 */
import {
  type AgentReport,
  buildReportedState,
  changedKeys,
  DEFAULT_THRESHOLDS,
  type Flat,
  flatten,
  type ReportedState,
  type Thresholds,
} from '../core/report.js';
import { canonicalJson, emptyTarget } from '../core/target.js';
import { type CgroupStats, cpuPercent, readCgroupStats } from '../device/cgroup.js';
import { collectDeviceInfo, collectDeviceMetrics, type SystemInformation } from '../device/info.js';
import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { Outbox } from './outbox.js';
import type { Clock, ContainerEngine, EngineContainer, TimerHandle, Transport } from './ports.js';
import type { Reconciler } from './reconciler.js';
import type { AgentStore } from './store.js';

export interface ReporterOptions {
  transport: Transport;
  outbox: Outbox;
  store: AgentStore;
  reconciler: Reconciler;
  engine: ContainerEngine;
  clock: Clock;
  log: Logger;
  stateDir: string;
  sys?: SystemInformation;
  thresholds?: Thresholds;
  /** 0 disables the metrics loop (default 60 s) */
  metricsIntervalMs?: number;
  /** per-container stats; default: the container's cgroup (v1 or v2), else the engine's stats */
  containerStats?: (c: EngineContainer) => Promise<CgroupStats>;
  cgroupRoot?: string;
  /** the agent's version and self-update status, for the reported state */
  agent?: () => AgentReport;
}

export class Reporter {
  private lastState: string | undefined;
  private lastInfo: string | undefined;
  private lastMetrics: Flat | undefined;
  private cpuSamples = new Map<string, { ns: number; at: number }>();
  private timer: TimerHandle | undefined;
  private offOnline: (() => void) | undefined;
  private stopped = true;

  constructor(private readonly o: ReporterOptions) {}

  start(): void {
    this.stopped = false;
    this.offOnline = this.o.transport.onOnline(() => void this.onOnline());
    if (this.o.metricsIntervalMs !== 0) this.scheduleMetrics(0);
    if (this.o.transport.online) void this.onOnline();
  }

  /** No new sample starts; one in flight is waited for (it writes to the database being closed next). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.offOnline?.();
    if (this.timer) this.o.clock.clearTimeout(this.timer);
    await this.sampling;
  }

  async onOnline(): Promise<void> {
    try {
      await this.reportInfo(true);
      await this.reportState(true);
      await this.o.outbox.drain(this.o.transport);
    } catch (err) {
      this.o.log.warn({ err: errorMessage(err) }, 'reporting after reconnect failed');
    }
  }

  async currentState(): Promise<ReportedState> {
    const { store } = this.o;
    const cur = store.getTarget('current');
    const prev = store.getTarget('previous');
    const state = await this.o.reconciler.gather(cur?.target ?? emptyTarget(), prev?.target);
    const lastErrors = new Map<string, string>();
    for (const r of store.containers()) if (r.lastError) lastErrors.set(r.id, r.lastError);
    return buildReportedState({
      target: cur?.target,
      targetStatus: cur?.status,
      targetReason: cur?.reason,
      previous: prev?.target,
      waiting: this.o.reconciler.waiting,
      retry: this.o.reconciler.retry,
      containers: state.containers,
      lastErrors,
      apps: store.apps(),
      agent: this.o.agent?.(),
    });
  }

  /** Publish the reported state (retained) if it changed since the last publish, or when forced. */
  async reportState(force = false): Promise<boolean> {
    if (!this.o.transport.online) return false;
    const state = await this.currentState();
    const s = canonicalJson(state);
    if (!force && s === this.lastState) return false;
    await this.o.transport.publish('state', state, { retain: true });
    this.lastState = s;
    return true;
  }

  async reportInfo(force = false): Promise<boolean> {
    if (!this.o.transport.online) return false;
    const info = { ...(await collectDeviceInfo(this.o.sys)), arch: process.arch };
    const s = canonicalJson(info);
    if (!force && s === this.lastInfo) return false;
    await this.o.transport.publish('info', info, { retain: true });
    this.lastInfo = s;
    return true;
  }

  private async statsOf(c: EngineContainer): Promise<CgroupStats> {
    if (this.o.containerStats) return this.o.containerStats(c);
    if (c.cgroupPath) {
      try {
        return await readCgroupStats(c.cgroupPath, this.o.cgroupRoot);
      } catch {
        // fall through to the engine
      }
    }
    return this.o.engine.stats(c.id);
  }

  /** Sample metrics; queue them in the outbox when they moved beyond the thresholds. Returns the changed keys. */
  async sampleMetrics(): Promise<string[]> {
    const device = await collectDeviceMetrics(this.o.stateDir, this.o.sys);
    const containers: Record<string, { cpuPercent: number; memoryBytes: number }> = {};
    const now = this.o.clock.now();
    const seen = new Set<string>();
    for (const c of await this.o.engine.list()) {
      if (c.status !== 'running') continue;
      seen.add(c.id);
      try {
        const s = await this.statsOf(c);
        const prev = this.cpuSamples.get(c.id);
        const sample = { ns: s.cpuUsageNs, at: now };
        this.cpuSamples.set(c.id, sample);
        containers[c.id] = { cpuPercent: prev ? cpuPercent(prev, sample) : 0, memoryBytes: s.memoryBytes };
      } catch (err) {
        this.o.log.debug({ id: c.id, err: errorMessage(err) }, 'no stats for container');
      }
    }
    for (const id of this.cpuSamples.keys()) if (!seen.has(id)) this.cpuSamples.delete(id);
    const metrics = { ...device, containers };
    const flat = flatten(metrics);
    // network counters grow forever; they ride along but never trigger a send on their own
    const interesting = Object.fromEntries(Object.entries(flat).filter(([k]) => !k.startsWith('network.')));
    const changed = changedKeys(this.lastMetrics, interesting, this.o.thresholds ?? DEFAULT_THRESHOLDS);
    if (changed.length > 0) {
      this.o.outbox.enqueue('metrics', { at: now, ...metrics });
      this.lastMetrics = interesting;
      if (this.o.transport.online) await this.o.outbox.drain(this.o.transport);
    }
    return changed;
  }

  /** the metrics sample running now, if any */
  private sampling: Promise<void> | undefined;

  private scheduleMetrics(ms: number) {
    if (this.stopped) return;
    this.timer = this.o.clock.setTimeout(() => {
      this.sampling = (async () => {
        try {
          await this.sampleMetrics();
          await this.reportInfo();
        } catch (err) {
          this.o.log.warn({ err: errorMessage(err) }, 'metrics sample failed');
        }
        this.sampling = undefined;
        this.scheduleMetrics(this.o.metricsIntervalMs ?? 60_000);
      })();
    }, ms);
  }
}
