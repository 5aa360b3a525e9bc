/**
 * The device's current state as the planner sees it: plain data gathered from the ports (engine, images,
 * volumes, networks, update locks) by the reconciler before every plan. Nothing here is live.
 */

export const CONTAINER_STATUSES = ['created', 'running', 'stopped'] as const;
export type ContainerStatus = (typeof CONTAINER_STATUSES)[number];

/** `none`: the service has no health check, so "running" is all we know. */
export type HealthStatus = 'none' | 'starting' | 'healthy' | 'unhealthy';

export interface CurrentContainer {
  id: string;
  app: string;
  service: string;
  /** specHash() of the service spec the container was created from */
  specHash: string;
  image: string;
  status: ContainerStatus;
  exitCode?: number | undefined;
  startedAt?: number | undefined;
  finishedAt?: number | undefined;
  createdAt?: number | undefined;
  health: HealthStatus;
  /** restarts done by the restart policy since the container was created (reset after a long run) */
  restarts: number;
  /** stopped through the local API or a command: the restart policy leaves it alone */
  stoppedByUser?: boolean | undefined;
  /** services of the same app this one depends on (so removal goes in reverse order) */
  dependsOn?: string[] | undefined;
  labels?: Record<string, string> | undefined;
}

export interface CurrentImage {
  /** all blobs present in the content store */
  fetched: boolean;
  /** every layer unpacked into committed snapshots */
  unpacked: boolean;
}

export interface AppResource {
  app: string;
  name: string;
}

export interface CurrentState {
  /** containers that belong to target-managed apps (ad-hoc `berth run` containers are not listed) */
  containers: CurrentContainer[];
  /** by image reference as written in targets */
  images: Record<string, CurrentImage>;
  volumes: AppResource[];
  networks: AppResource[];
  /** apps whose update lock is held right now */
  locks: Record<string, boolean>;
  /** when an app's container last signalled `handover-complete` (ms since epoch), by app */
  handovers?: Record<string, number> | undefined;
}

export const emptyState = (): CurrentState => ({
  containers: [],
  images: {},
  volumes: [],
  networks: [],
  locks: {},
});
