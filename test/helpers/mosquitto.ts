import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, promises as fsp, readdirSync } from 'node:fs';
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

/** Where Debian installs Mosquitto's dynamic security plugin (per-arch lib dir), if it is there. */
export function dynsecPluginPath(): string | undefined {
  const dirs = [
    '/usr/lib',
    ...readdirSync('/usr/lib')
      .filter((d) => d.endsWith('-linux-gnu'))
      .map((d) => `/usr/lib/${d}`),
  ];
  return dirs.map((d) => `${d}/mosquitto_dynamic_security.so`).find((f) => existsSync(f));
}

/** The dynamic-security admin account a Mosquitto started with `dynsec` has (what `fleet serve` logs in as). */
export interface DynsecAdmin {
  username: string;
  password: string;
}

/** A real Mosquitto on a free port, with kill -9 and restart for broker-loss tests. */
export class Mosquitto {
  /** set when started with `dynsec`: the plugin's admin account */
  admin: DynsecAdmin | undefined;

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

  /**
   * `dynsec`: authentication and ACLs by the dynamic security plugin (as docs/fleet-api.md sets it up):
   * `mosquitto_ctrl dynsec init` makes the admin account, anonymous clients are refused.
   */
  static async start(extraConf: string[] = [], opts: { dynsec?: DynsecAdmin } = {}): Promise<Mosquitto> {
    const port = await freePort();
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-mosq-'));
    const conf = path.join(dir, 'mosquitto.conf');
    const auth: string[] = ['allow_anonymous true'];
    if (opts.dynsec) {
      const plugin = dynsecPluginPath();
      if (!plugin) throw new Error('mosquitto_dynamic_security.so not found (Debian package mosquitto)');
      const json = path.join(dir, 'dynamic-security.json');
      execFileSync('mosquitto_ctrl', ['dynsec', 'init', json, opts.dynsec.username, opts.dynsec.password], {
        stdio: 'ignore',
      });
      auth.splice(0, 1, 'allow_anonymous false', `plugin ${plugin}`, `plugin_opt_config_file ${json}`);
      // started as root, mosquitto runs as the mosquitto user: it must read and rewrite the plugin's file
      if (process.getuid?.() === 0) {
        try {
          const uid = Number(execFileSync('id', ['-u', 'mosquitto']).toString());
          const gid = Number(execFileSync('id', ['-g', 'mosquitto']).toString());
          await fsp.chown(dir, uid, gid);
          await fsp.chown(json, uid, gid);
        } catch {
          auth.push('user root'); // no mosquitto user on this machine: stay root
        }
      }
    }
    await fsp.writeFile(
      conf,
      [
        `listener ${port} 127.0.0.1`,
        ...auth,
        'max_queued_messages 10000',
        'set_tcp_nodelay true',
        ...extraConf,
        '',
      ].join('\n'),
    );
    const m = new Mosquitto(port, conf, dir);
    m.admin = opts.dynsec;
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
