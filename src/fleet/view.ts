/**
 * The fleet's view of a device, derived from what the device reported (pure). The fleet never shows what it
 * assumes it published: `status` comes from the device's retained state and the rejections it reported;
 * the target the fleet expects to apply is shown beside it, never instead of it.
 *
 * Several groups per device: a device follows its groups in the order it lists them (enrollment token,
 * `berth agent --group a --group b`). The target that applies is the device's own target when it has one
 * (an "override"), else the target of the FIRST of its groups that has one; the other groups' targets are
 * fallbacks, never merged. The agent applies exactly this rule (src/agent/adapters/device-agent.ts).
 * Clearing the override (`fleet deploy --device d --clear`) makes the group rule apply again.
 */
import type { TargetRef, WireReportedState } from '../transport/reports.js';

export const DEVICE_STATUSES = [
  'unknown',
  'converged',
  'applying',
  'waiting',
  'failed',
  'rolled-back',
  'rejected',
] as const;
export type DeviceStatus = (typeof DEVICE_STATUSES)[number];

export interface ScopeKey {
  kind: 'device' | 'group';
  id: string;
}

/** A target version the fleet published for a scope; `cleared` = a signed "no target here any more". */
export interface ScopeVersion extends ScopeKey {
  version: number;
  cleared: boolean;
}

export interface Rejection extends ScopeKey {
  version: number | null;
  at: number;
}

/** "device 3", "group g1 7", "local 5": how versions are shown everywhere. */
export function formatTargetRef(ref: Pick<TargetRef, 'kind' | 'id' | 'version'> | null | undefined): string {
  if (!ref) return '-';
  return ref.kind === 'group' ? `group ${ref.id} ${ref.version}` : `${ref.kind} ${ref.version}`;
}

/** Whether the agent's reason says the current target is a rollback (src/agent/store.ts writes it). */
export function isRollbackReason(reason: string | undefined | null): boolean {
  return typeof reason === 'string' && reason.startsWith('rollback from ');
}

/**
 * The fleet status of a device from its reported state and its last rejection:
 *   rejected    the device refused the newest target it was sent (wrong key, bad schema), after its last state
 *   failed      the agent gave the target up with nothing to roll back to
 *   rolled-back the target failed its health window; the device went back to the previous one
 *   waiting     applying, blocked (update lock, hand-over, dependencies, backoff)
 *   applying    received or being applied
 *   converged   running the target (in or past its health window)
 *   unknown     nothing reported yet
 */
export function deviceStatus(state: WireReportedState | undefined, rejection?: Rejection): DeviceStatus {
  // a rejection stands until the device applies that scope at that version or later (the store clears it)
  if (rejection) return 'rejected';
  if (!state) return 'unknown';
  const t = state.target;
  if (t.status === 'failed') return 'failed';
  if (isRollbackReason(t.reason)) return 'rolled-back';
  if (t.status === 'converged' || t.status === 'healthy') return 'converged';
  if (t.waiting && t.waiting.length > 0) return 'waiting';
  if (t.status === null && !t.applied) return Object.keys(state.apps).length ? 'applying' : 'unknown';
  return 'applying';
}

/** The most telling error in a reported state: the target's reason on failure/rollback, else an app's or a service's. */
export function lastErrorOf(state: WireReportedState): string | undefined {
  const t = state.target;
  if ((t.status === 'failed' || isRollbackReason(t.reason)) && t.reason) return t.reason;
  for (const app of Object.values(state.apps)) {
    if (app.lastError && app.status === 'error') return app.lastError;
    for (const s of Object.values(app.services)) if (s.lastError) return s.lastError;
  }
  return undefined;
}

/**
 * The scope whose target applies to a device (see the file comment): its own unless cleared, else the
 * first of its groups, in order, that has an uncleared target.
 */
export function effectiveTarget(
  deviceId: string,
  groups: readonly string[],
  targetOf: (scope: ScopeKey) => ScopeVersion | undefined,
): ScopeVersion | undefined {
  const own = targetOf({ kind: 'device', id: deviceId });
  if (own && !own.cleared) return own;
  for (const g of groups) {
    const t = targetOf({ kind: 'group', id: g });
    if (t && !t.cleared) return t;
  }
  return undefined;
}

/** Where one device stands with one deployment (scope + version). */
export const PROGRESS_STATES = [
  'converged',
  'verifying',
  'applying',
  'waiting',
  'rejected',
  'failed',
  'superseded',
] as const;
export type ProgressState = (typeof PROGRESS_STATES)[number];

export interface DeviceProgress {
  deviceId: string;
  state: ProgressState;
  online: boolean;
  reported: string;
  detail?: string | undefined;
}

export interface DeviceSnapshot {
  id: string;
  online: boolean;
  applied: TargetRef | null;
  targetStatus: string | null;
  reason?: string | null | undefined;
  waiting?: readonly string[] | undefined;
  lastError?: string | null | undefined;
  stateAt?: number | null | undefined;
  rejection?: Rejection | undefined;
  /** the scope that applies to this device now (effectiveTarget) */
  expected?: ScopeVersion | undefined;
  /** the agent version it runs, and its latest self-update (docs/self-update.md) */
  agentVersion?: string | null | undefined;
  agentUpdate?: { version: string; phase: string; reason?: string | undefined } | null | undefined;
}

