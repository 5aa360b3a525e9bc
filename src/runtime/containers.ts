/**
 * The container lifecycle manager: SQLite is the record, the runtime and berth-monitor are the truth
 * about processes, and every read reconciles the two.
 *
 *   create  → row "creating" (intent) → dirs, rootfs, user lookup, network (netns+veth+IP+ports),
 *             /etc files, config.json → row "created". On failure everything made is undone.
 *   start   → rootfs mounted again if a reboot took it → berth-monitor (detached; runs runtime
 *             create+start, owns stdio and the exit status)
 *             → row "running" with pid/monitor pid.
 *   stop    → StopSignal, wait up to the timeout for exit.json, then SIGKILL.
 *   exit    → the monitor writes exit.json; the next reconcile records exit code/OOM, deletes the
 *             runtime's container (cgroup freed) → row "exited". The network stays for a restart.
 *   remove  → row "removing" (intent) → runtime delete, network detach, rootfs release, dir → row gone.
 *   recover → at agent start: "creating" rows are undone, "removing" rows finished, "running" rows
 *             reconciled (monitor alive? exit.json? runtime state?).
 *
 * Files per container, <state>/containers/<id>/: bundle/config.json, log.json*, exit.json,
 * monitor.pid, pidfile, runtime.log, monitor.log, etc/{hosts,hostname,resolv.conf}, volumes/.
 *
 * exec: through the runtime's `exec` verb (berth-runtime, runc, crun): the process joins the container's
 * namespaces AND cgroup and gets its capabilities, seccomp filter, no_new_privs and rlimits from
 * config.json. For a runtime without exec, the fallback is nsenter(1) (mount, uts, ipc, net, pid; root
 * and cwd of the container; uid/gid and env from config.json) — without the cgroup, capability bounding
 * set, seccomp and no_new_privs: such processes run with the caller's privileges in the container's view.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { type Db, tx } from '../db/database.js';
import { writeFileAtomic } from '../lib/atomic.js';
import { BerthError, conflict, invalidInput, isBerthError, notFound, withContext } from '../lib/errors.js';
import { exec } from '../lib/exec.js';
import { assertSafeName } from '../lib/ids.js';
import type { Logger } from '../lib/logger.js';
import { hostPlatform } from '../oci/platform.js';
import { type AppSpec, buildBundleConfig, type RestartPolicy } from './bundle.js';
import { type BerthEvent, EventLog } from './events.js';
import { followLogs, type LogEntry, type LogWindow, readLogs } from './logs.js';
import type { NetworkAttachment, NetworkManager, PortMapping } from './network/network.js';
import type { RootfsProvider, RootfsSource } from './rootfs.js';
import type { OciRuntime } from './runtime.js';
import type { LinuxDevice, RuntimeSpec } from './spec.js';
import { resolveUserInRootfs } from './users.js';

export type ContainerState = 'creating' | 'created' | 'running' | 'exited' | 'removing';

/** Labels the agent puts on the containers of a target (same values as src/agent/ports.ts). */
const LABEL_APP = 'io.berth.app';
const LABEL_SERVICE = 'io.berth.service';

export interface CreateRequest {
  name?: string;
  source: RootfsSource;
  app: AppSpec;
  ports?: PortMapping[];
  /** Remove the container when it exits (`run --rm`): the monitor runs the exit command. */
  autoRemove?: boolean;
}

export interface ContainerRecord {
  id: string;
  name: string;
  image: string;
  specHash: string;
  request: CreateRequest;
  state: ContainerState;
  pid: number | null;
  monitorPid: number | null;
  stopSignal: string;
  restartPolicy: RestartPolicy;
  restartCount: number;
  exitCode: number | null;
  oomKilled: boolean;
  error: string | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  networkMode: string;
  ipAddress: string | null;
  netns: string | null;
  ports: PortMapping[];
}

