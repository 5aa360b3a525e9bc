import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { promises as fsp, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { waitFor } from './fleet-harness.js';
import { buildMultiArchImage } from './images.js';

export const REPO = path.resolve(import.meta.dirname, '..', '..');
export const BERTH_BUNDLE = path.join(REPO, 'dist', 'berth.mjs');

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), `berth-${prefix}-`));
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the built berth CLI (dist/berth.mjs, built by `npm test`'s bootstrap) synchronously. */
export function berth(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): CliResult {
  const r = spawnSync(process.execPath, [BERTH_BUNDLE, ...args], {
    env: { ...process.env, BERTH_LOG_LEVEL: 'warn', ...opts.env },
    input: opts.input,
    encoding: 'utf8',
    cwd: REPO,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Run the built berth CLI without blocking the event loop (what runs in this process — simulated devices,
 * an observer — keeps going while it runs).
 */
export function berthAsync(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const c = berthSpawn(args, env);
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    c.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Start the berth CLI without waiting (for kill -9 tests). */
export function berthSpawn(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawn(process.execPath, [BERTH_BUNDLE, ...args], {
    env: { ...process.env, BERTH_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: REPO,
  });
}

/** A long-running berth command (fleet serve, agent) at log level info, its output collected. */
export function berthStart(args: string[]): { p: ChildProcess; out: () => string } {
  let out = '';
  const p = spawn(process.execPath, [BERTH_BUNDLE, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, BERTH_LOG_LEVEL: 'info' },
  });
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (out += d));
  return { p, out: () => out };
}

/** `berth fleet serve` on a state dir and an external broker (the API off, or on `http`, e.g. 127.0.0.1:0). */
export function berthServe(o: { dir: string; broker: string; fleet: string; http?: string }): {
  p: ChildProcess;
  out: () => string;
} {
  return berthStart([
    ...['--state-dir', o.dir, 'fleet', 'serve', '--broker', o.broker, '--fleet', o.fleet],
    ...['--http', o.http ?? 'off'],
  ]);
}

/** SIGTERM and wait for the exit (no-op when it has exited, or was killed). */
export async function berthStop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await exited;
}

/** Wait until the `fleet serve` process `pid` on `dir` wrote its fleet-serve.json with its API; its URL. */
export async function servedApi(dir: string, pid: number | undefined): Promise<string> {
  let api = '';
  await waitFor(
    async () => {
      const s = await fsp.readFile(path.join(dir, 'fleet-serve.json'), 'utf8').catch(() => '{}');
      const served = JSON.parse(s) as { pid?: number; api?: string };
      if (served.pid !== pid || !served.api) return false;
      api = served.api;
      return true;
    },
    60_000,
    'fleet serve ready',
  );
  return api;
}

/** A fleet state dir `dir` with its key, and one small amd64 image pushed under each tag (built in `work`). */
export function keyedFleetWithImages(work: string, dir: string, tags: string[]): void {
  const run = (args: string[]) => {
    const r = berth(['--state-dir', dir, ...args]);
    if (r.code !== 0) throw new Error(`berth ${args.join(' ')}: ${r.stderr}`);
  };
  run(['fleet', 'keygen']);
  for (const tag of tags) {
    const img = buildMultiArchImage(
      path.join(work, tag.replace(':', '-')),
      [{ architecture: 'amd64' }],
      tag.replace(':', ''),
    );
    run(['fleet', 'push', img.layout, '--tag', tag]);
  }
}
