/**
 * The whole stack with the device agent as a real process, for tests that kill it, take its broker
 * away or reboot its device:
 *
 *   Mosquitto (real, killable)  ←  fleet server (in this process, blobs rate-limited so a pull takes
 *   a while)  ←→  `node dist/berth.mjs agent` (own state dir: overlay snapshots, berth-runtime +
 *   berth-monitor containers, SQLite)
 *
 * Images: agent-stack.ts's buildSampleImages (padBytes makes a version's pull take its time) and
 * pushSampleImages. The device is observed the way an operator could: its SQLite database opened read-only, /proc (is the
 * container's init alive?), /proc/mounts, and the fleet's view (events and retained state on the broker).
 * `deviceTeardown` stops the agent, removes its containers with the CLI (as scripts/demo.sh does),
 * unmounts whatever is left under the state dir — also when the test failed half way.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, promises as fsp, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { connectAgent } from '../../src/agent/api-client.js';
import { ContentStore } from '../../src/content/store.js';
import { type Db, openDatabase } from '../../src/db/database.js';
import { exec } from '../../src/lib/exec.js';
import { type DeviceWatch, pushSampleImages, watchDeviceOn } from './agent-stack.js';
import { FLEET, type FleetSide, startFleet, waitFor } from './fleet-harness.js';
import { freePort, Mosquitto } from './mosquitto.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'dist/berth.mjs');

// ---- fleet + broker ---------------------------------------------------------------------------------

export interface FleetStack {
  mosquitto: Mosquitto;
  fleet: FleetSide;
  /** sign and publish a target running `sample:<tag>` as app hello / service web */
  deploy(deviceId: string, tag: string): Promise<number>;
}

export async function startFleetStack(
  t: ExecutionContext,
  opts: { layouts: Record<string, string>; rateLimit?: number },
): Promise<FleetStack> {
  const mosquitto = await Mosquitto.start();
  t.teardown(() => mosquitto.stop());
  const fleet = await startFleet(t, {
    mqtt: { url: mosquitto.url, protocolVersion: 4, backoff: { initialMs: 50, maxMs: 500 } },
    ...(opts.rateLimit ? { blob: { rateLimit: opts.rateLimit } } : {}),
    pullPolicy: 'targets',
  });
  await pushSampleImages(fleet, opts.layouts);
  const deploy = async (deviceId: string, tag: string) =>
    (
      await fleet.deploy(
        { kind: 'device', id: deviceId },
        {
          apps: {
            hello: {
              services: {
                // stop: SIGTERM, SIGKILL after 500 ms
                web: { image: `sample:${tag}`, networkMode: 'none', stopTimeoutMs: 500 },
              },
            },
          },
          images: [`sample:${tag}`],
        },
      )
    ).version;
  return { mosquitto, fleet, deploy };
}

export interface ReportedStateView {
  target?: {
    applied: { kind: string; id: string; version: number } | null;
    status: string | null;
    reason?: string;
  };
  apps?: Record<
    string,
    { status: string; lastError?: string; services: Record<string, { image: string; state: string }> }
  >;
}

export type FleetView = DeviceWatch<ReportedStateView>;

/** The fleet's view of one device (events in order, latest retained state), read from the broker. */
export function watchDevice(t: ExecutionContext, url: string, deviceId: string): Promise<FleetView> {
  return watchDeviceOn<ReportedStateView>(t, url, deviceId);
}

// ---- the agent process ------------------------------------------------------------------------------

export class AgentProcess {
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  starts = 0;

  constructor(
    readonly o: {
      stateDir: string;
      deviceId: string;
      fleetKeyFile: string;
      logFile: string;
      groups?: string[];
      /** a config file (`--config`), e.g. the agent's timings */
      configFile?: string;
    },
  ) {}

  get pid(): number | undefined {
    return this.proc?.exitCode === null && this.proc.signalCode === null ? this.proc.pid : undefined;
  }

