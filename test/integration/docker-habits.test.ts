/**
 * docker habits on a real device: an app deployed from the fleet (service `web` of app `shop`, with a
 * health check), then the built CLI (`node dist/berth.mjs`) against the agent's state dir — first while
 * the agent runs (every command through its local API), then with the agent stopped (the same commands
 * on the state dir). ps HEALTH, logs <service> with --tail/--since/--until/-t, inspect (container and
 * image), images, stats (cgroups of this host), top, restart, events.
 *
 * How the test tells the two paths apart: `ps --format json` rows from the API carry `managed`, the
 * state dir's carry the runtime record (`request`).
 */
import { spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { isBerthError } from '../../src/lib/errors.js';
import { exec } from '../../src/lib/exec.js';
import { stateDirKey } from '../../src/runtime/network/resolve.js';
import { buildSampleImages, pushSampleImages, startAgentStack } from '../helpers/agent-stack.js';
import { BERTH_BUNDLE } from '../helpers/cli.js';
import { startFleet, tempDir, waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';
import { cliEnv } from '../helpers/runtime-cli.js';
import { removeSharedBusyboxRootfs } from '../helpers/runtime-rootfs.js';

test.after.always(removeSharedBusyboxRootfs);

interface InspectJson {
  Name: string;
  Mounts: Array<{ Type: string; Source: string; Destination: string; RW: boolean }>;
  State: { Status: string; StartedAt: string; Health?: { Status: string } };
  Config: { Cmd: string[] };
  Berth: Record<string, unknown>;
}
interface ImageJson {
  name: string;
  manifest: { layers: unknown[] };
}
interface StatsJson {
  name: string;
  memoryBytes: number;
  pids: number;
  cpuPercent: number;
}

interface PsJson {
  id: string;
  name: string;
  state: string;
  health?: string;
  managed?: boolean;
  request?: unknown;
}

test('ps HEALTH, logs <service>, inspect, images, stats, top, restart, events: through the agent, then on the state dir', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(300_000);
  const fleet = await startFleet(t);
  const work = await tempDir(t, 'habits-images');
  await pushSampleImages(fleet, await buildSampleImages(work, ['v1']));
  const runDir = await tempDir(t, 'habits-run');
  const stack = await startAgentStack(t, fleet, {
    deviceId: `habits-${process.pid}`,
    agent: { reconciler: { minDelayMs: 100, maxDelayMs: 500, idleIntervalMs: 300 } },
    config: { runDir },
  });
  // the app's update lock dir: on the run dir's tmpfs, in a directory of this state dir's own
  const lockDir = path.join(runDir, stateDirKey(stack.stateDir), 'locks', 'shop');
  // the fleet's own broker connection may still be coming up on a loaded machine: publish once it is
  await waitFor(
    () =>
      stack
        .deploy(
          {
            shop: {
              services: {
                web: {
                  image: 'sample:v1',
                  networkMode: 'none',
                  stopTimeoutMs: 500,
                  healthcheck: {
                    probe: { type: 'exec', command: ['true'] },
                    intervalMs: 200,
                    timeoutMs: 1000,
                  },
                },
              },
            },
          },
          ['sample:v1'],
        )
        .then(
          () => true,
          (err: unknown) => {
            if (!isBerthError(err, 'Unavailable')) throw err;
            return false;
          },
        ),
    60_000,
    'target published',
  );
  const cli = (...args: string[]) =>
    exec(process.execPath, [BERTH_BUNDLE, '--state-dir', stack.stateDir, '--log-level', 'warn', ...args], {
      timeoutMs: 60_000,
      allowFailure: true,
    });
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    t.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const ps = async () => JSON.parse(await ok('ps', '-a', '--format', 'json')) as PsJson[];
  await waitFor(async () => (await ps()).some((c) => c.health === 'healthy'), 90_000, 'web healthy');
  await waitFor(async () => (await ok('logs', 'web')).includes('hello v1'), 15_000, 'output');

  const checkAll = async (via: 'agent' | 'state dir') => {
    const rows = await ps();
    t.is(rows.length, 1, via);
    const web = rows[0]!;
    if (via === 'agent') t.true(web.managed, 'the API answered');
    else t.truthy(web.request, 'the state dir answered');
    t.is(web.health, 'healthy', `${via}: last health`);
    const table = await ok('ps');
    t.regex(table, /^CONTAINER ID\s+NAME\s+IMAGE\s+STATUS\s+HEALTH\s+IP\s+PORTS\n/, via);
    t.regex(table, /\sUp (\d+ seconds|1 second|About a minute|Less than a second)\s+healthy/, via);
    t.is(await ok('ps', '--format', '{{.Name}}'), `${web.name}\n`, via);

    // logs by service name, --tail, -t, --since/--until
    const tail = await ok('logs', '--tail', '1', 'web');
    t.regex(tail, /^\d\d:\d\d:\d\d hello v1\n$/, `${via}: --tail 1 of the service's container`);
    t.regex(await ok('logs', '-t', '--tail', '2', 'shop/web'), /^(\d{4}-\d\d-\d\dT\S+Z \S+ hello v1\n){2}$/);
    t.is(await ok('logs', '--since', '2099-01-01', 'web'), '', `${via}: nothing written after 2099`);
    t.is(await ok('logs', '--until', '1h', 'web'), '', `${via}: nothing written before an hour ago`);
    t.regex(await ok('logs', '--since', '1h', 'web'), /hello v1/);

    // inspect: container (by service) and image
    const [doc] = JSON.parse(await ok('inspect', 'web')) as InspectJson[];
    t.is(doc!.Name, web.name);
    t.is(doc!.State.Status, 'running');
    t.is(doc!.State.Health?.Status, 'healthy');
    t.like(doc!.Berth, { app: 'shop', service: 'web', managed: true });
    t.deepEqual(doc!.Config.Cmd, ['/bin/app']);
    t.deepEqual(
      doc!.Mounts.filter((m) => m.Destination === '/tmp/berth-lock'),
      [{ Type: 'bind', Source: lockDir, Destination: '/tmp/berth-lock', RW: true }],
    );
    t.is(await ok('inspect', '-f', '{{.State.Status}} {{.Berth.service}}', 'web'), 'running web\n');
    const [img] = JSON.parse(await ok('inspect', 'sample:v1')) as ImageJson[];
    t.is(img!.name, 'sample:v1');
    t.is(img!.manifest.layers.length, 2);
    t.regex(await ok('images', '--format', '{{.Name}} {{.Platform}}'), /^sample:v1 linux\/amd64$/m);
    const noSuch = await cli('inspect', 'nope:1');
    t.is(noSuch.code, 1);
    t.regex(noSuch.stderr, /NotFound: no such container or image: nope:1/);

    // stats and top from this host's cgroups and /proc
    const [st] = JSON.parse(await ok('stats', '--no-stream', '--format', 'json')) as StatsJson[];
    t.is(st!.name, web.name);
    t.true(st!.memoryBytes > 0, `${via}: memory ${st!.memoryBytes}`);
    t.true(st!.pids >= 2, `${via}: app + httpd + sleep: ${st!.pids}`);
    t.true(st!.cpuPercent >= 0);
    t.regex(await ok('stats', '--no-stream'), /CPU %\s+MEM USAGE \/ LIMIT\s+MEM %\s+PIDS/);
    const top = await ok('top', 'web');
    t.regex(top, /^UID\s+PID\s+PPID\s+C\s+STIME\s+TTY\s+TIME\s+CMD\n/);
    t.regex(top, /\/bin\/sh \/bin\/app/);
    t.regex(top, /httpd -p 8080 -h \/www/);

    // restart: a new start, recorded as an event; the lock dir is made again when gone (a reboot empties /run)
    await fsp.rm(lockDir, { recursive: true, force: true });
    const before = doc!.State.StartedAt as string;
    t.is(await ok('restart', '-t', '1', 'web'), 'web\n');
    const [after] = JSON.parse(await ok('inspect', 'web')) as InspectJson[];
    t.is(after!.State.Status, 'running');
    t.true(Date.parse(after!.State.StartedAt) > Date.parse(before), `${via}: restarted`);
    t.true(existsSync(lockDir), `${via}: lock dir made again`);
    const events = (await ok('events', '--since', '10m', '--until', '0s', '--format', '{{.Action}}'))
      .trim()
      .split('\n');
    t.true(events.includes('create') && events.includes('start'), events.join(' '));
    t.true(events.includes('restart'), `${via}: ${events.join(' ')}`);
    t.true(events.indexOf('stop') < events.lastIndexOf('start'), 'stop, then start again');
    return events.filter((e) => e === 'restart').length;
  };

  t.is(await checkAll('agent'), 1);
  await stack.device.stop();
  t.is(await checkAll('state dir'), 2, 'both restarts are in the one event log');
});

test('events follows live: an exit nobody else looks at is seen by `berth events` itself', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t);
  const since = new Date().toISOString();
  const child = spawn(
    process.execPath,
    [
      BERTH_BUNDLE,
      '--state-dir',
      env.stateDir,
      '--config',
      env.configPath,
      'events',
      '--since',
      since,
      '--format',
      'json',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  t.teardown(() => {
    child.kill('SIGINT');
  });
  // detached: no CLI waits for it, so only the running `berth events` notices the exit
  await env.berth([
    'run',
    '-d',
    '--name',
    'quick',
    '--network',
    'none',
    '--rootfs',
    env.rootfs,
    'sh',
    '-c',
    'sleep 1; exit 4',
  ]);
  await waitFor(async () => out.includes('"die"'), 30_000, 'die event');
  const events = out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { action: string; name: string; attributes: Record<string, unknown> });
  t.deepEqual(
    events.map((e) => e.action),
    ['create', 'start', 'die'],
  );
  t.is(events[2]!.attributes.exitCode, 4);
  t.true(events.every((e) => e.name === 'quick'));
});
