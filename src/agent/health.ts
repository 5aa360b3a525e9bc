/**
 * Health checks of running containers. Where a check comes from, in order: the service's `healthcheck` in
 * the target, the image config's Healthcheck (Docker's Test: CMD / CMD-SHELL / NONE), else "stays
 * running" (status `none`: running is all we know). Probes: a command run inside the container through
 * the engine's exec, a TCP connect, an HTTP GET (2xx/3xx), each with a timeout.
 *
 * Semantics follow Docker's: `starting` until the first success; failures during the start period do not
 * count; `retries` consecutive failures make it `unhealthy`; one success makes it `healthy` again. A change
 * is recorded in SQLite and reported to the reconciler (hand-over, depends_on healthy, health window).
 */
import * as http from 'node:http';
import * as net from 'node:net';
import type { HealthStatus } from '../core/state.js';
import type { Healthcheck, Probe, Service } from '../core/target.js';
import { errorMessage } from '../lib/errors.js';
import type { Clock, ContainerEngine, EngineContainer, ImageHealthcheck, TimerHandle } from './ports.js';

export interface HealthState {
  status: HealthStatus;
  failures: number;
  lastOutput?: string | undefined;
}

/** Pure: the state after one probe result. */
export function nextHealth(
  s: HealthState,
  ok: boolean,
  inStartPeriod: boolean,
  retries: number,
  output?: string,
): HealthState {
  if (ok) return { status: 'healthy', failures: 0, lastOutput: output };
  if (inStartPeriod && s.status !== 'healthy') return { ...s, lastOutput: output };
  const failures = s.failures + 1;
  return { status: failures >= retries ? 'unhealthy' : s.status, failures, lastOutput: output };
}

/** The check a service gets: its own, the image's, or "stays running". */
export function resolveHealthcheck(spec: Service, image: ImageHealthcheck | undefined): Healthcheck {
  if (spec.healthcheck) return spec.healthcheck;
  const d = { intervalMs: 30_000, timeoutMs: 30_000, retries: 3, startPeriodMs: 0 };
  const timing = {
    intervalMs: image?.intervalMs || d.intervalMs,
    timeoutMs: image?.timeoutMs || d.timeoutMs,
    retries: image?.retries || d.retries,
    startPeriodMs: image?.startPeriodMs ?? d.startPeriodMs,
  };
  const [kind, ...rest] = image?.test ?? [];
  let probe: Probe = { type: 'running' };
  if (kind === 'NONE') probe = { type: 'none' };
  else if (kind === 'CMD' && rest.length > 0) probe = { type: 'exec', command: rest };
  else if (kind === 'CMD-SHELL' && rest[0]) probe = { type: 'shell', command: rest[0] };
  return { probe, ...timing };
}

export interface NetProbes {
  tcp(host: string, port: number, timeoutMs: number): Promise<void>;
  http(host: string, port: number, path: string, timeoutMs: number): Promise<void>;
}

export const realNetProbes: NetProbes = {
  tcp: (host, port, timeoutMs) =>
    new Promise((resolve, reject) => {
      const sock = net.connect({ host, port });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`tcp ${host}:${port} timed out`));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.end();
        resolve();
      });
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    }),
  http: (host, port, path, timeoutMs) =>
    new Promise((resolve, reject) => {
      const req = http.get({ host, port, path, timeout: timeoutMs }, (res) => {
        res.resume();
        const code = res.statusCode ?? 0;
        if (code >= 200 && code < 400) resolve();
        else reject(new Error(`http ${path} answered ${code}`));
      });
      req.on('timeout', () => req.destroy(new Error(`http ${host}:${port}${path} timed out`)));
      req.on('error', reject);
    }),
};

