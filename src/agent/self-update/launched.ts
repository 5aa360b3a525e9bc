/**
 * The agent's side of the launcher (launcher.ts): how it was started, reporting trial milestones on the
 * launcher's socket, stopping when that socket closes (the launcher is gone), and going back to the
 * launcher after a switch. The socket is opened by this process (close-on-exec), so nothing it starts
 * — monitors, containers — inherits it.
 */
import { connect, type Socket } from 'node:net';
import type { TrialMilestone } from '../../core/self-update.js';
import { LAUNCH_ENV, processExecve, RESTART_EXIT_CODE } from './launcher.js';

export type LaunchMode = 'in-process' | 'exec' | 'spawn';

export interface Launched {
  mode: LaunchMode;
  /** set when this run is a version's trial */
  trialId: string | undefined;
  milestone(m: TrialMilestone): void;
  /** called once when the launcher that started this process is gone (spawned runs only) */
  onLauncherGone(fn: () => void): void;
  /**
   * After a switch: back to the launcher. exec → exec the launcher (never returns); spawn → the exit
   * code the launcher waits for; in-process → undefined (the launcher loop goes on).
   */
  restart(): number | undefined;
  close(): void;
}

/**
 * How this `berth agent` was started: by a launcher (env), or undefined (it is the launcher). The
 * launcher's variables are taken out of `env`, so what the agent starts (monitors) does not see them.
 */
export function launchedFromEnv(env: NodeJS.ProcessEnv): Launched | undefined {
  const mode = env[LAUNCH_ENV.mode];
  if (mode !== 'exec' && mode !== 'spawn') return undefined;
  const trialId = env[LAUNCH_ENV.trial] || undefined;
  const launcherArgv = parseArgv(env[LAUNCH_ENV.launcher]);
  const name = env[LAUNCH_ENV.socket];
  for (const k of Object.values(LAUNCH_ENV)) delete env[k];
  let sock: Socket | undefined;
  const gone: Array<() => void> = [];
  if (mode === 'spawn' && name) {
    // Queued writes (milestones) go out once connected. Only a connection that was up and then closed
    // means the launcher is gone; one that never came up is just a lost channel (a trial then fails).
    const s = connect(name);
    let up = false;
    s.once('connect', () => {
      up = true;
    });
    s.on('error', () => undefined);
    s.once('close', () => {
      if (up) for (const fn of gone.splice(0)) fn();
    });
    s.resume();
    // The agent keeps itself alive; a command that fails before it starts must still exit.
    s.unref();
    sock = s;
  }
  return {
    mode,
    trialId,
    milestone(m) {
      if (trialId && sock && !sock.destroyed) sock.write(`${JSON.stringify({ milestone: m })}\n`);
    },
    onLauncherGone(fn) {
      gone.push(fn);
    },
    restart() {
      if (mode === 'spawn') return RESTART_EXIT_CODE;
      const execve = processExecve();
      if (!launcherArgv || !execve) return RESTART_EXIT_CODE;
      return execve(launcherArgv[0]!, launcherArgv, { ...env });
    },
    close() {
      gone.length = 0;
      sock?.destroy();
    },
  };
}

/** The launcher running the agent in its own process. */
export function inProcessLaunch(): Launched {
  return {
    mode: 'in-process',
    trialId: undefined,
    milestone: () => undefined,
    onLauncherGone: () => undefined,
    restart: () => undefined,
    close: () => undefined,
  };
}

function parseArgv(s: string | undefined): string[] | undefined {
  if (!s) return undefined;
  try {
    const v = JSON.parse(s) as unknown;
    return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string') ? v : undefined;
  } catch {
    return undefined;
  }
}
