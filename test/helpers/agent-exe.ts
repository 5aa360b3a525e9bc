/**
 * `berth agent` from a packaged executable, as an init would start it: once (no supervisor), or again 500 ms
 * after every exit, always from the installed executable (like systemd's Restart=always). For the
 * self-update test and bench.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';

export class AgentExe {
  proc: ChildProcess | undefined;
  starts = 0;
  private stopping = false;
  private exited: Promise<void> = Promise.resolve();

  constructor(
    readonly o: {
      exe: string;
      stateDir: string;
      deviceId: string;
      fleet: string;
      broker: string;
      fleetKeyFile: string;
      config: string;
      log: string;
      restartAlways: boolean;
    },
  ) {}

  get pid(): number | undefined {
    return this.proc && this.proc.exitCode === null && this.proc.signalCode === null
      ? this.proc.pid
      : undefined;
  }

  start(): void {
    const { o } = this;
    const fd = openSync(o.log, 'a');
    const args = ['--state-dir', o.stateDir, '--config', o.config, '--log-level', 'info', 'agent'];
    args.push('--broker', o.broker, '--fleet', o.fleet, '--device-id', o.deviceId);
    args.push('--fleet-key', o.fleetKeyFile, '--mqtt-version', '4');
    const p = spawn(o.exe, args, { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    this.proc = p;
    this.starts++;
    this.exited = new Promise((r) =>
      p.once('exit', () => {
        r();
        if (o.restartAlways && !this.stopping) setTimeout(() => this.stopping || this.start(), 500);
      }),
    );
  }

  /** SIGTERM (SIGKILL after 20 s); no restart after it. */
  async stop(): Promise<void> {
    this.stopping = true;
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGTERM');
    const k = setTimeout(() => p.kill('SIGKILL'), 20_000);
    await this.exited;
    clearTimeout(k);
  }

  /** Start again after a stop. */
  restart(): void {
    this.stopping = false;
    this.start();
  }

  logTail(n = 40): string {
    try {
      return readFileSync(this.o.log, 'utf8').trimEnd().split('\n').slice(-n).join('\n');
    } catch {
      return '(no log)';
    }
  }
}
