/**
 * FAKES for the agent's ports (src/agent/ports.ts): an in-memory device — engine, images, volumes,
 * networks, update locks — and a manual clock. They model behaviour the planner and reconciler rely on
 * (state transitions, exit codes, sizes) and record every call, so reconciler tests can check ordering,
 * concurrency, crash recovery and backoff without a kernel. The real implementations come from the
 * runtime, storage and fleet branches and are tested there against real parts.
 */

import type {
  Clock,
  ContainerEngine,
  ContainerStats,
  CreateContainerRequest,
  EngineContainer,
  ExecResult,
  ImageHealthcheck,
  ImageService,
  NetworkService,
  TimerHandle,
  UpdateLocks,
  VolumeService,
} from '../../src/agent/ports.js';
import type { AppResource, ContainerStatus, CurrentImage } from '../../src/core/state.js';
import { BerthError } from '../../src/lib/errors.js';

export class FakeClock implements Clock {
  private seq = 0;
  timers = new Map<number, { at: number; fn: () => void }>();
  constructor(public t = 1_700_000_000_000) {}
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + ms, fn });
    return { _timer: id };
  }
  clearTimeout(h: TimerHandle): void {
    this.timers.delete(h._timer as number);
  }
  /** delays (from now) of pending timers, soonest first */
  pending(): number[] {
    return [...this.timers.values()].map((x) => x.at - this.t).sort((a, b) => a - b);
  }
  /** move time forward, firing due timers in order (yielding to the event loop between them) */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.timers.entries()]
        .filter(([, x]) => x.at <= end)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
      await flush();
    }
    this.t = end;
  }
}

export const flush = async (n = 5) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

/** Thrown by the fake world to simulate the agent dying in the middle of a step. */
export class Crash extends Error {}

interface FakeContainer extends EngineContainer {
  req: CreateContainerRequest;
  logs: string[];
}

export interface Call {
  op: string;
  id: string;
  at: number;
}

export class FakeDevice {
  containers = new Map<string, FakeContainer>();
  images = new Map<string, CurrentImage & { size: number; healthcheck?: ImageHealthcheck }>();
  volumes: AppResource[] = [];
  networks: AppResource[] = [];
  heldLocks = new Set<string>();
  available = 10 * 1024 ** 3;
  calls: Call[] = [];
  /** false: keep no call log (long benchmarks) */
  recordCalls = true;
  /** ops in flight right now, and the most seen at once */
  active = 0;
  maxActive = 0;
  /** each op awaits this many event-loop turns (to expose races) */
  latencyTurns = 0;
  failures = new Map<string, BerthError | Error>();
  /** throw Crash after this many more mutating ops (undefined = never) */
  crashAfter: number | undefined;
  /** registry sizes of images that can be fetched */
  registry = new Map<string, number>();
  execHandler: (id: string, argv: string[]) => number = () => 0;

  constructor(readonly clock: FakeClock) {}

