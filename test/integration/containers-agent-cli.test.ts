/**
 * `berth ps | run | logs | stop | start | kill | rm | exec` while `berth agent` runs on the same state dir:
 * every command goes through the agent's local API (so the CLI and the reconciler never race), and acts
 * on the state dir directly again once the agent is gone. Real agent process, runc, berth-monitor.
 *
 * How the test tells the two paths apart: `ps --json` through the agent carries the API's fields
 * (`managed`, `status`), the direct one the runtime's record (`request`); containers the agent created
 * carry its io.berth.adhoc label.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { exec } from '../../src/lib/exec.js';
import { needPrivileges } from '../helpers/privileged.js';
import { BERTH, cliEnv, waitUntil } from '../helpers/runtime-cli.js';
import { removeSharedBusyboxRootfs } from '../helpers/runtime-rootfs.js';

test.after.always(removeSharedBusyboxRootfs);

function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    p.once('exit', () => resolve());
    p.kill('SIGTERM');
  });
}

test('with an agent running the container commands go through its API; without, to the state dir', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(180_000);
  const env = await cliEnv(t);
  const agent = spawn(
    process.execPath,
    [BERTH, '--state-dir', env.stateDir, '--config', env.configPath, 'agent', '--offline'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let agentErr = '';
  agent.stderr!.on('data', (d: Buffer) => {
    agentErr += d.toString();
  });
  // before cliEnv's teardown (ava runs teardowns last-registered first): containers are removed directly
  t.teardown(() => stopProcess(agent));
  const sock = path.join(env.stateDir, 'berth.sock');
  await waitUntil('the agent socket', async () => existsSync(sock) && agent.exitCode === null, 30_000).catch(
    (err) => {
      t.log(agentErr);
      throw err;
    },
  );

  /** `berth run <opts> --network none --rootfs <busybox> <cmd...>` */
  const run = (opts: string[], cmd: string[], allowFailure = false) =>
    env.berth(['run', ...opts, '--network', 'none', '--rootfs', env.rootfs, ...cmd], { allowFailure });
  const sh = (script: string) => ['sh', '-c', script];
  const id = (
    await run(
      ['-d', '--name', 'web', '-l', 'tier=front'],
      sh("trap 'echo got-term; exit 7' TERM; echo started; echo oops >&2; while true; do sleep 0.1; done"),
    )
  ).stdout.trim();
  t.regex(id, /^[0-9a-f]{32}$/, 'run -d prints the runtime id, as without an agent');

  const viaAgent = await env.ps();
  const web = viaAgent.find((c) => c.name === 'web');
  t.truthy(web, JSON.stringify(viaAgent));
  t.is(web!.id, id);
  t.is(web!.state, 'running');
  t.is(web!.managed, false, 'the API answered: its view says whether a target manages the container');
  t.is(web!.request, undefined);

  await waitUntil('output', async () => (await env.berth(['logs', 'web'])).stdout.includes('started'));
  const logs = await env.berth(['logs', id.slice(0, 8)]);
  t.is(logs.stdout, 'started\n', 'stdout stays stdout (a prefix of the runtime id finds it)');
  t.is(logs.stderr, 'oops\n', 'and stderr stays stderr');

  const ex = await env.berth(
    ['exec', '-e', 'X=42', '-w', '/tmp', 'web', 'sh', '-c', 'echo $X $(pwd); exit 3'],
    {
      allowFailure: true,
    },
  );
  t.is(ex.stdout, '42 /tmp\n');
  t.is(ex.code, 3, 'the exit code of the command');
  const piped = await exec(
    process.execPath,
    [BERTH, '--state-dir', env.stateDir, '--config', env.configPath, 'exec', '-i', 'web', 'tr', 'a-z', 'A-Z'],
    { input: 'hello\n' },
  );
  t.is(piped.stdout, 'HELLO\n', 'exec -i without a terminal hands stdin over');

  t.is((await env.berth(['stop', '-t', '5', 'web'])).stdout, 'web\n');
  const stopped = (await env.ps()).find((c) => c.name === 'web')!;
  t.is(stopped.state, 'exited');
  t.is(stopped.exitCode, 7, 'StopSignal (SIGTERM) reached the trap');
  await env.berth(['start', 'web']);
  await waitUntil(
    'web running again',
    async () => (await env.ps()).find((c) => c.name === 'web')?.state === 'running',
  );
  await env.berth(['kill', '-s', 'SIGKILL', 'web']);
  await waitUntil(
    'web killed',
    async () => (await env.ps()).find((c) => c.name === 'web')?.state === 'exited',
  );

  // foreground run streams the output and passes the exit code on; --rm removes it afterwards
  const fg = await run(['--rm', '--name', 'once'], sh('echo out; echo err >&2; exit 5'), true);
  t.is(fg.code, 5, fg.stderr);
  t.is(fg.stdout, 'out\n');
  t.regex(fg.stderr, /err/);
  t.false(
    (await env.ps()).some((c) => c.name === 'once'),
    'run --rm removed it',
  );
  // run -d --rm: the monitor's exit command (berth rm -f) goes through the agent too
  await run(['-d', '--rm', '--name', 'brief'], ['true']);
  await waitUntil('brief removed after exit', async () => !(await env.ps()).some((c) => c.name === 'brief'));

  const dup = await run(['-d', '--name', 'web'], ['true'], true);
  t.not(dup.code, 0);
  t.regex(dup.stderr, /Conflict: .*container name web is already in use/);
  const restart = await run(['-d', '--restart', 'always'], ['true'], true);
  t.not(restart.code, 0);
  t.regex(restart.stderr, /--restart always: while an agent runs/);
  const missing = await env.berth(['stop', 'nope'], { allowFailure: true });
  t.not(missing.code, 0);
  t.regex(missing.stderr, /no such container: nope/);

  await env.berth(['rm', 'web']);
  t.deepEqual(
    (await env.ps()).map((c) => c.name),
    [],
  );

  // the agent is gone: the same commands act on the state dir
  await run(['-d', '--name', 'late'], ['sleep', '100']);
  await stopProcess(agent);
  t.false(existsSync(sock), 'the agent removed its socket');
  const direct = (await env.ps()).find((c) => c.name === 'late')!;
  t.is(direct.state, 'running', 'the container outlived the agent');
  t.is(direct.managed, undefined, 'no API view: the runtime record');
  t.is(
    (direct.request as { app: { labels: Record<string, string> } }).app.labels['io.berth.adhoc'],
    'true',
    'the agent created it',
  );
  await env.berth(['rm', '-f', 'late']);
  t.deepEqual(await env.ps(), []);
});