  /** Spawn `berth agent` on `brokerUrl`; resolves when its local API answers. */
  async start(brokerUrl: string): Promise<void> {
    if (this.pid) throw new Error('agent already running');
    const fd = openSync(this.o.logFile, 'a');
    const args = [
      ...['--max-semi-space-size=1', BIN, '--state-dir', this.o.stateDir, '--log-level', 'info'],
      ...(this.o.configFile ? ['--config', this.o.configFile] : []),
      ...['agent', '--broker', brokerUrl, '--fleet', FLEET, '--device-id', this.o.deviceId],
      ...['--fleet-key', this.o.fleetKeyFile, '--mqtt-version', '4'],
      ...(this.o.groups?.length ? ['--group', ...this.o.groups] : []),
    ];
    const p = spawn(process.execPath, args, { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    this.proc = p;
    this.starts++;
    this.exited = new Promise((r) => p.once('exit', () => r()));
    await waitFor(
      async () => {
        if (p.exitCode !== null) throw new Error(`agent exited (${p.exitCode}):\n${this.logTail()}`);
        return (await connectAgent(this.o.stateDir, 500)) !== undefined;
      },
      60_000,
      'the agent API',
    ).catch((err: Error) => {
      throw new Error(`${err.message}; agent log:\n${this.logTail()}`);
    });
  }

  /** Send `signal` and wait for the process to be gone. */
  async kill(signal: NodeJS.Signals): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill(signal);
    if (signal !== 'SIGSTOP') await this.exited;
  }

  /** SIGTERM (the agent stops cleanly, containers keep running); SIGKILL if it hangs. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGCONT');
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
    await this.exited;
    clearTimeout(t);
  }

  logTail(lines = 40): string {
    try {
      return readFileSync(this.o.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** The agent's JSON log lines (all its lives). */
  logLines(): Array<{ msg: string; [k: string]: unknown }> {
    return readFileSync(this.o.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
  }
}

/** `berth --state-dir <dir> <args>` (the built CLI). */
export async function cli(
  stateDir: string,
  args: string[],
  allowFailure = false,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return exec(process.execPath, [BIN, '--state-dir', stateDir, '--log-level', 'warn', ...args], {
    allowFailure,
    timeoutMs: 60_000,
  });
}

// ---- the device, read from outside ------------------------------------------------------------------

export interface DeviceContainer {
  id: string;
  name: string;
  image: string;
  state: string;
  pid: number | null;
  monitorPid: number | null;
  startedAt: number | null;
  restartCount: number;
  service: string | undefined;
}

export function processAlive(pid: number | null): boolean {
  if (!pid) return false;
  try {
    // a zombie is not alive for our purposes
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** The device's SQLite database, read-only, as the agent leaves it at any instant. */
export class DeviceDb {
  private db: Db | undefined;
  constructor(readonly stateDir: string) {}

  private open(): Db {
    this.db ??= openDatabase(path.join(this.stateDir, 'berth.db'), {
      readonly: true,
      integrityCheck: false,
    });
    return this.db;
  }

  containers(): DeviceContainer[] {
    const rows = this.open()
      .prepare(
        'SELECT id, name, image, state, pid, monitor_pid, started_at, restart_count, spec FROM containers ORDER BY created_at',
      )
      .all() as Array<{
      id: string;
      name: string;
      image: string;
      state: string;
      pid: number | null;
      monitor_pid: number | null;
      started_at: number | null;
      restart_count: number;
      spec: string;
    }>;
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      image: r.image,
      state: r.state,
      pid: r.pid,
      monitorPid: r.monitor_pid,
      startedAt: r.started_at,
      restartCount: r.restart_count,
      service: (JSON.parse(r.spec) as { app: { labels?: Record<string, string> } }).app.labels?.[
        'io.berth.service'
      ],
    }));
  }

  /** The one container running `image` whose init is alive, if any. */
  running(image: string): DeviceContainer | undefined {
    return this.containers().find((c) => c.image === image && c.state === 'running' && processAlive(c.pid));
  }

  /** Set bits / total chunks of the transfer of `digest` in progress (undefined: none). */
  transferProgress(digest?: string): { done: number; total: number } | undefined {
    const rows = this.open()
      .prepare('SELECT digest, size, chunk_size, bitmap FROM transport_transfers')
      .all() as Array<{ digest: string; size: number; chunk_size: number; bitmap: Buffer }>;
    const r = digest ? rows.find((x) => x.digest === digest) : rows.sort((a, b) => b.size - a.size)[0];
    if (!r) return undefined;
    let done = 0;
    for (const byte of r.bitmap) for (let b = byte; b; b &= b - 1) done++;
    return { done, total: Math.ceil(r.size / r.chunk_size) };
  }

  /** Active snapshots (container rootfs and in-flight unpacks) and snapshots not `ready`. */
  snapshotsInUse(): Array<{ name: string; kind: string; state: string }> {
    return this.open()
      .prepare(
        "SELECT name, kind, state FROM snapshots WHERE kind != 'committed' OR state != 'ready' ORDER BY name",
      )
      .all() as Array<{ name: string; kind: string; state: string }>;
  }

  transfers(): number {
    return (this.open().prepare('SELECT COUNT(*) AS n FROM transport_transfers').get() as { n: number }).n;
  }

  imageNames(): string[] {
    return (
      this.open().prepare('SELECT name FROM images ORDER BY name').all() as Array<{ name: string }>
    ).map((r) => r.name);
  }

  /** The agent's current target: version and status (applying, converged, healthy, failed). */
  currentTarget(): { version: number; status: string; reason: string | null; body: string } | undefined {
    return this.open()
      .prepare("SELECT version, status, reason, body FROM agent_targets WHERE role = 'current'")
      .get() as { version: number; status: string; reason: string | null; body: string } | undefined;
  }

  apps(): Array<{ name: string; status: string; lastError: string | null }> {
    return this.open()
      .prepare('SELECT name, status, last_error AS lastError FROM agent_apps ORDER BY name')
      .all() as Array<{ name: string; status: string; lastError: string | null }>;
  }

  close(): void {
    this.db?.close();
    this.db = undefined;
  }
}

/** Mount points at or under `dir` (deepest first), from /proc/mounts. */
export function mountsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const p = line.split(' ')[1];
    if (!p) continue;
    const point = p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    if (point === dir || point.startsWith(`${dir}/`)) out.push(point);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Every blob in the device's content store hashes to its name (throws Corrupt otherwise). */
export async function verifyContentStore(stateDir: string): Promise<number> {
  const store = new ContentStore(path.join(stateDir, 'content'));
  let n = 0;
  for await (const b of store.walk()) {
    await store.verify(b.digest);
    n++;
  }
  return n;
}

/**
 * A device for one test: state dir (given, or a fresh one under os.tmpdir), agent process, read-only db,
 * and a teardown that leaves nothing behind: agent stopped, containers removed through the CLI, mounts
 * under the state dir unmounted (deepest first), then `after` (e.g. a loop filesystem's cleanup).
 */
export interface Device {
  id: string;
  stateDir: string;
  agent: AgentProcess;
  db: DeviceDb;
}

export async function makeDevice(
  t: ExecutionContext,
  o: {
    name: string;
    fleetKeyFile: string;
    stateDir?: string;
    after?: () => Promise<void>;
    groups?: string[];
    /** the agent's config (written to a file it gets with `--config`), e.g. `{ agent: { healthWindowMs } }` */
    config?: Record<string, unknown>;
  },
): Promise<Device> {
  const id = `${o.name}-${process.pid}`;
  const work = await fsp.mkdtemp(path.join(tmpdir(), `berth-${o.name}-`));
  const stateDir = o.stateDir ?? path.join(work, 'state');
  await fsp.mkdir(stateDir, { recursive: true });
  const configFile = o.config ? path.join(work, 'config.json') : undefined;
  if (configFile) await fsp.writeFile(configFile, JSON.stringify(o.config));
  const agent = new AgentProcess({
    stateDir,
    deviceId: id,
    fleetKeyFile: o.fleetKeyFile,
    logFile: path.join(work, 'agent.log'),
    ...(o.groups ? { groups: o.groups } : {}),
    ...(configFile ? { configFile } : {}),
  });
  const db = new DeviceDb(stateDir);
  t.teardown(async () => {
    if (process.env.BERTH_TEST_AGENT_LOG) t.log(agent.logTail(200));
    await agent.stop();
    db.close();
    const ps = await cli(stateDir, ['ps', '-a', '--json'], true);
    if (ps.code === 0)
      for (const c of JSON.parse(ps.stdout) as Array<{ name: string }>)
        await cli(stateDir, ['rm', '-f', c.name], true);
    for (const m of mountsUnder(stateDir))
      if ((await exec('umount', [m], { allowFailure: true })).code !== 0)
        await exec('umount', ['-l', m], { allowFailure: true });
    await o.after?.();
    await fsp.rm(work, { recursive: true, force: true });
  });
  return { id, stateDir, agent, db };
}

/** A TCP port where nothing listens (for "the broker is not there"). */
export const deadBrokerUrl = async (): Promise<string> => `mqtt://127.0.0.1:${await freePort()}`;
