/**
 * The runtime contract and its one driver: the OCI runtime command line (runtime-spec "runtime.md"
 * operations) that berth-runtime, runc and crun all speak.
 *
 * Lifecycle of a container, as the runtime sees it:
 *   create(id, bundle) → state "created" (init process waiting, namespaces and cgroup set up)
 *   start(id)          → "running" (the user process is exec'd)
 *   kill(id, signal)   → the process gets the signal; when it exits → "stopped"
 *   delete(id)         → gone (cgroup and runtime state removed); `force` kills a running one first
 * `state(id)` returns the spec's state JSON, or undefined when the runtime does not know the id.
 * A failed operation leaves the state unchanged (the spec's rule); errors name the runtime and verb.
 *
 * In production `create` + `start` are run by berth-monitor (native/monitor), which must be the parent of
 * the container to hold its stdio and reap it; `monitorArgs()` hands it the binary and global flags.
 * The driver's own `create` is for tests and tooling: the container inherits the runtime's stdio, so it
 * goes to files, not to pipes we would wait on.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, promises as fsp, openSync } from 'node:fs';
import * as path from 'node:path';
import type { Config } from '../config/schema.js';
import { BerthError, conflict, notFound } from '../lib/errors.js';
import { exec } from '../lib/exec.js';
import { assertSafeName } from '../lib/ids.js';
import type { NativeParts } from '../lib/native.js';

export type OciStatus = 'creating' | 'created' | 'running' | 'stopped' | 'paused';

export interface OciState {
  ociVersion: string;
  id: string;
  status: OciStatus;
  pid?: number;
  bundle: string;
  annotations?: Record<string, string>;
}

export interface CreateOptions {
  pidFile?: string;
  consoleSocket?: string;
  /** Where the container's stdout/stderr go (the driver's own create only); default /dev/null. */
  stdioFile?: string;
}

/** A process to run in a running container (`<runtime> exec`); unset fields come from its config.json. */
export interface ExecOptions {
  user?: { uid: number; gid: number };
  /** Added to (and overriding) the container's process.env. */
  env?: Record<string, string>;
  cwd?: string;
  /** A whole runtime-spec process object (written to a file for --process); args then come from it. */
  processFile?: string;
  detach?: boolean;
  pidFile?: string;
}

/** Runtimes whose CLI has runc's `exec`, `pause`, `resume` (berth-runtime since exec.c, runc, crun). */
const HAS_EXEC = new Set(['berth', 'runc', 'crun']);

export interface OciRuntime {
  /** "berth", "runc", "crun": for messages and the state root. */
  readonly name: string;
  readonly binary: string;
  /** The runtime's --root (its state directory). */
  readonly root: string;
  create(id: string, bundle: string, opts?: CreateOptions): Promise<void>;
  start(id: string): Promise<void>;
  state(id: string): Promise<OciState | undefined>;
  kill(id: string, signal?: string, opts?: { all?: boolean }): Promise<void>;
  delete(id: string, opts?: { force?: boolean }): Promise<void>;
  /** What berth-monitor needs to run create/start itself (extra global flags in runtimeArgs). */
  monitorArgs(): { runtime: string; runtimeRoot: string; runtimeArgs: string[] };
  /**
   * argv for `<runtime> exec` of cmd in the running container, or undefined when the runtime has no exec
   * (the caller falls back to nsenter). The caller spawns it to share its stdio; the exit code is cmd's.
   */
  execArgv(id: string, cmd: string[], opts?: ExecOptions): { file: string; args: string[] } | undefined;
  /** Run cmd in the container and collect its output (tests, tooling; stdio are pipes). */
  exec(
    id: string,
    cmd: string[],
    opts?: ExecOptions,
  ): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Freeze / thaw every process of the container (state "paused" while frozen). */
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
}

const NOT_EXIST = /does not exist|not exist|no such container|not found/i;
const NOT_RUNNING = /not running|container is stopped|cannot kill a stopped|is not running/i;

/** One driver for every runtime that speaks the OCI CLI; only the binary and the root differ. */
export class OciCliRuntime implements OciRuntime {
  constructor(
    readonly name: string,
    readonly binary: string,
    readonly root: string,
    private readonly timeoutMs = 30_000,
  ) {}