/** A device's stored row as deviceProgress reads it. */
export function snapshotOf(
  d: Pick<DeviceSnapshot, 'id' | 'online' | 'applied' | 'targetStatus' | 'lastError'> & {
    targetReason: string | null;
    waiting: readonly string[];
    rejection: Rejection | null;
    agentVersion?: string | null | undefined;
    agentUpdate?: DeviceSnapshot['agentUpdate'];
  },
  expected: ScopeVersion | undefined,
): DeviceSnapshot {
  return {
    id: d.id,
    online: d.online,
    applied: d.applied,
    targetStatus: d.targetStatus,
    reason: d.targetReason,
    waiting: d.waiting,
    lastError: d.lastError,
    ...(d.rejection ? { rejection: d.rejection } : {}),
    expected,
    agentVersion: d.agentVersion,
    agentUpdate: d.agentUpdate,
  };
}

/**
 * How one device stands with a deployment `want` (pure; `deploy --wait` and the rollout driver poll it):
 *   rejected    it refused exactly this version (signature, schema)
 *   failed      it ran this version and rolled back or gave up
 *   converged   it runs this version (or a later one of the same scope) and it passed its health window
 *   verifying   it runs this version, in its health window (a crash now still rolls it back)
 *   superseded  another scope now applies to it (an override, an earlier group): this deployment never will
 *   waiting / applying  not there yet
 */
export function deviceProgress(
  want: ScopeKey & { version: number; agent?: string | undefined },
  d: DeviceSnapshot,
): DeviceProgress {
  const apps = appsProgress(want, d);
  if (apps.state !== 'converged' || !want.agent || d.agentVersion === want.agent) return apps;
  // the apps are there; the agent release the target names is not (yet)
  const u = d.agentUpdate?.version === want.agent ? d.agentUpdate : undefined;
  if (u && (u.phase === 'rolled-back' || u.phase === 'refused'))
    return {
      ...apps,
      state: 'failed',
      detail: `agent ${want.agent} ${u.phase}${u.reason ? `: ${u.reason}` : ''}`,
    };
  return { ...apps, state: 'applying', detail: `agent ${want.agent}: ${u ? u.phase : 'not started'}` };
}

function appsProgress(want: ScopeKey & { version: number }, d: DeviceSnapshot): DeviceProgress {
  const base = { deviceId: d.id, online: d.online, reported: formatTargetRef(d.applied) };
  const rej = d.rejection;
  if (rej && rej.kind === want.kind && rej.id === want.id && (rej.version ?? want.version) >= want.version)
    return { ...base, state: 'rejected', detail: d.lastError ?? 'target rejected by the device' };
  const a = d.applied;
  const same = a && a.kind === want.kind && a.id === want.id;
  if (same && a.version >= want.version) {
    if (d.targetStatus === 'failed') return { ...base, state: 'failed', detail: d.reason ?? undefined };
    if (a.version === want.version && d.targetStatus === 'healthy') return { ...base, state: 'converged' };
    if (a.version === want.version && d.targetStatus === 'converged')
      return { ...base, state: 'verifying', detail: 'in its health window' };
    if (a.version > want.version) return { ...base, state: 'converged', detail: 'runs a newer version' };
  }
  // a rollback away from the wanted version: the agent names it in its reason
  if (d.reason && isRollbackReason(d.reason) && d.reason.startsWith(`rollback from ${formatWant(want)}:`))
    return { ...base, state: 'failed', detail: d.reason };
  if (d.expected && (d.expected.kind !== want.kind || d.expected.id !== want.id))
    return { ...base, state: 'superseded', detail: `${formatScope(d.expected)} applies to this device` };
  if (d.waiting && d.waiting.length > 0) return { ...base, state: 'waiting', detail: d.waiting.join('; ') };
  return { ...base, state: 'applying', detail: d.lastError ?? undefined };
}

function formatWant(w: ScopeKey & { version: number }): string {
  return formatTargetRef(w);
}

function formatScope(s: ScopeKey): string {
  return s.kind === 'device' ? 'its own target' : `group ${s.id}'s target`;
}

export interface ProgressSummary {
  total: number;
  converged: number;
  pending: number;
  failed: number;
  devices: DeviceProgress[];
  /** every device has an answer (converged, rejected, failed or superseded) */
  done: boolean;
  /** some device rejected or failed */
  ok: boolean;
}

export function summarizeProgress(devices: DeviceProgress[]): ProgressSummary {
  let converged = 0;
  let failed = 0;
  let pending = 0;
  for (const d of devices) {
    if (d.state === 'converged') converged++;
    else if (d.state === 'rejected' || d.state === 'failed') failed++;
    else if (d.state !== 'superseded') pending++;
  }
  return {
    total: devices.length,
    converged,
    failed,
    pending,
    devices,
    done: pending === 0,
    ok: failed === 0,
  };
}