interface Row {
  id: string;
  name: string;
  image: string;
  spec_hash: string;
  spec: string;
  state: ContainerState;
  pid: number | null;
  monitor_pid: number | null;
  stop_signal: string;
  restart_policy: RestartPolicy;
  restart_count: number;
  exit_code: number | null;
  oom_killed: number;
  error: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  network_mode: string;
  ip_address: string | null;
  netns: string | null;
  ports: string;
}

function toRecord(r: Row): ContainerRecord {
  return {
    id: r.id,
    name: r.name,
    image: r.image,
    specHash: r.spec_hash,
    request: JSON.parse(r.spec) as CreateRequest,
    state: r.state,
    pid: r.pid,
    monitorPid: r.monitor_pid,
    stopSignal: r.stop_signal,
    restartPolicy: r.restart_policy,
    restartCount: r.restart_count,
    exitCode: r.exit_code,
    oomKilled: r.oom_killed === 1,
    error: r.error,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    networkMode: r.network_mode,
    ipAddress: r.ip_address,
    netns: r.netns,
    ports: JSON.parse(r.ports) as PortMapping[],
  };
}

export interface ExitStatus {
  exitCode: number;
  signal: number;
  oomKilled: boolean;
  pid: number;
  finishedAt: string;
}

export interface ContainerManagerOptions {
  db: Db;
  stateDir: string;
  runtime: OciRuntime;
  monitorPath: string;
  network: NetworkManager;
  rootfs: RootfsProvider;
  /** OCI architecture of this machine (amd64, arm64, arm, ppc64le). */
  arch: string;
  logMaxSize: number;
  logMaxFiles: number;
  /** argv the monitor execs after the container exits when autoRemove is set (e.g. `berth rm -f <id>`). */
  autoRemoveCommand?: (id: string) => string[];
  log?: Logger;
  /** nsenter(1), for exec. */
  nsenterPath?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A host device node as runtime-spec linux.devices wants it (`--device /dev/x[:/dev/y]`). */
export async function statDevice(hostPath: string, containerPath = hostPath): Promise<LinuxDevice> {
  const st = await fsp.stat(hostPath).catch((e) => {
    throw withContext(`device ${hostPath}`, e);
  });
  if (!st.isCharacterDevice() && !st.isBlockDevice()) throw invalidInput(`${hostPath} is not a device node`);
  const rdev = st.rdev;
  return {
    path: containerPath,
    type: st.isBlockDevice() ? 'b' : 'c',
    // glibc's gnu_dev_major/minor for 32-bit dev_t values
    major: ((rdev >> 8) & 0xfff) | ((rdev >>> 32) & ~0xfff),
    minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    fileMode: st.mode & 0o777,
    uid: 0,
    gid: 0,
  };
}

export function ociArch(nodeArch: string = process.arch): string {
  return hostPlatform(nodeArch).architecture;
}

export class ContainerManager {
  /** what happened, for `berth events` (the same log with or without an agent) */
  readonly events: EventLog;

  constructor(private readonly o: ContainerManagerOptions) {
    this.events = new EventLog(o.db);
  }

  private event(
    action: string,
    r: { id: string; name: string; image: string; spec?: string; request?: CreateRequest },
    extra: BerthEvent['attributes'] = {},
    at?: number,
  ): void {
    try {
      const req = r.request ?? (r.spec ? (JSON.parse(r.spec) as CreateRequest) : undefined);
      const labels = req?.app.labels ?? {};
      const attrs: BerthEvent['attributes'] = { image: r.image, ...extra };
      if (labels[LABEL_APP]) attrs.app = labels[LABEL_APP];
      if (labels[LABEL_SERVICE]) attrs.service = labels[LABEL_SERVICE];
      this.events.record('container', action, { id: r.id, name: r.name }, attrs, at);
    } catch (err) {
      // the event log is a convenience: it never fails the operation it describes
      this.o.log?.debug({ err, action }, 'event not recorded');
    }
  }

