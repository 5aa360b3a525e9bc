/**
 * Container commands, docker-like: run, ps, logs, stop, start, kill, rm, exec. Without an agent they run
 * on the command's device stack (CliContext.device: the same wiring as `berth agent`); `berth run <image>`
 * gets its rootfs from the image store and snapshotter there, `--rootfs <dir>` runs a plain directory.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import type { Command } from 'commander';
import type { RunRequest } from '../agent/api.js';
import { type AgentClient, connectAgent } from '../agent/api-client.js';
import { invalidInput } from '../lib/errors.js';
import type { AppSpec, BindVolume, NetworkMode, RestartPolicy } from '../runtime/bundle.js';
import { type ContainerManager, statDevice } from '../runtime/containers.js';
import { followLogs, type LogEntry } from '../runtime/logs.js';
import { parsePortMapping } from '../runtime/network/network.js';
import { containerSource, type PsRow } from './container-source.js';
import type { CliContext } from './context.js';
import { type Column, humanDuration, printListing } from './output.js';
import { parseTimeArg } from './time.js';

/** The ContainerManager of the command's device stack (the one `berth agent` builds; see context.ts). */
export function containerManager(ctx: CliContext): ContainerManager {
  return ctx.device.manager;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** "64m", "1g", "512k", "1048576" → bytes (docker's --memory units). */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([bkmg]?)b?$/i.exec(s.trim());
  if (!m) throw invalidInput(`invalid size ${JSON.stringify(s)}: use e.g. 64m, 1g`);
  const mult = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as 'k'];
  return Math.round(Number(m[1]) * mult);
}

/**
 * `-v /host:/ctr[:ro|rw]`. The host path must be absolute: docker reads a bare name as a named volume,
 * which `berth run` does not have, and resolving it against the current directory would mount whatever
 * happens to be there.
 */
export function parseVolume(s: string): BindVolume {
  const parts = s.split(':');
  if (parts.length < 2 || parts.length > 3)
    throw invalidInput(`-v ${s}: expected /host/path:/container/path[:ro]`);
  const [source, target, mode] = parts as [string, string, string | undefined];
  if (mode !== undefined && mode !== 'ro' && mode !== 'rw')
    throw invalidInput(`-v ${s}: unknown mode ${mode} (ro or rw)`);
  if (!source.startsWith('/'))
    throw invalidInput(
      `-v ${s}: the host path ${JSON.stringify(source)} must be absolute (berth run has no named volumes; use $PWD/${source})`,
    );
  if (!target.startsWith('/'))
    throw invalidInput(`-v ${s}: the container path ${JSON.stringify(target)} must be absolute`);
  return { source: path.normalize(source), target, readOnly: mode === 'ro' };
}

/** `--cpus 0.5`: a positive number of CPUs (docker's limit: at most the machine's, here at most 1024). */
export function parseCpus(s: string): number {
  const n = s.trim() === '' ? Number.NaN : Number(s);
  if (!Number.isFinite(n) || n <= 0 || n > 1024)
    throw invalidInput(`--cpus ${s}: expected a number of CPUs greater than 0, e.g. 0.5 or 2`);
  return n;
}

/** `--pids-limit 100`: a positive integer. */
export function parsePidsLimit(s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw invalidInput(`--pids-limit ${s}: expected a whole number ≥ 1`);
  return n;
}

/** Every `run` option checked and converted before anything is created. */
function runLimits(o: RunOptions): { memoryBytes?: number; cpus?: number; pids?: number } {
  let memoryBytes: number | undefined;
  if (o.memory !== undefined) {
    try {
      memoryBytes = parseSize(o.memory);
    } catch {
      throw invalidInput(`--memory ${o.memory}: expected a size, e.g. 64m or 1g`);
    }
    if (memoryBytes < 6 * 1024 * 1024)
      throw invalidInput(`--memory ${o.memory}: the minimum is 6m (as docker's)`);
  }
  return {
    ...(memoryBytes !== undefined ? { memoryBytes } : {}),
    ...(o.cpus !== undefined ? { cpus: parseCpus(o.cpus) } : {}),
    ...(o.pidsLimit !== undefined ? { pids: parsePidsLimit(o.pidsLimit) } : {}),
  };
}

function parseEnv(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i < 0) {
      const v = process.env[kv];
      if (v !== undefined) out[kv] = v;
    } else out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