  private async run(verb: string, args: string[], allowFailure = false) {
    return exec(this.binary, ['--root', this.root, verb, ...args], {
      timeoutMs: this.timeoutMs,
      allowFailure,
    });
  }

  private fail(verb: string, id: string, stderr: string, code: number): BerthError {
    const msg = `${this.name} ${verb} ${id}: ${stderr.trim().split('\n').slice(-3).join('; ') || `exit ${code}`}`;
    if (NOT_EXIST.test(stderr)) return notFound(msg);
    if (NOT_RUNNING.test(stderr)) return conflict(msg);
    return new BerthError('Internal', msg);
  }

  async create(id: string, bundle: string, opts: CreateOptions = {}): Promise<void> {
    assertSafeName('container id', id);
    await fsp.mkdir(this.root, { recursive: true, mode: 0o700 });
    const args = ['--root', this.root, 'create', '--bundle', bundle];
    if (opts.pidFile) args.push('--pid-file', opts.pidFile);
    if (opts.consoleSocket) args.push('--console-socket', opts.consoleSocket);
    args.push(id);
    const out = openSync(opts.stdioFile ?? '/dev/null', 'a');
    const errFile = path.join(bundle, `.create-${id}.err`);
    const err = openSync(errFile, 'w');
    try {
      // Not through exec(): the container inherits these descriptors, so they must be files.
      const code = await new Promise<number>((resolve, reject) => {
        const child = spawn(this.binary, args, { stdio: ['ignore', out, opts.stdioFile ? out : err] });
        child.on('error', reject);
        child.on('exit', (c) => resolve(c ?? -1));
      });
      if (code !== 0) {
        const stderr = await fsp.readFile(errFile, 'utf8').catch(() => '');
        throw this.fail('create', id, stderr, code);
      }
    } finally {
      closeSync(out);
      closeSync(err);
      await fsp.rm(errFile, { force: true });
    }
  }

  async start(id: string): Promise<void> {
    const r = await this.run('start', [id], true);
    if (r.code !== 0) throw this.fail('start', id, r.stderr, r.code);
  }

  async state(id: string): Promise<OciState | undefined> {
    const r = await this.run('state', [id], true);
    if (r.code !== 0) {
      if (NOT_EXIST.test(r.stderr)) return undefined;
      throw this.fail('state', id, r.stderr, r.code);
    }
    const s = JSON.parse(r.stdout) as OciState;
    if (s.pid === 0) delete s.pid;
    return s;
  }

  async kill(id: string, signal = 'SIGTERM', opts: { all?: boolean } = {}): Promise<void> {
    const r = await this.run('kill', [...(opts.all ? ['--all'] : []), id, signal], true);
    if (r.code !== 0) throw this.fail('kill', id, r.stderr, r.code);
  }

  async delete(id: string, opts: { force?: boolean } = {}): Promise<void> {
    const r = await this.run('delete', [...(opts.force ? ['--force'] : []), id], true);
    if (r.code !== 0) throw this.fail('delete', id, r.stderr, r.code);
  }

  execArgv(id: string, cmd: string[], opts: ExecOptions = {}): { file: string; args: string[] } | undefined {
    if (!HAS_EXEC.has(this.name)) return undefined;
    assertSafeName('container id', id);
    const args = ['--root', this.root, 'exec'];
    if (opts.processFile) args.push('--process', opts.processFile);
    if (opts.detach) args.push('--detach');
    if (opts.pidFile) args.push('--pid-file', opts.pidFile);
    if (opts.cwd) args.push('--cwd', opts.cwd);
    if (opts.user) args.push('--user', `${opts.user.uid}:${opts.user.gid}`);
    for (const [k, v] of Object.entries(opts.env ?? {})) args.push('--env', `${k}=${v}`);
    args.push(id, ...(opts.processFile ? [] : cmd));
    return { file: this.binary, args };
  }

