/**
 * Steps: what the planner asks the executors to do. A discriminated union on `kind`; src/agent/executors.ts
 * holds one executor per kind in a record typed over `Step['kind']`, so a new kind without an executor
 * does not compile. Every step is plain data (loggable, storable as intent in SQLite).
 */
import type { Service } from './target.js';

interface ContainerRef {
  id: string;
  app: string;
  service: string;
}

export type Step =
  /** bring every missing blob of an image into the content store */
  | { kind: 'fetch'; image: string }
  /** unpack an image's layers into committed snapshots */
  | { kind: 'unpack'; image: string }
  | { kind: 'createVolume'; app: string; name: string; labels: Record<string, string> }
  | { kind: 'removeVolume'; app: string; name: string }
  | { kind: 'createNetwork'; app: string; name: string; internal: boolean; labels: Record<string, string> }
  | { kind: 'removeNetwork'; app: string; name: string }
  | { kind: 'create'; app: string; service: string; name: string; specHash: string; spec: Service }
  /** restart: started again by the restart policy (counts as a restart) */
  | ({ kind: 'start'; restart: boolean } & ContainerRef)
  /** graceful: stop signal, then SIGKILL after timeoutMs */
  | ({ kind: 'stop'; timeoutMs: number; signal?: string | undefined } & ContainerRef)
  /** immediate SIGKILL (hand-over timeout reached) */
  | ({ kind: 'kill' } & ContainerRef)
  | ({ kind: 'remove' } & ContainerRef)
  /** berth-level metadata (labels) changed; the running process is untouched */
  | ({ kind: 'updateMetadata'; labels: Record<string, string> } & ContainerRef)
  /** delete-then-download frees the old image before fetching the new one */
  | { kind: 'removeImage'; image: string }
  /** collect images, snapshots and blobs no kept target references */
  | { kind: 'cleanup'; keepImages: string[]; images: string[] }
  /** nothing to do now; `until` is when waiting could end (epoch ms), when known */
  | { kind: 'wait'; reason: string; until?: number | undefined }
  | { kind: 'noop' };

export type StepKind = Step['kind'];
export type StepOf<K extends StepKind> = Extract<Step, { kind: K }>;

/** Steps that only wait: a plan made of these alone means "not converged, nothing to do yet". */
export const isIdleStep = (s: Step): boolean => s.kind === 'wait' || s.kind === 'noop';

/** One line per step, for logs, events and test failure messages. */
export function describeStep(s: Step): string {
  switch (s.kind) {
    case 'fetch':
    case 'unpack':
    case 'removeImage':
      return `${s.kind} ${s.image}`;
    case 'createVolume':
    case 'removeVolume':
    case 'createNetwork':
    case 'removeNetwork':
      return `${s.kind} ${s.app}/${s.name}`;
    case 'create':
      return `create ${s.app}/${s.service} (${s.name})`;
    case 'start':
      return `${s.restart ? 'restart' : 'start'} ${s.app}/${s.service} (${s.id})`;
    case 'stop':
    case 'kill':
    case 'remove':
    case 'updateMetadata':
      return `${s.kind} ${s.app}/${s.service} (${s.id})`;
    case 'cleanup':
      return `cleanup ${s.images.join(', ') || '(blobs and snapshots)'}`;
    case 'wait':
      return `wait: ${s.reason}`;
    case 'noop':
      return 'noop';
  }
}