/** docker's STATUS words: "Up 3 minutes", "Exited (0) 2 hours ago", "Created". */
export function containerStatus(c: PsRow, now: number = Date.now()): string {
  const since = (t: number | null | undefined) => humanDuration(t ? now - t : 0);
  if (c.state === 'running') return `Up ${since(c.startedAt)}${c.health ? ` (${c.health})` : ''}`;
  if (c.state === 'exited')
    return `Exited (${c.exitCode}) ${since(c.finishedAt)} ago${c.oomKilled ? ' (OOM)' : ''}`;
  return c.state[0]!.toUpperCase() + c.state.slice(1);
}

const PS_COLUMNS: Column[] = [
  { key: 'id', header: 'CONTAINER ID' },
  { key: 'name', header: 'NAME' },
  { key: 'image', header: 'IMAGE' },
  { key: 'status', header: 'STATUS' },
  { key: 'health', header: 'HEALTH' },
  { key: 'ip', header: 'IP' },
  { key: 'ports', header: 'PORTS' },
];

/** A ps row as the table and `--format` templates see it (docker's field names). */
export function psRow(c: PsRow, now: number = Date.now()): Record<string, string> {
  return {
    id: c.id.slice(0, 12),
    name: c.name,
    image: c.image,
    status: containerStatus({ ...c, health: undefined }, now),
    health: c.health ?? '',
    state: c.state,
    ip: c.ipAddress ?? '',
    ports: c.ports
      .map((p) => `${p.hostIp ?? '0.0.0.0'}:${p.hostPort}->${p.containerPort}/${p.protocol}`)
      .join(', '),
    createdAt: c.createdAt ? new Date(c.createdAt).toISOString() : '',
  };
}

function writeEntry(e: Pick<LogEntry, 'stream' | 'log'>): void {
  (e.stream === 'stderr' ? process.stderr : process.stdout).write(e.log);
}

/** `logs -t`: each line prefixed with its RFC 3339 time, as docker does. */
function writeEntryWithTime(e: Pick<LogEntry, 'stream' | 'log'> & { time?: string | undefined }): void {
  (e.stream === 'stderr' ? process.stderr : process.stdout).write(`${e.time ?? ''} ${e.log}`);
}

interface RunOptions {
  detach?: boolean;
  name?: string;
  env: string[];
  volume: string[];
  publish: string[];
  memory?: string;
  cpus?: string;
  pidsLimit?: string;
  network: string;
  rm?: boolean;
  readOnly?: boolean;
  capAdd: string[];
  capDrop: string[];
  privileged?: boolean;
  rootfs?: string;
  user?: string;
  workdir?: string;
  hostname?: string;
  entrypoint?: string;
  stopSignal?: string;
  restart: string;
  label: string[];
  device: string[];
}

