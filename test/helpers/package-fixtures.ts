import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
export const ROOT = path.resolve(import.meta.dirname, '..', '..');

export interface ArchDef {
  arch: string;
  nodeArch: string;
  node: { package: string; version: string };
  packager: 'pkg' | 'sea';
  triple: string;
  ociPlatform: string;
  debArch: string;
  qemu: string | null;
}

export function loadArchDef(arch: string): ArchDef {
  return JSON.parse(readFileSync(path.join(ROOT, 'arch', `${arch}.json`), 'utf8')) as ArchDef;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a packaged executable: natively for x64, under qemu-user with the cross sysroot otherwise. */
export async function runExe(
  def: ArchDef,
  exe: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<RunResult> {
  const [file, argv] = def.qemu ? [def.qemu, ['-L', `/usr/${def.triple}`, exe, ...args]] : [exe, args];
  try {
    const { stdout, stderr } = await execFileAsync(file, argv, {
      env,
      maxBuffer: 16 << 20,
      timeout: 120_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** Run one of the extracted native programs (static binaries: qemu-user needs no sysroot). */
export function runNative(def: ArchDef, file: string, args: string[]): Promise<RunResult> {
  return runExe(def, file, args);
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.connect(port, '127.0.0.1');
  });
}

/** A real Mosquitto on a free loopback port; stop() ends it. */
export async function startMosquitto(): Promise<{ port: number; url: string; stop: () => void }> {
  const port = await freePort();
  const child: ChildProcess = spawn('mosquitto', ['-p', String(port)], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !(await canConnect(port)); i++) await new Promise((r) => setTimeout(r, 50));
  if (!(await canConnect(port))) {
    child.kill();
    throw new Error(`mosquitto did not listen on ${port}`);
  }
  return { port, url: `mqtt://127.0.0.1:${port}`, stop: () => child.kill() };
}

/** The retained message on `topic`, read with mosquitto_sub. */
export async function retained(port: number, topic: string): Promise<string> {
  const { stdout } = await execFileAsync('mosquitto_sub', [
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    '-t',
    topic,
    '-C',
    '1',
    '-W',
    '10',
  ]);
  return stdout.trim();
}

export { execFileAsync };
