/**
 * The fleet server's in-process event bus: what happened, typed, for whoever listens — the HTTP side's
 * Server-Sent Events stream, `deploy --wait` inside the server, the rollout driver. Synchronous fan-out:
 * a listener that needs to do slow work queues it (and bounds its queue); a listener that throws is
 * logged and does not stop the others.
 */
import type { Logger } from '../lib/logger.js';
import type { TargetRef } from '../transport/reports.js';
import type { RolloutState } from './rollouts/machine.js';
import type { DeviceStatus, ProgressState, ScopeKey } from './view.js';

/** What happened to a rollout (the `change` of a `rollout` event). */
export type RolloutChange =
  | 'created'
  | 'started'
  | 'phase'
  | 'soaking'
  | 'waiting-approval'
  | 'paused'
  | 'resumed'
  | 'succeeded'
  | 'aborted'
  | 'superseded'
  | 'rolled-back'
  | 'settled';

/** One phase's counts, as rollout events carry them. */
export interface RolloutPhaseProgress {
  index: number;
  size: number;
  queued: number;
  pending: number;
  offline: number;
  converged: number;
  failed: number;
  superseded: number;
}

export type FleetEvent =
  | { type: 'device.online'; deviceId: string; at: number }
  | { type: 'device.offline'; deviceId: string; at: number }
  | {
      type: 'device.state';
      deviceId: string;
      at: number;
      status: DeviceStatus;
      applied: TargetRef | null;
      lastError: string | null;
    }
  | { type: 'device.event'; deviceId: string; at: number; id: number; event: Record<string, unknown> }
  | {
      type: 'deployment';
      at: number;
      id: number;
      scope: ScopeKey;
      version: number;
      cleared: boolean;
      createdBy: string | null;
    }
  | {
      /** how one device stands with the target that applies to it, after each report it sends */
      type: 'deployment.progress';
      deviceId: string;
      at: number;
      scope: ScopeKey;
      version: number;
      state: ProgressState;
      detail?: string | undefined;
    }
  | { type: 'device.revoked'; deviceId: string; at: number }
  | { type: 'device.enrolled'; deviceId: string; at: number }
  | {
      /** a rollout changed state or phase */
      type: 'rollout';
      at: number;
      rolloutId: number;
      state: RolloutState;
      phase: number;
      reason: string | null;
      change: RolloutChange;
    }
  | {
      /** a rollout's counts moved (coalesced: at most a few per second per rollout) */
      type: 'rollout.progress';
      at: number;
      rolloutId: number;
      state: RolloutState;
      phase: number;
      phases: RolloutPhaseProgress[];
      rollback: { state: 'none' | 'pending' | 'sent' | 'done'; moved: number; returned: number };
    }
  | {
      /** one device's outcome in a rollout changed */
      type: 'rollout.device';
      at: number;
      rolloutId: number;
      deviceId: string;
      phase: number;
      outcome: 'queued' | 'pending' | 'converged' | 'failed' | 'superseded';
      detail?: string | undefined;
    };

export type FleetEventType = FleetEvent['type'];

export class FleetBus {
  private readonly listeners = new Set<(e: FleetEvent) => void>();

  constructor(private readonly log?: Logger) {}

  subscribe(fn: (e: FleetEvent) => void): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  emit(e: FleetEvent): void {
    for (const fn of this.listeners) {
      try {
        fn(e);
      } catch (err) {
        this.log?.warn({ err: (err as Error).message, type: e.type }, 'fleet event listener failed');
      }
    }
  }

  get size(): number {
    return this.listeners.size;
  }
}
