/**
 * Reported state and the "changed enough to send?" decision. Pure. The reported state is retained per
 * device (apps → services: image, state, health, restarts, last error) plus where the rollout stands;
 * metrics are sent only when some value moved beyond its threshold, to spare the link and the broker.
 */
import type { RetryState } from '../lib/backoff.js';
import type { UpdateStatus } from './self-update.js';
import type { CurrentContainer, HealthStatus } from './state.js';
import { originOf, specHash, type Target, type TargetOrigin } from './target.js';

export const REPORT_SCHEMA = 1;

export interface ServiceReport {
  image: string;
  state: 'running' | 'stopped' | 'created' | 'absent' | 'updating';
  health: HealthStatus;
  restarts: number;
  containerId?: string | undefined;
  exitCode?: number | undefined;
  lastError?: string | undefined;
}

export interface AppReport {
  status: string;
  lastError?: string | undefined;
  services: Record<string, ServiceReport>;
}

export interface ReportedState {
  schema: typeof REPORT_SCHEMA;
  target: {
    /** the target applied, as the operator names it (device 3, group g1 7); null before the first */
    applied: TargetOrigin | null;
    status: string | null;
    reason?: string | undefined;
    /** the target this one replaced, which a rollback returns to */
    previous: TargetOrigin | null;
    /** why the update is not progressing (update lock, hand-over, dependencies), while it waits */
    waiting?: string[] | undefined;
    /** the next reconcile try after a failed or waiting one: when, which attempt, the last error */
    retry?: RetryState | undefined;
  };
  apps: Record<string, AppReport>;
  /** the agent itself: the version running, and where its latest self-update stands */
  agent?: AgentReport | undefined;
}

export interface AgentReport {
  version: string;
  update?: UpdateStatus | undefined;
}

export interface ReportInput {
  target: Target | undefined;
  targetStatus?: string | undefined;
  targetReason?: string | undefined;
  previous?: Target | undefined;
  waiting?: readonly string[] | undefined;
  retry?: RetryState | undefined;
  containers: readonly CurrentContainer[];
  lastErrors: ReadonlyMap<string, string>;
  apps: ReadonlyArray<{ name: string; status: string; lastError?: string }>;
  agent?: AgentReport | undefined;
}

export function buildReportedState(i: ReportInput): ReportedState {
  const apps: Record<string, AppReport> = {};
  const appRecord = new Map(i.apps.map((a) => [a.name, a]));
  const names = new Set([...Object.keys(i.target?.apps ?? {}), ...i.containers.map((c) => c.app)]);
  for (const appName of [...names].sort()) {
    const app = i.target?.apps[appName];
    const rec = appRecord.get(appName);
    const services: Record<string, ServiceReport> = {};
    const svcNames = new Set([
      ...Object.keys(app?.services ?? {}),
      ...i.containers.filter((c) => c.app === appName).map((c) => c.service),
    ]);
    for (const svc of [...svcNames].sort()) {
      const spec = app?.services[svc];
      const mine = i.containers.filter((c) => c.app === appName && c.service === svc);
      const h = spec ? specHash(spec) : undefined;
      const fresh =
        mine.find((c) => c.specHash === h && c.status === 'running') ?? mine.find((c) => c.specHash === h);
      const shown = fresh ?? mine.find((c) => c.status === 'running') ?? mine[0];
      let state: ServiceReport['state'] = shown ? shown.status : 'absent';
      if (spec && !fresh && mine.length > 0) state = 'updating';
      services[svc] = {
        image: shown?.image ?? spec?.image ?? '',
        state,
        health: shown?.health ?? 'none',
        restarts: shown?.restarts ?? 0,
        ...(shown ? { containerId: shown.id } : {}),
        ...(shown?.status === 'stopped' && shown.exitCode !== undefined ? { exitCode: shown.exitCode } : {}),
        ...(shown && i.lastErrors.get(shown.id) ? { lastError: i.lastErrors.get(shown.id) } : {}),
      };
    }
    apps[appName] = {
      status: rec?.status ?? (app ? 'applying' : 'removing'),
      ...(rec?.lastError ? { lastError: rec.lastError } : {}),
      services,
    };
  }
  return {
    schema: REPORT_SCHEMA,
    target: {
      applied: i.target ? originOf(i.target) : null,
      status: i.targetStatus ?? null,
      ...(i.targetReason ? { reason: i.targetReason } : {}),
      previous: i.previous ? originOf(i.previous) : null,
      ...(i.waiting && i.waiting.length > 0 ? { waiting: [...i.waiting] } : {}),
      ...(i.retry
        ? {
            retry: {
              at: i.retry.at,
              attempt: i.retry.attempt,
              ...(i.retry.lastError ? { lastError: i.retry.lastError.slice(0, 4096) } : {}),
            },
          }
        : {}),
    },
    apps,
    ...(i.agent ? { agent: i.agent } : {}),
  };
}

export type Flat = Record<string, string | number | boolean | null>;

/** {a: {b: 1}} → {"a.b": 1}; arrays by index. */
export function flatten(v: unknown, prefix = '', out: Flat = {}): Flat {
  if (v === null || typeof v !== 'object') {
    out[prefix] = (v === undefined ? null : v) as string | number | boolean | null;
    return out;
  }
  const entries = Array.isArray(v) ? v.map((x, i) => [String(i), x] as const) : Object.entries(v);
  for (const [k, x] of entries) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  return out;
}

export interface Thresholds {
  /** relative change that counts (0.1 = 10 %) */
  relative: number;
  /** absolute change that counts, by the last segment of the key (e.g. cpuPercent: 5) */
  absolute: Record<string, number>;
}

export const DEFAULT_THRESHOLDS: Thresholds = {
  relative: 0.1,
  absolute: { cpuPercent: 10, temperatureC: 3, memoryBytes: 16 * 1024 * 1024, usedBytes: 64 * 1024 * 1024 },
};

/**
 * Keys whose value changed enough to be worth sending: any non-numeric change, a key appearing or going,
 * or a number moving by more than its absolute threshold AND more than the relative one (both, so a value
 * near zero does not flap on tiny absolute moves, and a huge value does not hide a big absolute move).
 */
export function changedKeys(
  prev: Flat | undefined,
  next: Flat,
  t: Thresholds = DEFAULT_THRESHOLDS,
): string[] {
  if (!prev) return Object.keys(next).sort();
  const out: string[] = [];
  for (const k of new Set([...Object.keys(prev), ...Object.keys(next)])) {
    const a = prev[k];
    const b = next[k];
    if (!(k in prev) || !(k in next)) out.push(k);
    else if (typeof a === 'number' && typeof b === 'number') {
      const diff = Math.abs(a - b);
      const abs = t.absolute[k.slice(k.lastIndexOf('.') + 1)] ?? 0;
      if (diff > abs && diff > t.relative * Math.abs(a)) out.push(k);
    } else if (a !== b) out.push(k);
  }
  return out.sort();
}