  containerDir(id: string): string {
    return path.join(this.o.stateDir, 'containers', assertSafeName('container id', id));
  }

  // ---- queries -------------------------------------------------------------------------------------

  private row(ref: string): Row {
    const r = this.o.db
      .prepare(
        'SELECT * FROM containers WHERE id = ? OR name = ? OR id LIKE ? ORDER BY name = ? DESC LIMIT 2',
      )
      .all(ref, ref, `${ref.replace(/[%_]/g, '')}%`, ref) as Row[];
    const exact = r.find((x) => x.id === ref || x.name === ref);
    if (exact) return exact;
    if (r.length === 1 && ref.length >= 4) return r[0]!;
    if (r.length > 1) throw invalidInput(`container reference ${ref} is ambiguous`);
    const byService = this.serviceRow(ref);
    if (byService) return byService;
    throw notFound(`no such container: ${ref}`);
  }

  /**
   * An app's service by name (`web`, or `app/web` when two apps have one), as docker compose users write
   * `logs web`: the running container of it (the newest, during a hand-over), else the newest one.
   */
  private serviceRow(ref: string): Row | undefined {
    const [app, service] = ref.includes('/') ? ref.split('/', 2) : [undefined, ref];
    const rows = (
      this.o.db.prepare("SELECT * FROM containers WHERE spec LIKE '%io.berth.service%'").all() as Row[]
    )
      .map((r) => ({ r, labels: (JSON.parse(r.spec) as CreateRequest).app.labels ?? {} }))
      .filter(
        ({ labels }) => labels[LABEL_SERVICE] === service && (app === undefined || labels[LABEL_APP] === app),
      );
    if (rows.length === 0) return undefined;
    const apps = [...new Set(rows.map((x) => x.labels[LABEL_APP]))];
    if (apps.length > 1)
      throw invalidInput(
        `service ${ref} is in several apps (${apps.map((a) => `${a}/${service}`).join(', ')}): name one`,
      );
    const newest = (xs: typeof rows) => xs.sort((a, b) => b.r.created_at - a.r.created_at)[0]?.r;
    return newest(rows.filter((x) => x.r.state === 'running')) ?? newest(rows);
  }

  /** The record, reconciled with the monitor's exit file and the runtime. */
  async inspect(ref: string): Promise<ContainerRecord> {
    return this.reconcile(this.row(ref));
  }

  async list(opts: { all?: boolean } = {}): Promise<ContainerRecord[]> {
    const rows = this.o.db.prepare('SELECT * FROM containers ORDER BY created_at DESC').all() as Row[];
    const out: ContainerRecord[] = [];
    for (const r of rows) {
      const rec = await this.reconcile(r);
      if (opts.all || rec.state === 'running') out.push(rec);
    }
    return out;
  }

  /**
   * A container's output (the window's lines), and with `follow` new lines until it stops or `signal`
   * aborts: what `berth logs` prints, on the state dir or through the agent.
   */
  async streamLogs(
    ref: string,
    opts: LogWindow & { follow: boolean; signal?: AbortSignal | undefined; pollMs?: number },
    emit: (e: LogEntry) => void,
  ): Promise<void> {
    const rec = await this.inspect(ref);
    const dir = this.containerDir(rec.id);
    const window = { tail: opts.tail, since: opts.since, until: opts.until };
    if (!opts.follow) {
      for (const e of await readLogs(dir, window)) emit(e);
      return;
    }
    await followLogs(dir, emit, {
      ...window,
      isDone: async () => (await this.inspect(rec.id)).state !== 'running',
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.pollMs ? { pollMs: opts.pollMs } : {}),
    });
  }

