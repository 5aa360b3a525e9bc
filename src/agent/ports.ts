/**
 * The agent's narrow view of the rest of berth. The reconciler, executors, health monitor, reporter and
 * local API are written against these interfaces only; the composition root (src/cli/agent.ts, wired by
 * the lead) hands in the real ones:
 *
 *   ContainerEngine  ← src/runtime/ (bundle builder + berth-runtime/runc + per-container monitor)
 *   ImageService     ← src/content/ + src/snapshots/ + src/transport/ (fetch over MQTT, unpack, GC)
 *   VolumeService    ← host directories under <state-dir>/volumes/<app>/<name>
 *   NetworkService   ← src/runtime/ networking (bridge, IPAM)
 *   Transport        ← src/transport/ (the agent's MQTT connection; channels map to topics there)
 *
 * Tests use in-memory fakes of these (test/helpers/agent-fakes.ts). Lifecycle of a container through the
 * engine: create (bundle prepared, process not started) → start → stop|kill (exit recorded) → remove.
 * `list()` is the source of truth for what exists; the agent's own records (restarts, health, stopped by
 * the user) live in SQLite (src/agent/store.ts).
 */
import type { AppResource, ContainerStatus, CurrentImage } from '../core/state.js';
import type { Service } from '../core/target.js';

/** Labels berth puts on containers it manages for a target, so list() can say which app/service they are. */
export const LABEL_APP = 'io.berth.app';
export const LABEL_SERVICE = 'io.berth.service';
export const LABEL_SPEC_HASH = 'io.berth.spec-hash';
export const LABEL_DEPENDS_ON = 'io.berth.depends-on';

export interface EngineContainer {
  id: string;
  image: string;
  status: ContainerStatus;
  /** all labels: berth's io.berth.* ones and the app's */
  labels: Record<string, string>;
  exitCode?: number | undefined;
  startedAt?: number | undefined;
  finishedAt?: number | undefined;
  /** address to probe for TCP/HTTP health checks (bridge mode); host/none mode: undefined (use 127.0.0.1) */
  ip?: string | undefined;
  /** cgroup path relative to the hierarchy root, for metrics */
  cgroupPath?: string | undefined;
  command?: string[] | undefined;
  createdAt?: number | undefined;
  /** the runtime's own container id (directories, cgroup); `id` is the name the agent gave it */
  runtimeId?: string | undefined;
  /** published ports (bridge mode) */
  ports?: Array<{ hostIp?: string; hostPort: number; containerPort: number; protocol: string }> | undefined;
  oomKilled?: boolean | undefined;
}

/** One line of a container's output, as the monitor recorded it. */
export interface LogLine {
  stream: 'stdout' | 'stderr';
  log: string;
  /** when the monitor read it (RFC 3339, ns) */
  time?: string | undefined;
}

/** Which lines of a container's output: the last `tail` of those written in [since, until] (ms). */
export interface LogStreamOptions {
  tail?: number | undefined;
  since?: number | undefined;
  until?: number | undefined;
  /** keep streaming new lines until the container stops or `signal` aborts */
  follow: boolean;
  signal?: AbortSignal;
}

