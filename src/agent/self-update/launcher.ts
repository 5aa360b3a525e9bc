/**
 * The launcher: the first thing `berth agent` does (docs/self-update.md). It runs in the executable the
 * init started (systemd's ExecStart, another init, a shell) and decides, from `<state-dir>/agent/`
 * alone, which version runs — the way a boot loader's boot counter picks a slot:
 *
 *   loop:
 *     decision = decideBoot(current, previous, trial journal, own version)     (src/core/self-update.ts)
 *     commit | rollback | discard-trial  → finish it from the journal, decide again
 *     trial      → count a boot, start the version as a child, watch it against the deadline:
 *                  every milestone reached → passed (stop it, commit, decide again: it runs for good)
 *                  exits, is killed, or the deadline passes first → failed (stop it, roll back, again)
 *     run        → exec the version (process.execve: same pid, the launcher is gone); without execve
 *                  (Node 20 executables) start it as a child and stay as its parent, passing signals on
 *     run-self   → run the agent in this process
 *   an agent that switched to a new version exits with RESTART_EXIT_CODE (or, exec'd, execs the
 *   launcher again; in this process it returns `restart`), and the loop decides again.
 *
 * A child started by the launcher connects back to it over a UNIX socket (a random path in the agent
 * dir, named in BERTH_LAUNCHER_SOCKET; the child opens it close-on-exec, so the agent's monitors and
 * containers never inherit it. Not an abstract socket: Node 20 and 22 name those differently):
 * a version on trial reports its milestones on it, and every child stops when it closes (the launcher
 * died), so no agent is ever left running beside the next one. A launcher that was killed during a
 * trial finds the child in the journal and ends it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import {
  type BootInput,
  decideBoot,
  judgeTrial,
  TRIAL_MILESTONES,
  type TrialMilestone,
  type TrialRecord,
} from '../../core/self-update.js';
import { fsyncDir, pathExists } from '../../lib/atomic.js';
import { errorMessage } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { processAlive } from '../../lib/process.js';
import type { AgentDir } from './files.js';

/** An agent that switched `current` exits with this so its launcher decides again (EX_TEMPFAIL). */
export const RESTART_EXIT_CODE = 75;

/** What a launcher tells the version it starts (environment). */
export const LAUNCH_ENV = {
  /** `exec` or `spawn`: run the agent itself, the launcher has decided */
  mode: 'BERTH_LAUNCHED',
  /** JSON argv that runs the launcher again (an exec'd agent execs it after a switch) */
  launcher: 'BERTH_LAUNCHER',
  /** the trial id, when the version is on trial */
  trial: 'BERTH_TRIAL',
  /** the UNIX socket path a spawned version connects to */
  socket: 'BERTH_LAUNCHER_SOCKET',
} as const;

export type AgentExit = { restart: true } | { restart: false; code: number };

type Execve = (file: string, args: string[], env: NodeJS.ProcessEnv) => never;

/** process.execve (Node ≥ 22.15), when this Node has it. */
export function processExecve(): Execve | undefined {
  const fn = (process as unknown as { execve?: Execve }).execve;
  return typeof fn === 'function' ? fn.bind(process) : undefined;
}

export interface LauncherOptions {
  dir: AgentDir;
  /** this executable's version */
  selfVersion: string;
  /** argv that runs this executable again with the same command line (for an exec'd agent) */
  selfArgv: string[];
  /** the command line a version is started with (`--config … agent …`) */
  agentArgs: string[];
  log: Logger;
  trialDeadlineMs: number;
  trialBoots: number;
  /** run the agent in this process (fresh state each call) */
  runSelf: () => Promise<AgentExit>;
  /** the live database's schema version, or 'unreadable' (missing, corrupt, not SQLite) */
  databaseSchema: (file: string) => Promise<number | 'unreadable'>;
  /** process.execve when available; undefined: versions run as children */
  execve?: Execve | undefined;
  env?: NodeJS.ProcessEnv;
  now?: () => number;
  /** grace between SIGTERM and SIGKILL when a child is stopped */
  stopGraceMs?: number;
  /** tests: called after each durable step of a commit or rollback (a kill -9 there must be survivable) */
  afterStep?: (step: LauncherStep) => void | Promise<void>;
}

export type LauncherStep =
  | 'trial-boot'
  | 'verdict'
  | 'db-decided'
  | 'db-restored'
  | 'current'
  | 'previous'
  | 'status'
  | 'pruned';

interface ChildRun {
  /** the process ended and its connection (if any) was read to the end */
  exit: Promise<{ code: number | null; signal: string | null }>;
  child: ChildProcess;
  /** milestones the child reported on its connection */
  onMilestone(fn: (m: TrialMilestone) => void): void;
}

