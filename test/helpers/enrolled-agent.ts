/**
 * The operator's stack as the end-to-end tests run it, all real, from the built bundle: `berth fleet serve`
 * (embedded broker with authentication, HTTP API on a free port) with a first admin, the sample image as
 * an oci-archive to upload, and a `berth agent --enroll` device that runs from its enrollment. Each piece
 * registers its own teardown (processes stopped, the device's containers removed, its mounts gone).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, promises as fsp, openSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { connectAgent } from '../../src/agent/api-client.js';
import { exec } from '../../src/lib/exec.js';
import { mountsUnder } from './agent-process.js';
import { buildSampleImages } from './agent-stack.js';
import { BERTH_BUNDLE } from './cli.js';
import { waitFor } from './fleet-harness.js';

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  input?: string;
  allowFailure?: boolean;
}

/** One `berth` command from the bundle (warnings only); throws on a non-zero exit unless allowed. */
export function runBerth(args: string[], o: RunOptions = {}) {
  return exec(process.execPath, [BERTH_BUNDLE, '--log-level', 'warn', ...args], {
    allowFailure: o.allowFailure ?? false,
    timeoutMs: 240_000,
    ...(o.env ? { env: { ...process.env, ...o.env } } : {}),
    ...(o.input !== undefined ? { input: o.input } : {}),
  });
}

/** SIGTERM, SIGKILL after 15 s; resolves when the process is gone. */
export async function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), 15_000);
  await gone;
  clearTimeout(timer);
}

export interface FleetServer {
  /** http://127.0.0.1:<port> (the API is under /api/v1, the console at /) */
  url: string;
  /** what `fleet serve` printed so far */
  output(): string;
}

/** A fleet key, an admin with `password` on `fleetDir`, then `fleet serve --fleet <fleet>` until the test ends. */
export async function startFleetServer(
  t: ExecutionContext,
  o: { fleetDir: string; fleet: string; password: string },
): Promise<FleetServer> {
  await runBerth(['--state-dir', o.fleetDir, 'fleet', 'keygen']);
  await runBerth(
    ['--state-dir', o.fleetDir, 'fleet', 'user', 'add', 'admin', '--role', 'admin', '--password-stdin'],
    { input: `${o.password}\n` },
  );
  let out = '';
  const serve = spawn(
    process.execPath,
    [
      ...[
        BERTH_BUNDLE,
        '--state-dir',
        o.fleetDir,
        '--log-level',
        'info',
        'fleet',
        'serve',
        '--fleet',
        o.fleet,
      ],
      ...['--listen', '127.0.0.1:0', '--http', '127.0.0.1:0'],
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  serve.stdout.on('data', (d) => (out += d));
  serve.stderr.on('data', (d) => (out += d));
  t.teardown(() => stopProcess(serve));
  await waitFor(() => out.includes('API on') || serve.exitCode !== null, 30_000, 'fleet serve');
  t.is(serve.exitCode, null, out);
  return { url: /API on (http:\/\/[^\s]+)\/api\/v1/.exec(out)![1]!, output: () => out };
}

/** The sample image v1 as an oci-archive `sample:v1` under `work` (what an operator uploads). */
export async function sampleArchive(work: string): Promise<string> {
  const layouts = await buildSampleImages(path.join(work, 'images'), ['v1']);
  const archive = path.join(work, 'sample-v1.tar');
  await exec('skopeo', [
    '--insecure-policy',
    'copy',
    '-q',
    `oci:${layouts.v1}:v1`,
    `oci-archive:${archive}:sample:v1`,
  ]);
  return archive;
}

export interface EnrolledAgent {
  /** the last 30 lines of the agent's log */
  tail(): string;
}

/**
 * `berth agent --enroll <url> --token <token>` on `deviceDir` with the config text `config` (its timings),
 * until its local API answers. At the end: stopped, its containers removed, its mounts undone.
 */
export async function startEnrolledAgent(
  t: ExecutionContext,
  o: { work: string; deviceDir: string; deviceId: string; url: string; token: string; config: string },
): Promise<EnrolledAgent> {
  const config = path.join(o.work, 'device.yml');
  await fsp.writeFile(config, o.config);
  const log = path.join(o.work, 'agent.log');
  const fd = openSync(log, 'a');
  const agent = spawn(
    process.execPath,
    [
      ...['--max-semi-space-size=1', BERTH_BUNDLE, '--state-dir', o.deviceDir, '--config', config],
      ...['--log-level', 'info', 'agent', '--enroll', o.url, '--token', o.token, '--device-id', o.deviceId],
    ],
    { stdio: ['ignore', fd, fd] },
  );
  closeSync(fd);
  t.teardown(async () => {
    await stopProcess(agent);
    const ps = await runBerth(['--state-dir', o.deviceDir, 'ps', '-a', '--json'], { allowFailure: true });
    if (ps.code === 0)
      for (const c of JSON.parse(ps.stdout) as Array<{ name: string }>)
        await runBerth(['--state-dir', o.deviceDir, 'rm', '-f', c.name], { allowFailure: true });
    for (const m of mountsUnder(o.deviceDir)) await exec('umount', ['-l', m], { allowFailure: true });
  });
  const tail = () => readFileSync(log, 'utf8').split('\n').slice(-30).join('\n');
  await waitFor(
    async () => {
      if (agent.exitCode !== null) throw new Error(`agent exited:\n${tail()}`);
      return (await connectAgent(o.deviceDir, 500)) !== undefined;
    },
    60_000,
    'the agent',
  );
  return { tail };
}