/** Run one probe; resolves to ok + output. */
export async function runProbe(
  probe: Probe,
  c: Pick<EngineContainer, 'id' | 'ip' | 'status'>,
  timeoutMs: number,
  engine: ContainerEngine,
  probes: NetProbes,
): Promise<{ ok: boolean; output: string }> {
  try {
    switch (probe.type) {
      case 'none':
      case 'running':
        return { ok: c.status === 'running', output: c.status };
      case 'exec':
      case 'shell': {
        const argv = probe.type === 'exec' ? probe.command : ['/bin/sh', '-c', probe.command];
        const r = await engine.exec(c.id, argv, { timeoutMs });
        return { ok: r.exitCode === 0, output: `${r.stdout}${r.stderr}`.slice(-512) || `exit ${r.exitCode}` };
      }
      case 'tcp':
        await probes.tcp(probe.host ?? c.ip ?? '127.0.0.1', probe.port, timeoutMs);
        return { ok: true, output: `tcp ${probe.port} open` };
      case 'http':
        await probes.http(probe.host ?? c.ip ?? '127.0.0.1', probe.port, probe.path, timeoutMs);
        return { ok: true, output: `http ${probe.port}${probe.path} ok` };
    }
  } catch (err) {
    return { ok: false, output: errorMessage(err) };
  }
}

interface Watch {
  check: Healthcheck;
  state: HealthState;
  startedAt: number;
  timer?: TimerHandle | undefined;
  running: boolean;
}

export interface HealthMonitorOptions {
  engine: ContainerEngine;
  clock: Clock;
  probes?: NetProbes;
  /** health changed: record it and let the reconciler re-plan */
  onChange: (id: string, status: HealthStatus, output: string | undefined) => void;
}

/**
 * Watches the running managed containers the reconciler hands it after every gather (`sync`). One probe
 * timer per container with a real check; containers that stop or go away are dropped.
 */
export class HealthMonitor {
  private readonly watches = new Map<string, Watch>();
  private closed = false;

  constructor(private readonly opts: HealthMonitorOptions) {}

  status(id: string): HealthStatus {
    return this.watches.get(id)?.state.status ?? 'none';
  }

  sync(running: ReadonlyArray<{ container: EngineContainer; check: Healthcheck }>): void {
    const keep = new Set<string>();
    for (const { container, check } of running) {
      if (container.status !== 'running' || check.probe.type === 'none' || check.probe.type === 'running')
        continue;
      keep.add(container.id);
      if (this.watches.has(container.id)) continue;
      const w: Watch = {
        check,
        state: { status: 'starting', failures: 0 },
        startedAt: container.startedAt ?? this.opts.clock.now(),
        running: false,
      };
      this.watches.set(container.id, w);
      this.opts.onChange(container.id, 'starting', undefined);
      this.schedule(container, w, Math.min(check.intervalMs, 1000));
    }
    for (const [id, w] of this.watches) {
      if (!keep.has(id)) {
        if (w.timer) this.opts.clock.clearTimeout(w.timer);
        this.watches.delete(id);
      }
    }
  }

  private schedule(c: EngineContainer, w: Watch, ms: number) {
    if (this.closed) return;
    w.timer = this.opts.clock.setTimeout(() => void this.probe(c, w), ms);
  }

  private async probe(c: EngineContainer, w: Watch): Promise<void> {
    if (this.closed || this.watches.get(c.id) !== w || w.running) return;
    w.running = true;
    const r = await runProbe(
      w.check.probe,
      c,
      w.check.timeoutMs,
      this.opts.engine,
      this.opts.probes ?? realNetProbes,
    );
    w.running = false;
    if (this.watches.get(c.id) !== w) return;
    const inStart = this.opts.clock.now() - w.startedAt < w.check.startPeriodMs;
    const before = w.state.status;
    w.state = nextHealth(w.state, r.ok, inStart, w.check.retries, r.output);
    if (w.state.status !== before) this.opts.onChange(c.id, w.state.status, w.state.lastOutput);
    this.schedule(c, w, w.check.intervalMs);
  }

  close(): void {
    this.closed = true;
    for (const w of this.watches.values()) if (w.timer) this.opts.clock.clearTimeout(w.timer);
    this.watches.clear();
  }
}