export class Launcher {
  private readonly now: () => number;
  private current: ChildProcess | undefined;
  private readonly forward = (sig: NodeJS.Signals) => {
    this.interrupted = sig;
    this.current?.kill(sig);
  };
  private interrupted: NodeJS.Signals | undefined;

  constructor(private readonly o: LauncherOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Decide and run until the agent ends for good; resolves with the exit code to use. */
  async run(): Promise<number> {
    for (let round = 0; ; round++) {
      if (round > 50) throw new Error('launcher: no decision settled after 50 rounds');
      const input = await this.bootInput();
      const d = decideBoot(input);
      if (d.kind !== 'run-self' || d.dropCurrent) this.o.log.info({ decision: d.kind }, 'launcher');
      switch (d.kind) {
        case 'commit':
          await this.commit(d.trial);
          continue;
        case 'rollback':
          await this.rollback(d.trial, d.reason);
          continue;
        case 'discard-trial':
          this.o.log.warn({ version: d.trial.version, reason: d.reason }, 'switch not completed; discarded');
          // the staged version stays (the agent switches again); a half-written database copy goes
          await this.o.dir.prune([
            d.trial.version,
            d.trial.previous,
            input.current?.version ?? null,
            input.previous?.version ?? null,
          ]);
          if (d.trial.db) await fsp.rm(this.o.dir.dbCopyFile(d.trial.db.copy), { force: true });
          await this.o.dir.removeTrial();
          continue;
        case 'trial': {
          const code = await this.runTrial(d.trial);
          if (code !== undefined) return code;
          continue;
        }
        case 'run': {
          await this.o.dir.removeLeftovers();
          const r = await this.runVersion(d.version);
          if (r.restart) continue;
          return r.code;
        }
        case 'run-self': {
          await this.o.dir.removeLeftovers();
          if (d.dropCurrent) {
            this.o.log.warn({ reason: d.reason }, 'running the installed executable');
            await this.o.dir.setLink('current', null);
          }
          const r = await this.o.runSelf();
          if (r.restart) continue;
          return r.code;
        }
      }
    }
  }

  private async bootInput(): Promise<BootInput> {
    const { dir } = this.o;
    let trial: TrialRecord | null;
    try {
      trial = await dir.readTrial();
    } catch (err) {
      // Written atomically, so this is damage, not a cut-short write: go back to what ran before.
      const back = await dir.link('previous');
      this.o.log.error(
        { err: errorMessage(err), back },
        'trial journal unreadable; back to the previous version',
      );
      await dir.setLink('current', back);
      await dir.removeTrial();
      trial = null;
    }
    return {
      self: this.o.selfVersion,
      current: await dir.inspect(await dir.link('current')),
      previous: await dir.inspect(await dir.link('previous')),
      trial,
      maxTrialBoots: this.o.trialBoots,
      execAttempts: await dir.readExecAttempts(),
    };
  }

  // ---- trial ----------------------------------------------------------------------------------------

  /** One trial run; undefined when it was judged (decide again), else the exit code (interrupted). */
  private async runTrial(t: TrialRecord): Promise<number | undefined> {
    const { dir, log } = this.o;
    await this.endLeftover(t);
    const trial: TrialRecord = { ...t, boots: t.boots + 1, child: undefined };
    await dir.writeTrial(trial);
    await this.o.afterStep?.('trial-boot');
    await dir.setUpdate({ version: t.version, phase: 'trial', from: t.from, at: this.now() });
    log.info({ version: t.version, boot: trial.boots, deadlineMs: t.deadlineMs }, 'trial run');
    const started = this.now();
    const run = await this.startChild(t.version, { [LAUNCH_ENV.trial]: t.id });
    const pid = run.child.pid;
    if (pid) await dir.writeTrial({ ...trial, child: { pid, startTime: processStartTime(pid) ?? '' } });

    const reached = new Set<TrialMilestone>();
    let exit: { code: number | null; signal: string | null } | undefined;
    const verdict = await new Promise<ReturnType<typeof judgeTrial>>((resolve) => {
      const judge = () => {
        const j = judgeTrial({ reached, exit, elapsedMs: this.now() - started, deadlineMs: t.deadlineMs });
        if (j.result !== 'pending' || this.interrupted) {
          clearTimeout(timer);
          resolve(j);
        }
      };
      const timer = setTimeout(judge, Math.max(0, t.deadlineMs - (this.now() - started)) + 5);
      run.onMilestone((m) => {
        if (!reached.has(m)) log.info({ version: t.version, milestone: m }, 'trial milestone');
        reached.add(m);
        judge();
      });
      void run.exit.then((e) => {
        exit = e;
        judge();
      });
    });

    if (this.interrupted && verdict.result !== 'passed') {
      // Stopped from outside (systemctl stop, a signal): not the version's fault. The journal stays, so
      // the next start runs the trial again (its boot counter caps how often).
      const e = await run.exit;
      this.detach();
      log.warn(
        { version: t.version, signal: this.interrupted },
        'trial interrupted; it runs again at next start',
      );
      return e.code ?? 128 + signalNumber(this.interrupted);
    }
    if (verdict.result === 'passed') {
      log.info({ version: t.version, ms: this.now() - started }, 'trial passed');
      await dir.writeTrial({ ...trial, verdict: { result: 'passed' } });
      await this.stopChild(run, this.o.stopGraceMs ?? 30_000);
      return undefined;
    }
    const reason = verdict.result === 'failed' ? verdict.reason : 'trial ended';
    log.error({ version: t.version, reason }, 'trial failed');
    await this.stopChild(run, Math.min(this.o.stopGraceMs ?? 30_000, 5000));
    await dir.writeTrial({ ...trial, verdict: { result: 'failed', reason } });
    return undefined;
  }

  private async commit(t: TrialRecord): Promise<void> {
    const { dir, log } = this.o;
    await this.endLeftover(t);
    if (t.verdict?.result !== 'passed') await dir.writeTrial({ ...t, verdict: { result: 'passed' } });
    await this.o.afterStep?.('verdict');
    await dir.setLink('previous', t.previous);
    await this.o.afterStep?.('previous');
    await dir.writeStatus((s) => ({
      ...s,
      update: { version: t.version, phase: 'committed', from: t.from, at: this.now() },
    }));
    await this.o.afterStep?.('status');
    if (t.db) await fsp.rm(dir.dbCopyFile(t.db.copy), { force: true });
    await dir.prune([t.version, t.previous]);
    await this.o.afterStep?.('pruned');
    await dir.removeTrial();
    log.info({ version: t.version, previous: t.previous ?? 'installed' }, 'agent update committed');
  }

  private async rollback(t: TrialRecord, reason: string): Promise<void> {
    const { dir, log } = this.o;
    await this.endLeftover(t);
    let j: TrialRecord = t;
    if (j.verdict?.result !== 'failed') {
      j = { ...j, verdict: { result: 'failed', reason } };
      await dir.writeTrial(j);
    }
    await this.o.afterStep?.('verdict');
    const copy = j.db ? dir.dbCopyFile(j.db.copy) : undefined;
    if (j.restoreDb === undefined) {
      // Decided once, then redone until done: the version rolled back to must be able to open it.
      let restore = false;
      if (copy && j.db && (await pathExists(copy))) {
        const live = await this.o.databaseSchema(dir.dbFile);
        restore = live === 'unreadable' || live !== j.db.schema;
        log.info({ live, copy: j.db.schema, restore }, 'database at rollback');
      }
      j = { ...j, restoreDb: restore };
      await dir.writeTrial(j);
    }
    await this.o.afterStep?.('db-decided');
    if (j.restoreDb && copy && (await pathExists(copy))) {
      // The trial's WAL belongs to the database being replaced: never let it meet the copy.
      await fsp.rm(`${dir.dbFile}-wal`, { force: true });
      await fsp.rm(`${dir.dbFile}-shm`, { force: true });
      await fsp.rename(copy, dir.dbFile);
      await fsyncDir(path.dirname(dir.dbFile));
      log.warn({ schema: j.db?.schema }, 'database restored from the copy taken at the switch');
    }
    await this.o.afterStep?.('db-restored');
    await dir.setLink('current', t.previous);
    await this.o.afterStep?.('current');
    await dir.writeStatus((s) => ({
      ...s,
      failed: { ...s.failed, [t.version]: reason },
      update: { version: t.version, phase: 'rolled-back', from: t.from, reason, at: this.now() },
    }));
    await this.o.afterStep?.('status');
    if (copy) await fsp.rm(copy, { force: true });
    await dir.prune([t.previous, await dir.link('previous')]);
    await this.o.afterStep?.('pruned');
    await dir.removeTrial();
    log.error({ version: t.version, back: t.previous ?? 'installed', reason }, 'agent update rolled back');
  }

  /** A trial child a killed launcher left behind (same pid and start time): end it before going on. */
  private async endLeftover(t: TrialRecord): Promise<void> {
    const c = t.child;
    if (!c || c.pid === process.pid || !processAlive(c.pid)) return;
    if (processStartTime(c.pid) !== c.startTime) return;
    this.o.log.warn({ pid: c.pid, version: t.version }, 'ending the trial run a previous launcher left');
    try {
      process.kill(c.pid, 'SIGKILL');
    } catch {
      return;
    }
    for (let i = 0; i < 200 && processAlive(c.pid) && processStartTime(c.pid) === c.startTime; i++)
      await new Promise((r) => setTimeout(r, 25));
  }

  // ---- running a version ----------------------------------------------------------------------------

  private async runVersion(v: string): Promise<AgentExit> {
    const exe = this.o.dir.executable(v);
    const env = { ...this.baseEnv(), [LAUNCH_ENV.launcher]: JSON.stringify(this.o.selfArgv) };
    if (this.o.execve) {
      // A failed execve aborts this process (Node cannot catch it): count the attempt first, the version
      // clears the count once it runs, and decideBoot gives up on a version that never does.
      const tries = await this.o.dir.readExecAttempts();
      const count = tries?.version === v ? tries.count + 1 : 1;
      await this.o.dir.writeExecAttempts({ version: v, count });
      this.o.log.info({ version: v, exe, attempt: count }, 'exec');
      this.o.execve(exe, [exe, ...this.o.agentArgs], { ...env, [LAUNCH_ENV.mode]: 'exec' });
    }
    const run = await this.startChild(v, {});
    const e = await run.exit;
    this.detach();
    if (e.code === RESTART_EXIT_CODE) return { restart: true };
    if (this.interrupted) return { restart: false, code: e.code ?? 128 + signalNumber(this.interrupted) };
    return { restart: false, code: e.code ?? 128 + signalNumber((e.signal ?? 'SIGKILL') as NodeJS.Signals) };
  }

  private baseEnv(): NodeJS.ProcessEnv {
    const env = { ...(this.o.env ?? process.env) };
    for (const k of Object.values(LAUNCH_ENV)) delete env[k];
    return env;
  }

  private async startChild(v: string, extra: Record<string, string>): Promise<ChildRun> {
    const exe = this.o.dir.executable(v);
    this.interrupted = undefined;
    const name = socketPath(this.o.dir.root);
    const listeners: Array<(m: TrialMilestone) => void> = [];
    const seen: TrialMilestone[] = [];
    let conn: Socket | undefined;
    let connClosed: Promise<void> = Promise.resolve();
    const server = createServer((sock) => {
      if (conn) return sock.destroy(); // one connection: the child's
      conn = sock;
      connClosed = new Promise((r) => sock.once('close', () => r()));
      readMilestones(sock, (m) => {
        seen.push(m);
        for (const fn of listeners) fn(m);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(name, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.o.log.warn({ err: errorMessage(err) }, 'launcher socket'));
    server.unref();
    const child = spawn(exe, this.o.agentArgs, {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...this.baseEnv(), ...extra, [LAUNCH_ENV.mode]: 'spawn', [LAUNCH_ENV.socket]: name },
    });
    this.current = child;
    for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(s, this.forward);
    const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
      child.once('error', (err) => {
        this.o.log.error({ err: errorMessage(err), exe }, 'cannot start');
        server.close();
        void fsp.rm(name, { force: true });
        resolve({ code: 127, signal: null });
      });
      child.once('exit', (code, signal) => {
        // What the child wrote just before it ended is read before it is judged (2 s at most).
        const drained = Promise.race([connClosed, new Promise((r) => setTimeout(r, 2000).unref())]);
        void drained.then(() => {
          conn?.destroy();
          server.close();
          void fsp.rm(name, { force: true });
          resolve({ code, signal });
        });
      });
    });
    return {
      child,
      exit,
      onMilestone: (fn) => {
        listeners.push(fn);
        for (const m of seen) fn(m); // those that came before anyone listened
      },
    };
  }

  private detach(): void {
    for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.off(s, this.forward);
    this.current = undefined;
  }

  private async stopChild(run: ChildRun, graceMs: number): Promise<void> {
    run.child.kill('SIGTERM');
    const killer = setTimeout(() => run.child.kill('SIGKILL'), graceMs);
    await run.exit;
    clearTimeout(killer);
    this.detach();
  }
}

/** Milestones a trial child writes on its connection (one JSON line each); anything else is ignored. */
function readMilestones(sock: Socket, on: (m: TrialMilestone) => void): void {
  let buf = '';
  sock.on('data', (b: Buffer) => {
    buf += b.toString('utf8');
    if (buf.length > 64 * 1024) buf = '';
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        const m = (JSON.parse(line) as { milestone?: unknown }).milestone;
        if (TRIAL_MILESTONES.includes(m as TrialMilestone)) on(m as TrialMilestone);
      } catch {
        /* not a milestone */
      }
      nl = buf.indexOf('\n');
    }
  });
  sock.on('error', () => undefined);
}

/** A fresh socket path in the agent dir, or in the temp dir when that path would be too long. */
function socketPath(agentDir: string): string {
  const base = `launcher-${randomBytes(8).toString('hex')}.sock`;
  const p = path.join(agentDir, base);
  return Buffer.byteLength(p) <= 100 ? p : path.join(tmpdir(), `berth-${base}`);
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks): a pid reused by another process differs. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function signalNumber(sig: NodeJS.Signals): number {
  return ({ SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[sig] ?? 15;
}