export function registerContainers(program: Command, ctx: () => CliContext): void {
  const mgr = () => containerManager(ctx());
  /** The running agent of this state dir: when one answers, every command goes through it. */
  const agent = () => connectAgent(ctx().stateDir);
  const source = () => containerSource(ctx(), mgr);

  program
    .command('run')
    .description('create and start a container from an image, or from a plain rootfs directory (--rootfs)')
    .argument('[image]', 'image reference (omit with --rootfs)')
    .argument('[command...]', 'command and arguments (override the image Cmd)')
    .option('-d, --detach', 'run in the background and print the container id')
    .option('--name <name>', 'container name')
    .option('-e, --env <K=V>', 'environment variable (repeatable)', collect, [])
    .option('-v, --volume <host:ctr[:ro]>', 'bind mount (repeatable)', collect, [])
    .option(
      '-p, --publish <[ip:]host:ctr[/proto]>',
      'publish a port (bridge network; repeatable)',
      collect,
      [],
    )
    .option('-m, --memory <size>', 'memory limit, e.g. 64m')
    .option('--cpus <n>', 'CPU quota in cores, e.g. 0.5')
    .option('--pids-limit <n>', 'maximum number of processes')
    .option('--network <mode>', 'none | host | bridge', 'bridge')
    .option('--rm', 'remove the container when it exits')
    .option('--read-only', 'mount the root filesystem read-only')
    .option('--cap-add <cap>', 'add a capability (repeatable, ALL)', collect, [])
    .option('--cap-drop <cap>', 'drop a capability (repeatable, ALL)', collect, [])
    .option('--privileged', 'all capabilities, no seccomp, no masked paths, all devices')
    .option('--rootfs <dir>', 'run this root filesystem directory instead of an image')
    .option('-u, --user <user[:group]>', 'user to run as (name or id, resolved in the rootfs)')
    .option('-w, --workdir <dir>', 'working directory inside the container')
    .option('-h, --hostname <name>', 'container hostname')
    .option('--entrypoint <cmd>', 'override the image entrypoint')
    .option('--stop-signal <signal>', 'signal for stop (default: image StopSignal or SIGTERM)')
    .option('--restart <policy>', 'no | always | on-failure | unless-stopped (without an agent only)', 'no')
    .option('-l, --label <k=v>', 'label (repeatable)', collect, [])
    .option('--device <host[:ctr]>', 'expose a host device node (repeatable)', collect, [])
    .passThroughOptions()
    .action(async (image: string | undefined, command: string[], o: RunOptions) => {
      let cmd = command;
      if (o.rootfs && image !== undefined) cmd = [image, ...command];
      if (!o.rootfs && !image) throw invalidInput('run needs an image or --rootfs <dir>');
      if (!['none', 'host', 'bridge'].includes(o.network))
        throw invalidInput(`unknown network mode ${o.network}`);
      if (!['no', 'always', 'on-failure', 'unless-stopped'].includes(o.restart))
        throw invalidInput(`unknown restart policy ${o.restart}`);
      const client = await agent();
      if (client) await runViaAgent(client, o.rootfs ? undefined : image, cmd, o);
      else await runDirect(mgr(), o.rootfs ? undefined : image, cmd, o);
    });

  program
    .command('ps')
    .description('list containers (running; -a for all)')
    .option('-a, --all', 'include containers that are not running')
    .option('--format <format>', "table (default) | json | a template, e.g. '{{.Name}} {{.Status}}'")
    .option('--json', 'print JSON (same as --format json)')
    .option('-q, --quiet', 'only the container ids')
    .action(async (o: { all?: boolean; json?: boolean; format?: string; quiet?: boolean }) => {
      const src = await source();
      const list = await src.list(o.all === true);
      const now = Date.now();
      printListing(
        list.map((c) => psRow(c, now)),
        PS_COLUMNS,
        o.quiet ? { format: '{{.ID}}' } : o,
        list,
      );
    });

  program
    .command('logs')
    .description("print a container's output (stdout and stderr); a service name of an app works too")
    .argument('<container>', 'name, id, id prefix, or an app service (web, app/web)')
    .option('-f, --follow', 'follow new output until the container exits')
    .option('-n, --tail <n>', 'only the last n lines ("all" for every line)')
    .option('--since <time>', 'only lines since: a duration (10m), a unix time or a date')
    .option('--until <time>', 'only lines before: a duration (5m), a unix time or a date')
    .option('-t, --timestamps', 'show the time of each line')
    .action(
      async (
        ref: string,
        o: { follow?: boolean; tail?: string; since?: string; until?: string; timestamps?: boolean },
      ) => {
        const tail = o.tail === undefined || o.tail === 'all' ? undefined : Number(o.tail);
        if (tail !== undefined && (!Number.isInteger(tail) || tail < 0))
          throw invalidInput(`--tail ${o.tail}: expected a whole number of lines or "all"`);
        const now = Date.now();
        const since = o.since !== undefined ? parseTimeArg(o.since, '--since', now) : undefined;
        const until = o.until !== undefined ? parseTimeArg(o.until, '--until', now) : undefined;
        const ac = new AbortController();
        if (o.follow) process.once('SIGINT', () => ac.abort());
        const src = await source();
        await src.logs(
          ref,
          { tail, since, until, follow: o.follow === true, signal: ac.signal },
          o.timestamps ? writeEntryWithTime : writeEntry,
        );
      },
    );

  program
    .command('restart')
    .description('restart containers: stop (StopSignal, SIGKILL after the timeout), then start')
    .argument('<containers...>')
    .option('-t, --time <secs>', 'seconds to wait before SIGKILL', '10')
    .action(async (refs: string[], o: { time: string }) => {
      const t = Number(o.time);
      if (!(t >= 0)) throw invalidInput(`--time ${o.time}: expected a number of seconds`);
      const src = await source();
      for (const r of refs) {
        await src.restart(r, t);
        process.stdout.write(`${r}\n`);
      }
    });

  /** One action per named container, through the agent when one runs, else on the state dir. */
  const eachContainer =
    (
      viaAgent: (c: AgentClient, ref: string) => Promise<unknown>,
      direct: (m: ContainerManager, ref: string) => Promise<unknown>,
    ) =>
    async (refs: string[]) => {
      const client = await agent();
      const m = client ? undefined : mgr();
      for (const r of refs) {
        await (client ? viaAgent(client, r) : direct(m!, r));
        process.stdout.write(`${r}\n`);
      }
    };

  program
    .command('stop')
    .description('stop containers: StopSignal, then SIGKILL after the timeout')
    .argument('<containers...>')
    .option('-t, --time <secs>', 'seconds to wait before SIGKILL', '10')
    .action(async (refs: string[], o: { time: string }) => {
      const t = Number(o.time);
      if (!(t >= 0)) throw invalidInput(`invalid --time ${o.time}`);
      await eachContainer(
        (c, r) => c.stop(r, t * 1000),
        (m, r) => m.stop(r, t),
      )(refs);
    });

  program
    .command('start')
    .description('start created or exited containers')
    .argument('<containers...>')
    .action(
      eachContainer(
        (c, r) => c.start(r),
        (m, r) => m.start(r),
      ),
    );

  program
    .command('kill')
    .description('send a signal to containers (default SIGKILL)')
    .argument('<containers...>')
    .option('-s, --signal <sig>', 'signal', 'SIGKILL')
    .action(async (refs: string[], o: { signal: string }) => {
      await eachContainer(
        (c, r) => c.kill(r, o.signal),
        (m, r) => m.kill(r, o.signal),
      )(refs);
    });

  program
    .command('rm')
    .description('remove containers (cgroup, network, IP lease, bundle, logs)')
    .argument('<containers...>')
    .option('-f, --force', 'kill running containers first (and, with an agent, remove ones of its target)')
    .action(async (refs: string[], o: { force?: boolean }) => {
      await eachContainer(
        (c, r) => c.rm(r, o.force === true),
        (m, r) => m.remove(r, { force: o.force === true }),
      )(refs);
    });

  program
    .command('exec')
    .description("run a command in a running container (the runtime's exec; nsenter for runtimes without it)")
    .argument('<container>', 'name or id')
    .argument('<command...>')
    .option('-i, --interactive', 'keep stdin open')
    .option('-e, --env <K=V>', 'extra environment variable (repeatable)', collect, [])
    .option('-w, --workdir <dir>', 'working directory inside the container')
    .passThroughOptions()
    .action(
      async (
        ref: string,
        command: string[],
        o: { interactive?: boolean; env: string[]; workdir?: string },
      ) => {
        const env = parseEnv(o.env);
        // An interactive session on a terminal needs the terminal itself: it runs from here (exec does
        // not change the container's lifecycle, so it cannot race the agent). Everything else goes
        // through the agent when one runs: output is returned when the command ends.
        const client = o.interactive && process.stdin.isTTY ? undefined : await agent();
        if (client) {
          const input = o.interactive ? await readStdin() : undefined;
          const r = await client.exec(ref, command, {
            timeoutMs: EXEC_VIA_AGENT_TIMEOUT_MS,
            env,
            ...(o.workdir ? { cwd: o.workdir } : {}),
            ...(input !== undefined ? { input } : {}),
          });
          process.stdout.write(r.stdout);
          process.stderr.write(r.stderr);
          process.exitCode = r.exitCode;
          return;
        }
        const {
          file,
          args,
          env: execEnv,
        } = await mgr().execCommand(ref, command, {
          env,
          ...(o.workdir ? { cwd: o.workdir } : {}),
        });
        // Not through exec(): an exec session shares the terminal (stdio inherited), like docker exec.
        const code = await new Promise<number>((resolve, reject) => {
          const child = spawn(file, args, {
            env: execEnv,
            stdio: [o.interactive ? 'inherit' : 'ignore', 'inherit', 'inherit'],
          });
          child.on('error', reject);
          child.on('exit', (c, sig) => resolve(c ?? (sig ? 128 + 9 : 1)));
        });
        process.exitCode = code;
      },
    );
}