  async exec(
    id: string,
    cmd: string[],
    opts: ExecOptions = {},
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const argv = this.execArgv(id, cmd, opts);
    if (!argv) throw new BerthError('Unsupported', `${this.name} has no exec verb`);
    const r = await exec(argv.file, argv.args, { timeoutMs: this.timeoutMs, allowFailure: true });
    // the runtime's own failures (no such container, not running) are errors; cmd's exit codes are not
    if (r.code !== 0 && /^(berth-runtime|time=|level=error|ERRO)/m.test(r.stderr) && NOT_EXIST.test(r.stderr))
      throw this.fail('exec', id, r.stderr, r.code);
    return { code: r.code, stdout: r.stdout, stderr: r.stderr };
  }

  async pause(id: string): Promise<void> {
    const r = await this.run('pause', [id], true);
    if (r.code !== 0) throw this.fail('pause', id, r.stderr, r.code);
  }

  async resume(id: string): Promise<void> {
    const r = await this.run('resume', [id], true);
    if (r.code !== 0) throw this.fail('resume', id, r.stderr, r.code);
  }

  monitorArgs(): { runtime: string; runtimeRoot: string; runtimeArgs: string[] } {
    // runc and crun log JSON on request; berth-runtime's --log has one format (only --root/--log are standard).
    return {
      runtime: this.binary,
      runtimeRoot: this.root,
      runtimeArgs: this.name === 'runc' || this.name === 'crun' ? ['--log-format', 'json'] : [],
    };
  }
}

const WELL_KNOWN: Record<string, string[]> = {
  runc: ['/usr/sbin/runc', '/usr/bin/runc', '/usr/local/sbin/runc', '/usr/local/bin/runc'],
  crun: ['/usr/bin/crun', '/usr/local/bin/crun', '/usr/sbin/crun'],
};

/**
 * Find a runtime binary: an explicit path wins; berth's own is one of the native parts; runc/crun from
 * PATH-ish dirs.
 */
export function locateRuntime(
  name: Config['runtime']['name'],
  explicit: string | undefined,
  native: NativeParts,
): string {
  if (explicit) {
    if (!existsSync(explicit)) throw notFound(`runtime binary ${explicit} (runtime.path) does not exist`);
    return path.resolve(explicit);
  }
  if (name === 'berth') return native.path('runtime');
  const found = WELL_KNOWN[name]?.find((p) => existsSync(p));
  if (!found)
    throw notFound(`runtime ${name} not found (looked in ${WELL_KNOWN[name]?.join(', ')}); set runtime.path`);
  return found;
}

/** The runtime from config: runtime.name selects, runtime.path overrides; state under <stateDir>/runtime/<name>. */
export function runtimeFromConfig(
  cfg: Config['runtime'],
  stateDir: string,
  native: NativeParts,
): OciCliRuntime {
  const binary = locateRuntime(cfg.name, cfg.path, native);
  return new OciCliRuntime(cfg.name, binary, path.join(stateDir, 'runtime', cfg.name));
}

/**
 * A runtime located on first use, so commands that may not need it (`ps`, `logs` of exited containers)
 * work even when the configured runtime binary is missing.
 */
export class LazyRuntime implements OciRuntime {
  private inner?: OciRuntime;
  constructor(private readonly make: () => OciRuntime) {}
  private get r(): OciRuntime {
    if (!this.inner) this.inner = this.make();
    return this.inner;
  }
  /** Locate the runtime now (errors now rather than on first use). */
  resolve(): OciRuntime {
    return this.r;
  }
  get name() {
    return this.r.name;
  }
  get binary() {
    return this.r.binary;
  }
  get root() {
    return this.r.root;
  }
  create(id: string, bundle: string, opts?: CreateOptions) {
    return this.r.create(id, bundle, opts);
  }
  start(id: string) {
    return this.r.start(id);
  }
  state(id: string) {
    return this.r.state(id);
  }
  kill(id: string, signal?: string, opts?: { all?: boolean }) {
    return this.r.kill(id, signal, opts);
  }
  delete(id: string, opts?: { force?: boolean }) {
    return this.r.delete(id, opts);
  }
  monitorArgs() {
    return this.r.monitorArgs();
  }
  execArgv(id: string, cmd: string[], opts?: ExecOptions) {
    return this.r.execArgv(id, cmd, opts);
  }
  exec(id: string, cmd: string[], opts?: ExecOptions) {
    return this.r.exec(id, cmd, opts);
  }
  pause(id: string) {
    return this.r.pause(id);
  }
  resume(id: string) {
    return this.r.resume(id);
  }
}