export interface CreateContainerRequest {
  /** container id = name (safe name) */
  name: string;
  image: string;
  /** the app's spec; the driver merges it with the image config into a runtime-spec bundle */
  spec: Service;
  labels: Record<string, string>;
  /** host paths of the spec's `volume` mounts, by volume name */
  volumePaths: Record<string, string>;
  /** host dir of the app's update lock, bind-mounted at UPDATE_LOCK_MOUNT */
  lockDir?: string | undefined;
  /** ad-hoc containers (`berth run --rootfs`): run this directory instead of the image's snapshot */
  rootfsDir?: string | undefined;
  /** ad-hoc containers (`berth run -d --rm`): removed when they exit */
  autoRemove?: boolean | undefined;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface ContainerStats {
  cpuUsageNs: number;
  memoryBytes: number;
  memoryLimitBytes?: number | undefined;
  pids?: number | undefined;
}

export interface ContainerEngine {
  list(): Promise<EngineContainer[]>;
  create(req: CreateContainerRequest): Promise<{ id: string }>;
  start(id: string): Promise<void>;
  /** stop signal (default SIGTERM), then SIGKILL after timeoutMs; resolves once the process is gone */
  stop(id: string, opts: { timeoutMs: number; signal?: string | undefined }): Promise<void>;
  kill(id: string, signal?: string): Promise<void>;
  remove(id: string, opts?: { force?: boolean }): Promise<void>;
  exec(
    id: string,
    argv: string[],
    opts: { timeoutMs: number; env?: Record<string, string>; cwd?: string; input?: string },
  ): Promise<ExecResult>;
  /** the last `tail` lines of the container's log (stdout and stderr interleaved) */
  logs(id: string, opts: { tail?: number }): Promise<string[]>;
  /**
   * The container's output line by line (the last `tail` lines first); with `follow`, new lines until the
   * container stops or `signal` aborts. Optional: the local API answers 501 for an engine without it.
   */
  streamLogs?(id: string, opts: LogStreamOptions, emit: (line: LogLine) => void): Promise<void>;
  stats(id: string): Promise<ContainerStats>;
  /** `berth inspect`: the container as docker-like JSON (see src/runtime/inspect.ts). Optional. */
  inspect?(id: string, extra: { health?: string | undefined }): Promise<unknown>;
  /** `berth top`: the container's processes, `ps -ef` style. Optional. */
  top?(id: string): Promise<{ titles: string[]; processes: string[][] }>;
  /**
   * Names other containers answer to, as seen from this one (its /etc/hosts). Optional: without it
   * services find each other by address only.
   */
  setHosts?(id: string, entries: ReadonlyArray<{ ip: string; names: string[] }>): Promise<void>;
  /**
   * Between the `members` (addresses), only `pairs` may talk (app networks); false when the engine cannot
   * filter, then everything on the bridge reaches everything.
   */
  setIsolation?(
    members: readonly string[],
    pairs: ReadonlyArray<readonly [string, string]>,
  ): Promise<boolean>;
  /** replace the app labels (berth labels are kept) without touching the process */
  updateLabels(id: string, labels: Record<string, string>): Promise<void>;
}

export interface ImageHealthcheck {
  /** OCI/Docker Healthcheck.Test: ["NONE"], ["CMD", …], ["CMD-SHELL", "…"] */
  test: string[];
  intervalMs?: number | undefined;
  timeoutMs?: number | undefined;
  retries?: number | undefined;
  startPeriodMs?: number | undefined;
}

export interface ImageService {
  /** whether an image reference is fetched (all blobs) and unpacked (all layers committed) */
  has(image: string): Promise<CurrentImage>;
  /** references with anything stored (fetched or partly so) */
  list(): Promise<string[]>;
  fetch(
    image: string,
    opts?: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void },
  ): Promise<void>;
  unpack(image: string): Promise<void>;
  /** bytes still to download, and an estimate of what unpacking will add */
  missingBytes(image: string): Promise<{ downloadBytes: number; unpackBytes: number }>;
  /** free bytes on the filesystem that holds blobs and snapshots */
  availableBytes(): Promise<number>;
  /** delete an image now: its record and the blobs and snapshots no other stored image uses */
  remove(image: string): Promise<void>;
  /** collect images, snapshots and blobs not reachable from `keepImages` (see core/disk.ts planGc) */
  gc(keepImages: readonly string[]): Promise<{ images: string[]; freedBytes: number }>;
  /** the image config's Healthcheck, if any */
  healthcheck(image: string): Promise<ImageHealthcheck | undefined>;
}

export interface VolumeService {
  list(): Promise<AppResource[]>;
  create(app: string, name: string, labels: Record<string, string>): Promise<void>;
  remove(app: string, name: string): Promise<void>;
  hostPath(app: string, name: string): string;
}

export interface NetworkService {
  list(): Promise<AppResource[]>;
  create(
    app: string,
    name: string,
    opts: { internal: boolean; labels: Record<string, string> },
  ): Promise<void>;
  remove(app: string, name: string): Promise<void>;
}

/** Where the app holds its update lock: a host dir per app, mounted into every container of the app. */
export const UPDATE_LOCK_MOUNT = '/tmp/berth-lock';
export const UPDATE_LOCK_FILE = 'updates.lock';
export const HANDOVER_FILE = 'handover-complete';

export interface UpdateLocks {
  /** the host directory mounted at UPDATE_LOCK_MOUNT in the app's containers (created on demand) */
  dir(app: string): Promise<string>;
  held(app: string): Promise<boolean>;
  /**
   * When a container of the app last wrote `handover-complete` in the lock dir (balena's signal that a
   * hand-over may finish), undefined when never. Optional: without it hand-over waits for health.
   */
  handoverSignalAt?(app: string): Promise<number | undefined>;
}

/** What the reporter and outbox publish on; the fleet branch maps channels to MQTT topics and QoS. */
export type Channel = 'state' | 'info' | 'metrics' | 'event';

export interface Transport {
  readonly online: boolean;
  publish(channel: Channel, payload: unknown, opts: { retain: boolean }): Promise<void>;
  /** called each time the connection comes (back) up */
  onOnline(cb: () => void): () => void;
}

export type { Clock, TimerHandle } from '../lib/clock.js';
export { systemClock } from '../lib/clock.js';

export interface AgentPorts {
  engine: ContainerEngine;
  images: ImageService;
  volumes: VolumeService;
  networks: NetworkService;
  locks: UpdateLocks;
}