/** exec through the agent: it buffers the output, so a command may run at most this long */
const EXEC_VIA_AGENT_TIMEOUT_MS = 24 * 3600_000;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function splitDevice(d: string): { host: string; ctr: string } {
  const [host, ctr] = d.split(':');
  return { host: path.resolve(host!), ctr: ctr || host! };
}

async function runDirect(
  m: ContainerManager,
  image: string | undefined,
  cmd: string[],
  o: RunOptions,
): Promise<void> {
  const limits = runLimits(o);
  const volumes = o.volume.map(parseVolume);
  const ports = o.publish.map(parsePortMapping);
  const devices = await Promise.all(
    o.device.map((d) => {
      const { host, ctr } = splitDevice(d);
      return statDevice(host, ctr);
    }),
  );
  const app: AppSpec = {
    ...(devices.length ? { devices } : {}),
    ...(cmd.length ? { command: cmd } : {}),
    ...(o.entrypoint !== undefined ? { entrypoint: o.entrypoint ? [o.entrypoint] : [] } : {}),
    env: parseEnv(o.env),
    volumes,
    resources: {
      ...(limits.memoryBytes !== undefined ? { memoryBytes: limits.memoryBytes } : {}),
      ...(limits.cpus !== undefined ? { cpus: limits.cpus } : {}),
      ...(limits.pids !== undefined ? { pidsLimit: limits.pids } : {}),
    },
    network: o.network as NetworkMode,
    restart: o.restart as RestartPolicy,
    capAdd: o.capAdd,
    capDrop: o.capDrop,
    privileged: o.privileged === true,
    readOnlyRootfs: o.readOnly === true,
    labels: parseEnv(o.label),
    ...(o.user ? { user: o.user } : {}),
    ...(o.workdir ? { workingDir: o.workdir } : {}),
    ...(o.hostname ? { hostname: o.hostname } : {}),
    ...(o.stopSignal ? { stopSignal: o.stopSignal } : {}),
  };
  const rec = await m.create({
    ...(o.name ? { name: o.name } : {}),
    source: o.rootfs ? { kind: 'dir', path: path.resolve(o.rootfs) } : { kind: 'image', ref: image! },
    app,
    ports,
    autoRemove: o.rm === true && o.detach === true,
  });
  try {
    await m.start(rec.id);
  } catch (err) {
    // a run that failed leaves nothing behind (no container stuck in Created, no network, no lease)
    await m.remove(rec.id, { force: true }).catch(() => undefined);
    throw err;
  }
  if (o.detach) {
    process.stdout.write(`${rec.id}\n`);
    return;
  }
  // Foreground: stream logs until exit; Ctrl-C stops the container (StopSignal).
  const onSignal = () => void m.stop(rec.id, 10).catch(() => undefined);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const dir = m.containerDir(rec.id);
    await followLogs(dir, writeEntry, {
      isDone: async () =>
        m.readExitFile(rec.id) !== undefined || (await m.inspect(rec.id)).state !== 'running',
      pollMs: 100,
    });
    const final = await m.inspect(rec.id);
    process.exitCode = final.exitCode ?? 1;
    if (o.rm) await m.remove(rec.id, { force: true });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** `berth run` while an agent runs: the agent creates and starts it (under its mutex), we watch. */
async function runViaAgent(
  client: AgentClient,
  image: string | undefined,
  cmd: string[],
  o: RunOptions,
): Promise<void> {
  if (o.restart !== 'no')
    throw invalidInput(
      `--restart ${o.restart}: while an agent runs, containers that restart belong in the target (berth fleet deploy); an ad-hoc container runs once`,
    );
  const limits = runLimits(o);
  const req: RunRequest = {
    ...(image ? { image } : {}),
    ...(o.rootfs ? { rootfs: path.resolve(o.rootfs) } : {}),
    ...(o.name ? { name: o.name } : {}),
    ...(cmd.length ? { command: cmd } : {}),
    ...(o.entrypoint !== undefined ? { entrypoint: o.entrypoint ? [o.entrypoint] : [] } : {}),
    env: parseEnv(o.env),
    volumes: o.volume.map(parseVolume),
    ports: o.publish.map(parsePortMapping),
    networkMode: o.network as NetworkMode,
    ...limits,
    ...(o.user ? { user: o.user } : {}),
    ...(o.workdir ? { workingDir: o.workdir } : {}),
    ...(o.hostname ? { hostname: o.hostname } : {}),
    ...(o.stopSignal ? { stopSignal: o.stopSignal } : {}),
    readOnly: o.readOnly === true,
    privileged: o.privileged === true,
    capAdd: o.capAdd,
    capDrop: o.capDrop,
    devices: o.device.map((d) => {
      const { host, ctr } = splitDevice(d);
      return { hostPath: host, containerPath: ctr };
    }),
    labels: parseEnv(o.label),
    autoRemove: o.rm === true && o.detach === true,
  };
  const { id } = await client.run(req);
  if (o.detach) {
    const view = (await client.ps()).find((c) => c.id === id);
    process.stdout.write(`${view?.containerId ?? id}\n`);
    return;
  }
  const onSignal = () => void client.stop(id, 10_000).catch(() => undefined);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await client.streamLogs(id, { follow: true }, writeEntry);
    const final = (await client.ps()).find((c) => c.id === id);
    process.exitCode = final?.exitCode ?? 1;
    if (o.rm) await client.rm(id, true);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
