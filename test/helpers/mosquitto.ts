import { type ChildProcess, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

/** A free TCP port on 127.0.0.1 (bound then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function waitListening(port: number, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = createConnection({ port, host: '127.0.0.1' }, () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`mosquitto did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A real Mosquitto on a free port, with kill -9 and restart for broker-loss tests. */
export class Mosquitto {
  private proc: ChildProcess | undefined;
  restarts = 0;
  private constructor(
    readonly port: number,
    readonly conf: string,
    readonly dir: string,
  ) {}

  /** The broker's process id (undefined while it is down). */
  get pid(): number | undefined {
    return this.proc?.exitCode === null && this.proc.signalCode === null ? this.proc.pid : undefined;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  static async start(extraConf: string[] = []): Promise<Mosquitto> {
    const port = await freePort();
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-mosq-'));
    const conf = path.join(dir, 'mosquitto.conf');
    await fsp.writeFile(
      conf,
      [
        `listener ${port} 127.0.0.1`,
        'allow_anonymous true',
        'max_queued_messages 10000',
        'set_tcp_nodelay true',
        ...extraConf,
        '',
      ].join('\n'),
    );
    const m = new Mosquitto(port, conf, dir);
    await m.spawn();
    return m;
  }

  private async spawn(): Promise<void> {
    this.proc = spawn('mosquitto', ['-c', this.conf], { stdio: 'ignore' });
    await waitListening(this.port);
  }

  /** SIGKILL: no clean shutdown, clients see the socket drop. */
  async kill(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return; // already gone: no 'exit' to wait for
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  async restart(downMs = 200): Promise<void> {
    await this.kill();
    await new Promise((r) => setTimeout(r, downMs));
    await this.spawn();
    this.restarts++;
  }

  async stop(): Promise<void> {
    await this.kill();
    await fsp.rm(this.dir, { recursive: true, force: true });
  }
}
