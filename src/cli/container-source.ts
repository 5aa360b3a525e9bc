/**
 * Where the docker-like read commands (ps, logs, inspect, stats, top, events, images) and restart get
 * their answers: the running agent's local API when one answers on <state-dir>/berth.sock, else the
 * state dir itself. Both sides run the same code underneath (src/runtime/inspect.ts, top.ts, events.ts,
 * device/cgroup.ts), so the output is the same either way.
 */
import type { ContainerView } from '../agent/api.js';
import { type AgentClient, connectAgent } from '../agent/api-client.js';
import type { LogLine, LogStreamOptions } from '../agent/ports.js';
import { AgentStore } from '../agent/store.js';
import { type ImageRecord, ImageRepo } from '../content/images.js';
import { cgroupProcs, readCgroupStats } from '../device/cgroup.js';
import { conflict } from '../lib/errors.js';
import type { ContainerManager, ContainerRecord } from '../runtime/containers.js';
import type { BerthEvent, EventStreamOptions } from '../runtime/events.js';
import { inspectContainer } from '../runtime/inspect.js';
import { type ProcessTable, processTable } from '../runtime/top.js';
import type { CliContext } from './context.js';

/** What `ps` shows, from the state dir (ContainerRecord) or from the agent (ContainerView). */
export interface PsRow {
  id: string;
  name: string;
  image: string;
  state: string;
  exitCode?: number | null | undefined;
  oomKilled?: boolean | undefined;
  startedAt?: number | null | undefined;
  finishedAt?: number | null | undefined;
  createdAt?: number | null | undefined;
  ipAddress?: string | null | undefined;
  health?: string | undefined;
  ports: Array<{ hostIp?: string | undefined; hostPort: number; containerPort: number; protocol: string }>;
}

export interface StatsSample {
  cpuUsageNs: number;
  memoryBytes: number;
  memoryLimitBytes?: number | undefined;
  pids?: number | undefined;
  /** when it was read, ms */
  at: number;
}

export interface ContainerSource {
  readonly viaAgent: boolean;
  /** rows as `ps --json` prints them (the agent's view, or the record), newest first */
  list(all: boolean): Promise<Array<PsRow & Record<string, unknown>>>;
  inspect(ref: string): Promise<unknown>;
  logs(ref: string, opts: LogStreamOptions, emit: (l: LogLine) => void): Promise<void>;
  stats(ref: string): Promise<StatsSample>;
  top(ref: string): Promise<ProcessTable>;
  restart(ref: string, timeoutSec: number): Promise<void>;
  events(opts: EventStreamOptions, emit: (e: BerthEvent) => void): Promise<void>;
  images(): Promise<ImageRecord[]>;
  image(ref: string): Promise<Record<string, unknown>>;
}

/** The agent's view, keyed as `ps --json` is without an agent: `id` the runtime's id, `name` the name. */
function viewRow(v: ContainerView): PsRow & Record<string, unknown> {
  const { containerId, ...rest } = v;
  return { ...rest, id: containerId ?? v.id };
}

class AgentSource implements ContainerSource {
  readonly viaAgent = true;
  constructor(private readonly c: AgentClient) {}

  async list(all: boolean) {
    return (await this.c.ps()).map(viewRow).filter((r) => all || r.state === 'running');
  }
  inspect(ref: string) {
    return this.c.inspect(ref);
  }
  logs(ref: string, opts: LogStreamOptions, emit: (l: LogLine) => void) {
    return this.c.streamLogs(ref, opts, emit);
  }
  stats(ref: string) {
    return this.c.stats(ref);
  }
  top(ref: string) {
    return this.c.top(ref);
  }
  async restart(ref: string, timeoutSec: number) {
    await this.c.restart(ref, timeoutSec * 1000);
  }
  events(opts: EventStreamOptions, emit: (e: BerthEvent) => void) {
    return this.c.events(opts, emit);
  }
  images() {
    return this.c.images();
  }
  image(ref: string) {
    return this.c.image(ref);
  }
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

/** On the state dir: the container manager, the agent's records (health), the event log, the images. */
class DirectSource implements ContainerSource {
  readonly viaAgent = false;
  constructor(
    private readonly ctx: CliContext,
    private readonly m: ContainerManager,
  ) {}

  /** last recorded health of the agent's containers, by the agent's name for them (= the record's name) */
  private health(): Map<string, string> {
    return new Map(
      new AgentStore(this.ctx.db)
        .containers()
        .filter((c) => c.health !== 'none')
        .map((c) => [c.id, c.health]),
    );
  }

  async list(all: boolean) {
    const health = this.health();
    return (await this.m.list({ all })).map((r) => ({
      ...r,
      ...(health.has(r.name) ? { health: health.get(r.name) } : {}),
    })) as unknown as Array<PsRow & Record<string, unknown>>;
  }
  async inspect(ref: string) {
    const rec = await this.m.inspect(ref);
    return inspectContainer(rec, this.m.containerDir(rec.id), { health: this.health().get(rec.name) });
  }
  logs(ref: string, opts: LogStreamOptions, emit: (l: LogLine) => void) {
    return this.m.streamLogs(ref, opts, emit);
  }
  async stats(ref: string) {
    const rec = await this.running(ref);
    return { ...(await readCgroupStats(`/berth/${rec.id}`)), at: Date.now() };
  }
  async top(ref: string) {
    const rec = await this.running(ref);
    return processTable(await cgroupProcs(`/berth/${rec.id}`));
  }
  async restart(ref: string, timeoutSec: number) {
    await this.m.restart(ref, timeoutSec);
  }
  async events(opts: EventStreamOptions, emit: (e: BerthEvent) => void) {
    const log = this.m.events;
    let after = opts.since === undefined && opts.follow ? log.lastSeq() : 0;
    const send = () => {
      for (const e of log.list({ afterSeq: after, since: opts.since, until: opts.until })) {
        emit(e);
        after = e.seq;
      }
    };
    send();
    while (opts.follow && !opts.signal?.aborted && (opts.until === undefined || Date.now() <= opts.until)) {
      await sleep(250, opts.signal);
      await this.m.list({ all: false }); // reconciles running containers: an exit becomes a "die" event
      send();
    }
  }
  async images() {
    return new ImageRepo(this.ctx.db, this.ctx.store).list();
  }
  image(ref: string) {
    return new ImageRepo(this.ctx.db, this.ctx.store).describe(ref);
  }

  private async running(ref: string): Promise<ContainerRecord> {
    const rec = await this.m.inspect(ref);
    if (rec.state !== 'running') throw conflict(`container ${rec.name} is not running`);
    return rec;
  }
}

/** The agent when one answers on the state dir's socket, else the state dir. */
export async function containerSource(
  ctx: CliContext,
  manager: () => ContainerManager,
): Promise<ContainerSource> {
  const client = await connectAgent(ctx.stateDir);
  return client ? new AgentSource(client) : new DirectSource(ctx, manager());
}