  readExitFile(id: string): ExitStatus | undefined {
    const file = path.join(this.containerDir(id), 'exit.json');
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as ExitStatus;
    } catch {
      return undefined;
    }
  }

  monitorAlive(id: string, pid: number | null): boolean {
    if (!pid) return false;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      return cmdline.includes('berth-monitor') && cmdline.includes(id);
    } catch {
      return false;
    }
  }

  private update(id: string, fields: Record<string, unknown>): void {
    const keys = Object.keys(fields);
    this.o.db
      .prepare(`UPDATE containers SET ${keys.map((k) => `${k} = @${k}`).join(', ')} WHERE id = @id`)
      .run({ ...fields, id });
  }

  private async reconcile(r: Row): Promise<ContainerRecord> {
    if (r.state !== 'running') return toRecord(r);
    const exit = this.readExitFile(r.id);
    if (exit) {
      await this.o.runtime.delete(r.id, { force: true }).catch(() => undefined);
      const finishedAt = Date.parse(exit.finishedAt) || Date.now();
      this.update(r.id, {
        state: 'exited',
        exit_code: exit.exitCode,
        oom_killed: exit.oomKilled ? 1 : 0,
        finished_at: finishedAt,
        pid: null,
        monitor_pid: null,
      });
      if (exit.oomKilled) this.event('oom', r, {}, finishedAt);
      this.event('die', r, { exitCode: exit.exitCode }, finishedAt);
    } else if (!this.monitorAlive(r.id, r.monitor_pid)) {
      const st = await this.o.runtime.state(r.id).catch(() => undefined);
      if (st?.status === 'running') {
        this.update(r.id, { error: 'monitor lost: the container runs on but its output is not collected' });
      } else {
        await this.o.runtime.delete(r.id, { force: true }).catch(() => undefined);
        this.update(r.id, {
          state: 'exited',
          exit_code: -1,
          error: 'monitor died before the container exited: exit status unknown',
          finished_at: Date.now(),
          pid: null,
          monitor_pid: null,
        });
        this.event('die', r, { exitCode: -1 });
      }
    }
    return toRecord(this.o.db.prepare('SELECT * FROM containers WHERE id = ?').get(r.id) as Row);
  }

  // ---- create --------------------------------------------------------------------------------------

  async create(req: CreateRequest): Promise<ContainerRecord> {
    const id = randomBytes(16).toString('hex');
    const name = assertSafeName('container name', req.name ?? `c-${id.slice(0, 10)}`);
    const image = req.source.kind === 'dir' ? `rootfs:${req.source.path}` : req.source.ref;
    const requestJson = JSON.stringify(req);
    const specHash = `sha256:${createHash('sha256').update(requestJson).digest('hex')}`;
    const mode = req.app.network ?? 'none';
    await ensureOwnedBindSources(req);
    for (const v of req.app.volumes ?? []) {
      const st = await fsp.stat(v.source).catch(() => undefined);
      if (!st)
        throw notFound(
          `bind mount source ${v.source} (for ${v.target}) does not exist; berth does not create it`,
        );
    }
    tx(this.o.db, () => {
      if (this.o.db.prepare('SELECT 1 FROM containers WHERE name = ?').get(name))
        throw conflict(`container name ${name} is already in use`);
      this.o.db
        .prepare(
          `INSERT INTO containers (id, name, image, spec_hash, spec, state, stop_signal, restart_policy,
             created_at, network_mode, ports)
           VALUES (?, ?, ?, ?, ?, 'creating', 'SIGTERM', ?, ?, ?, ?)`,
        )
        .run(
          id,
          name,
          image,
          specHash,
          requestJson,
          req.app.restart ?? 'no',
          Date.now(),
          mode,
          JSON.stringify(req.ports ?? []),
        );
    });
    const dir = this.containerDir(id);
    try {
      await fsp.mkdir(path.join(dir, 'bundle'), { recursive: true, mode: 0o711 });
      const rootfs = await this.o.rootfs.prepare(id, req.source, dir);
      const image_ = rootfs.imageConfig;
      const user = await resolveUserInRootfs(rootfs.path, req.app.user ?? image_?.User);
      const net: NetworkAttachment = await this.o.network.attach(id, mode, req.ports ?? []);
      const hostname = req.app.hostname ?? id.slice(0, 12);
      const etcFiles = await this.writeEtcFiles(dir, hostname, net.ipAddress);
      const { spec, stopSignal, anonymousVolumes } = buildBundleConfig({
        id,
        image: image_,
        arch: rootfs.architecture ?? this.o.arch,
        app: { ...req.app, hostname },
        user,
        rootfs: rootfs.path,
        ...(net.netnsPath ? { netnsPath: net.netnsPath } : {}),
        volumesDir: path.join(dir, 'volumes'),
        etcFiles,
      });
      for (const v of anonymousVolumes) await fsp.mkdir(v.source, { recursive: true });
      await writeFileAtomic(path.join(dir, 'bundle', 'config.json'), JSON.stringify(spec, null, 1));
      this.update(id, {
        state: 'created',
        stop_signal: stopSignal,
        ip_address: net.ipAddress ?? null,
        netns: net.netnsPath ?? null,
      });
      this.event('create', { id, name, image, request: req });
    } catch (err) {
      await this.cleanup(id, req).catch((e) =>
        this.o.log?.warn({ err: e, id }, 'cleanup after failed create'),
      );
      this.o.db.prepare('DELETE FROM containers WHERE id = ?').run(id);
      throw withContext(`create container ${name}`, err);
    }
    return this.inspect(id);
  }

  private async writeEtcFiles(dir: string, hostname: string, ip?: string) {
    const etc = path.join(dir, 'etc');
    await fsp.mkdir(etc, { recursive: true });
    await fsp.writeFile(path.join(etc, 'hosts'), hostsFile(hostname, ip, []));
    await fsp.writeFile(path.join(etc, 'hostname'), `${hostname}\n`);
    const resolv = await fsp.readFile('/etc/resolv.conf', 'utf8').catch(() => '');
    await fsp.writeFile(path.join(etc, 'resolv.conf'), resolv);
    return {
      hosts: path.join(etc, 'hosts'),
      hostname: path.join(etc, 'hostname'),
      resolvConf: path.join(etc, 'resolv.conf'),
    };
  }
  /**
   * Other containers' names and addresses in this one's /etc/hosts (the agent lists an app's services
   * there, as docker's embedded DNS would answer them). Written in place: the bind mount refers to the
   * file's inode, so a rename would not be seen inside the container.
   */
  /** Bridge isolation between containers by address (see NetworkManager.isolate). */
  isolate(members: readonly string[], pairs: ReadonlyArray<readonly [string, string]>): Promise<boolean> {
    return this.o.network.isolate(members, pairs);
  }

  async setExtraHosts(ref: string, entries: ReadonlyArray<{ ip: string; names: string[] }>): Promise<void> {
    const rec = await this.inspect(ref);
    const hostname = rec.request.app.hostname ?? rec.id.slice(0, 12);
    const file = path.join(this.containerDir(rec.id), 'etc', 'hosts');
    await fsp.writeFile(file, hostsFile(hostname, rec.ipAddress ?? undefined, entries));
  }

  // ---- start / stop / kill -------------------------------------------------------------------------

  async start(ref: string): Promise<ContainerRecord> {
    const rec = await this.inspect(ref);
    if (rec.state === 'running') return rec;
    if (rec.state !== 'created' && rec.state !== 'exited')
      throw conflict(`container ${rec.name} is ${rec.state}, cannot start`);
    const dir = this.containerDir(rec.id);
    // A leftover runtime container (earlier run, crash, reboot) would make `create` fail. A container never
    // started has none (a failed start deletes its own), which saves a runtime call on the hot path.
    if ((rec.startedAt !== null || rec.error !== null) && (await this.o.runtime.state(rec.id)))
      await this.o.runtime.delete(rec.id, { force: true });
    if (rec.networkMode === 'bridge' && rec.netns && !existsSync(rec.netns)) {
      // /run/netns is a tmpfs: after a reboot the netns, veth, bridge and rules are gone; the lease
      // (and so the address in /etc/hosts) is kept, so attach again with the same IP.
      const net = await this.o.network.attach(rec.id, 'bridge', rec.ports);
      if (net.netnsPath !== rec.netns || net.ipAddress !== rec.ipAddress)
        throw new BerthError(
          'Internal',
          `network for ${rec.name} came back different (${net.ipAddress}, ${net.netnsPath})`,
        );
    }
    await this.o.rootfs.remount(rec.id, rec.request.source, dir);
    await ensureOwnedBindSources(rec.request);
    for (const f of ['exit.json', 'pidfile', 'monitor.pid']) await fsp.rm(path.join(dir, f), { force: true });
    const { runtime, runtimeRoot, runtimeArgs } = this.o.runtime.monitorArgs();
    const args = [
      '--runtime',
      runtime,
      '--runtime-root',
      runtimeRoot,
      ...runtimeArgs.flatMap((a) => ['--runtime-arg', a]),
      '--id',
      rec.id,
      '--bundle',
      path.join(dir, 'bundle'),
      '--dir',
      dir,
      '--cgroup-path',
      `/berth/${rec.id}`,
      '--log-max-size',
      String(this.o.logMaxSize),
      '--log-max-files',
      String(this.o.logMaxFiles),
      '--sync-fd',
      '1',
    ];
    if (rec.request.autoRemove && this.o.autoRemoveCommand)
      args.push('--exit-command', ...this.o.autoRemoveCommand(rec.id));
    await fsp.mkdir(runtimeRoot, { recursive: true, mode: 0o700 });
    // The monitor detaches at once; its stdout (the sync fd) closes when the container runs or failed.
    const r = await exec(this.o.monitorPath, args, { timeoutMs: 60_000, allowFailure: true });
    let report: { ok: boolean; pid?: number; error?: string } | undefined;
    try {
      report = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
    } catch {
      report = undefined;
    }
    if (!report?.ok) {
      const runtimeLog = await this.runtimeErrors(rec.id);
      await this.o.runtime.delete(rec.id, { force: true }).catch(() => undefined);
      const why = report?.error ?? (r.stderr.trim() || `monitor exit ${r.code}`);
      this.update(rec.id, { error: `${why}${runtimeLog ? `: ${runtimeLog}` : ''}` });
      throw new BerthError(
        'Internal',
        `start container ${rec.name}: ${why}${runtimeLog ? `: ${runtimeLog}` : ''}`,
      );
    }
    const monitorPid = Number(
      (await fsp.readFile(path.join(dir, 'monitor.pid'), 'utf8').catch(() => '0')).trim(),
    );
    this.update(rec.id, {
      state: 'running',
      pid: report.pid ?? null,
      monitor_pid: monitorPid || null,
      started_at: Date.now(),
      finished_at: null,
      exit_code: null,
      oom_killed: 0,
      error: null,
      restart_count: rec.startedAt ? rec.restartCount + 1 : rec.restartCount,
    });
    this.event('start', rec);
    return this.inspect(rec.id);
  }

  /** The runtime's own error messages from its --log (json lines with level=error). */
  private async runtimeErrors(id: string): Promise<string> {
    const text = await fsp.readFile(path.join(this.containerDir(id), 'runtime.log'), 'utf8').catch(() => '');
    const msgs: string[] = [];
    for (const line of text.split('\n')) {
      try {
        const j = JSON.parse(line) as { level?: string; msg?: string };
        if (j.level === 'error' && j.msg) msgs.push(j.msg);
      } catch {
        if (line.trim()) msgs.push(line.trim());
      }
    }
    return msgs.slice(-2).join('; ');
  }

  async waitExit(ref: string, timeoutMs: number): Promise<ExitStatus | undefined> {
    const id = this.row(ref).id;
    const end = Date.now() + timeoutMs;
    for (;;) {
      const e = this.readExitFile(id);
      if (e) return e;
      if (Date.now() >= end) return undefined;
      const r = this.o.db.prepare('SELECT monitor_pid FROM containers WHERE id = ?').get(id) as
        | { monitor_pid: number | null }
        | undefined;
      if (!r || !this.monitorAlive(id, r.monitor_pid)) return this.readExitFile(id);
      await sleep(50);
    }
  }

  async kill(ref: string, signal = 'SIGKILL'): Promise<void> {
    const rec = await this.inspect(ref);
    if (rec.state !== 'running') throw conflict(`container ${rec.name} is not running`);
    await this.o.runtime.kill(rec.id, signal);
    this.event('kill', rec, { signal });
  }

  /** StopSignal, then SIGKILL after `timeoutSec` (docker's default 10). */
  async stop(ref: string, timeoutSec = 10): Promise<ContainerRecord> {
    const rec = await this.inspect(ref);
    if (rec.state !== 'running') return rec;
    const signalOk = await this.o.runtime
      .kill(rec.id, rec.stopSignal)
      .then(() => true)
      .catch((e) => {
        if (isBerthError(e, 'Conflict') || isBerthError(e, 'NotFound')) return false;
        throw e;
      });
    if (signalOk) this.event('kill', rec, { signal: rec.stopSignal });
    let exit = signalOk ? await this.waitExit(rec.id, timeoutSec * 1000) : undefined;
    if (!exit) {
      await this.o.runtime.kill(rec.id, 'SIGKILL').catch(() => undefined);
      this.event('kill', rec, { signal: 'SIGKILL' });
      exit = await this.waitExit(rec.id, 10_000);
    }
    const after = await this.inspect(rec.id);
    this.event('stop', rec);
    return after;
  }

  /** stop (StopSignal, SIGKILL after `timeoutSec`) then start, as `docker restart`. */
  async restart(ref: string, timeoutSec = 10): Promise<ContainerRecord> {
    const rec = await this.stop(ref, timeoutSec);
    const started = await this.start(rec.id);
    this.event('restart', started);
    return started;
  }

  // ---- remove / recover ----------------------------------------------------------------------------

  private async cleanup(id: string, req: CreateRequest): Promise<void> {
    await this.o.runtime.delete(id, { force: true }).catch((e) => {
      if (!isBerthError(e, 'NotFound')) throw e;
    });
    await this.o.network.detach(id, req.ports ?? []);
    const dir = this.containerDir(id);
    await this.o.rootfs.release(id, req.source, dir);
    await fsp.rm(dir, { recursive: true, force: true });
  }

  async remove(ref: string, opts: { force?: boolean } = {}): Promise<void> {
    let rec = await this.inspect(ref);
    if (rec.state === 'running') {
      if (!opts.force) throw conflict(`container ${rec.name} is running: stop it first or use --force`);
      await this.o.runtime.kill(rec.id, 'SIGKILL').catch(() => undefined);
      await this.waitExit(rec.id, 10_000);
      rec = await this.inspect(rec.id);
    }
    this.update(rec.id, { state: 'removing' });
    await this.cleanup(rec.id, rec.request);
    this.o.db.prepare('DELETE FROM containers WHERE id = ?').run(rec.id);
    this.event('destroy', rec);
  }

  /** At agent start: finish or undo what was in flight, reconcile the rest. */
  async recover(): Promise<{ undone: number; removed: number; reconciled: number }> {
    const rows = this.o.db.prepare('SELECT * FROM containers').all() as Row[];
    const out = { undone: 0, removed: 0, reconciled: 0 };
    for (const r of rows) {
      const req = JSON.parse(r.spec) as CreateRequest;
      if (r.state === 'creating' || r.state === 'removing') {
        await this.cleanup(r.id, req).catch((e) =>
          this.o.log?.warn({ err: e, id: r.id }, 'recovery cleanup'),
        );
        this.o.db.prepare('DELETE FROM containers WHERE id = ?').run(r.id);
        if (r.state === 'creating') out.undone++;
        else out.removed++;
      } else {
        await this.reconcile(r);
        out.reconciled++;
      }
    }
    return out;
  }

  /** Replace the app labels kept in the record (io.berth.* ones survive unless given); the process is untouched. */
  async updateLabels(ref: string, labels: Record<string, string>): Promise<void> {
    const r = this.row(ref);
    const req = JSON.parse(r.spec) as CreateRequest;
    const kept = Object.fromEntries(
      Object.entries(req.app.labels ?? {}).filter(([k]) => k.startsWith('io.berth.')),
    );
    req.app = { ...req.app, labels: { ...kept, ...labels } };
    this.update(r.id, { spec: JSON.stringify(req) });
  }

  // ---- exec ----------------------------------------------------------------------------------------

  /** The argv + env that runs `cmd` inside a running container (see the file comment for limits). */
  async execCommand(
    ref: string,
    cmd: string[],
    opts: { user?: { uid: number; gid: number }; env?: Record<string, string>; cwd?: string } = {},
  ): Promise<{ file: string; args: string[]; env: NodeJS.ProcessEnv }> {
    if (cmd.length === 0) throw invalidInput('exec needs a command');
    const rec = await this.inspect(ref);
    if (rec.state !== 'running') throw conflict(`container ${rec.name} is not running`);
    const st = await this.o.runtime.state(rec.id);
    if (!st?.pid || st.status !== 'running') throw conflict(`container ${rec.name} is not running (runtime)`);
    const viaRuntime = this.o.runtime.execArgv(rec.id, cmd, opts);
    if (viaRuntime) return { ...viaRuntime, env: process.env };
    const spec = JSON.parse(
      await fsp.readFile(path.join(this.containerDir(rec.id), 'bundle', 'config.json'), 'utf8'),
    ) as RuntimeSpec;
    const uid = opts.user?.uid ?? spec.process.user.uid;
    const gid = opts.user?.gid ?? spec.process.user.gid;
    const args = [
      `--target=${st.pid}`,
      '--mount',
      '--uts',
      '--ipc',
      '--pid',
      ...(spec.linux.namespaces.some((n) => n.type === 'network') ? ['--net'] : []),
      '--root',
      // no path: the init's cwd (/proc/<pid>/cwd). A path would be opened on the HOST before the
      // chroot, so -w is done by the container's own shell instead.
      '--wd',
      `--setuid=${uid}`,
      `--setgid=${gid}`,
      '--',
      ...(opts.cwd ? ['/bin/sh', '-c', 'cd "$0" && exec "$@"', opts.cwd, ...cmd] : cmd),
    ];
    const env: NodeJS.ProcessEnv = {};
    for (const kv of spec.process.env) {
      const i = kv.indexOf('=');
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    Object.assign(env, opts.env ?? {});
    const nsenter =
      this.o.nsenterPath ?? ['/usr/bin/nsenter', '/bin/nsenter'].find((p) => existsSync(p)) ?? 'nsenter';
    return { file: nsenter, args, env };
  }
}

/**
 * Bind sources berth owns on a tmpfs (the update lock dir) are made again when a reboot took them, behind
 * a parent only root walks through (src/agent/locks.ts).
 */
async function ensureOwnedBindSources(req: CreateRequest): Promise<void> {
  for (const v of req.app.volumes ?? []) {
    if (!v.ensure) continue;
    await fsp.mkdir(path.dirname(v.source), { recursive: true, mode: 0o700 });
    await fsp.mkdir(v.source, { recursive: true, mode: 0o755 });
  }
}

function hostsFile(
  hostname: string,
  ip: string | undefined,
  extra: ReadonlyArray<{ ip: string; names: string[] }>,
): string {
  let out = '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n';
  if (ip) out += `${ip}\t${hostname}\n`;
  for (const e of extra) out += `${e.ip}\t${e.names.join(' ')}\n`;
  return out;
}