  private async op(op: string, id: string, mutating = true): Promise<void> {
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      if (this.latencyTurns > 0) await flush(this.latencyTurns);
      const f = this.failures.get(op);
      if (f) throw f;
      if (mutating && this.crashAfter !== undefined) {
        if (this.crashAfter === 0) throw new Crash(`crash before ${op} ${id}`);
        this.crashAfter--;
      }
      if (mutating && this.recordCalls) this.calls.push({ op, id, at: this.clock.now() });
    } finally {
      this.active--;
    }
  }

  private get(id: string): FakeContainer {
    const c = this.containers.get(id);
    if (!c) throw new BerthError('NotFound', `container ${id} not found`);
    return c;
  }

  /** the container process exits by itself */
  exit(id: string, code: number): void {
    Object.assign(this.get(id), {
      status: 'stopped' as ContainerStatus,
      exitCode: code,
      finishedAt: this.clock.now(),
    });
  }

  /** power cut: every container process is gone (containers stay, as the runtime's state dir does) */
  reboot(): void {
    for (const c of this.containers.values())
      if (c.status === 'running')
        Object.assign(c, { status: 'stopped', exitCode: 137, finishedAt: this.clock.now() });
  }

  running(): string[] {
    return [...this.containers.values()]
      .filter((c) => c.status === 'running')
      .map((c) => c.id)
      .sort();
  }

  engine: ContainerEngine = {
    list: async () => {
      await this.op('list', '', false);
      return [...this.containers.values()].map(({ req: _r, logs: _l, ...c }) => ({
        ...c,
        labels: { ...c.labels },
      }));
    },
    create: async (req) => {
      if (this.containers.has(req.name)) throw new BerthError('Conflict', `container ${req.name} exists`);
      const img = this.images.get(req.image);
      if (!img?.unpacked) throw new BerthError('NotFound', `image ${req.image} is not unpacked`);
      await this.op('create', req.name);
      this.containers.set(req.name, {
        id: req.name,
        image: req.image,
        status: 'created',
        labels: { ...req.labels },
        req,
        logs: [],
        createdAt: this.clock.now(),
        cgroupPath: `/berth/${req.name}`,
      });
      return { id: req.name };
    },
    start: async (id) => {
      const c = this.get(id);
      await this.op('start', id);
      Object.assign(c, {
        status: 'running',
        startedAt: this.clock.now(),
        exitCode: undefined,
        finishedAt: undefined,
      });
      c.logs.push(`started at ${this.clock.now()}`);
      if (c.logs.length > 100) c.logs.shift();
    },
    stop: async (id) => {
      const c = this.get(id);
      await this.op('stop', id);
      if (c.status === 'running')
        Object.assign(c, { status: 'stopped', exitCode: 0, finishedAt: this.clock.now() });
    },
    kill: async (id) => {
      const c = this.get(id);
      await this.op('kill', id);
      if (c.status === 'running')
        Object.assign(c, { status: 'stopped', exitCode: 137, finishedAt: this.clock.now() });
    },
    remove: async (id, opts) => {
      const c = this.get(id);
      if (c.status === 'running' && !opts?.force)
        throw new BerthError('Conflict', `container ${id} is running`);
      await this.op('remove', id);
      this.containers.delete(id);
    },
    exec: async (id, argv): Promise<ExecResult> => {
      const c = this.get(id);
      if (c.status !== 'running') throw new BerthError('Conflict', `container ${id} is not running`);
      await this.op('exec', id, false);
      const code = this.execHandler(id, argv);
      return { exitCode: code, stdout: `ran ${argv.join(' ')}\n`, stderr: '' };
    },
    logs: async (id, opts) => {
      const c = this.get(id);
      return opts.tail ? c.logs.slice(-opts.tail) : [...c.logs];
    },
    stats: async (id): Promise<ContainerStats> => {
      this.get(id);
      return { cpuUsageNs: 1_000_000, memoryBytes: 4 * 1024 * 1024 };
    },
    updateLabels: async (id, labels) => {
      const c = this.get(id);
      await this.op('updateLabels', id);
      const berth = Object.fromEntries(Object.entries(c.labels).filter(([k]) => k.startsWith('io.berth.')));
      c.labels = { ...labels, ...berth };
    },
  };

  imageService: ImageService = {
    has: async (ref) => {
      const i = this.images.get(ref);
      return { fetched: i?.fetched ?? false, unpacked: i?.unpacked ?? false };
    },
    list: async () => [...this.images.keys()],
    fetch: async (ref) => {
      const size = this.registry.get(ref);
      if (size === undefined) throw new BerthError('NotFound', `image ${ref} is not in the fleet`);
      await this.op('fetch', ref);
      if (size > this.available) throw new BerthError('NoSpace', `no space left fetching ${ref}`);
      this.available -= size;
      this.images.set(ref, { fetched: true, unpacked: false, size });
    },
    unpack: async (ref) => {
      const i = this.images.get(ref);
      if (!i?.fetched) throw new BerthError('NotFound', `image ${ref} is not fetched`);
      await this.op('unpack', ref);
      this.available -= i.size;
      i.unpacked = true;
    },
    missingBytes: async (ref) => {
      const i = this.images.get(ref);
      const size = this.registry.get(ref) ?? 0;
      return { downloadBytes: i?.fetched ? 0 : size, unpackBytes: i?.unpacked ? 0 : size };
    },
    availableBytes: async () => this.available,
    remove: async (ref) => {
      await this.op('removeImage', ref);
      const i = this.images.get(ref);
      if (i) this.available += i.size * (i.unpacked ? 2 : 1);
      this.images.delete(ref);
    },
    gc: async (keep) => {
      const gone = [...this.images.keys()].filter(
        (r) => !keep.includes(r) && ![...this.containers.values()].some((c) => c.image === r),
      );
      let freed = 0;
      for (const r of gone) {
        const i = this.images.get(r)!;
        freed += i.size * (i.unpacked ? 2 : 1);
        this.images.delete(r);
      }
      this.available += freed;
      if (gone.length) this.calls.push({ op: 'gc', id: gone.join(','), at: this.clock.now() });
      return { images: gone, freedBytes: freed };
    },
    healthcheck: async (ref) => this.images.get(ref)?.healthcheck ?? this.imageChecks.get(ref),
  };
  imageChecks = new Map<string, ImageHealthcheck>();

  volumeService: VolumeService = {
    list: async () => [...this.volumes],
    create: async (app, name) => {
      await this.op('createVolume', `${app}/${name}`);
      this.volumes.push({ app, name });
    },
    remove: async (app, name) => {
      await this.op('removeVolume', `${app}/${name}`);
      this.volumes = this.volumes.filter((v) => !(v.app === app && v.name === name));
    },
    hostPath: (app, name) => `/fake/volumes/${app}/${name}`,
  };

  networkService: NetworkService = {
    list: async () => [...this.networks],
    create: async (app, name) => {
      await this.op('createNetwork', `${app}/${name}`);
      this.networks.push({ app, name });
    },
    remove: async (app, name) => {
      await this.op('removeNetwork', `${app}/${name}`);
      this.networks = this.networks.filter((v) => !(v.app === app && v.name === name));
    },
  };

  lockService: UpdateLocks = {
    dir: async (app) => `/fake/locks/${app}`,
    held: async (app) => this.heldLocks.has(app),
  };

  get ports() {
    return {
      engine: this.engine,
      images: this.imageService,
      volumes: this.volumeService,
      networks: this.networkService,
      locks: this.lockService,
    };
  }
}
