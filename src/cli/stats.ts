/**
 * `berth stats [--no-stream] [containers…]` and `berth top <container>`: what the kernel says about the
 * running containers (cgroups v1 or v2: CPU, memory, processes; /proc for the process list). CPU % is
 * the use between two samples a second apart, in percent of one core (200 % = two cores busy), as docker
 * prints it. Through the agent when one runs, else on the state dir.
 */
import { totalmem } from 'node:os';
import type { Command } from 'commander';
import { cpuPercent } from '../device/cgroup.js';
import { isBerthError, notFound } from '../lib/errors.js';
import { type ContainerSource, containerSource, type StatsSample } from './container-source.js';
import { containerManager } from './containers.js';
import type { CliContext } from './context.js';
import { type Column, humanSize, renderListing, renderTable } from './output.js';

const STATS_COLUMNS: Column[] = [
  { key: 'id', header: 'CONTAINER ID' },
  { key: 'name', header: 'NAME' },
  { key: 'cpu', header: 'CPU %' },
  { key: 'mem', header: 'MEM USAGE / LIMIT' },
  { key: 'memPerc', header: 'MEM %' },
  { key: 'pids', header: 'PIDS' },
];

/** how long between the two samples CPU % is computed from */
const SAMPLE_MS = 1000;

export interface StatsRow {
  id: string;
  name: string;
  cpuPercent: number;
  memoryBytes: number;
  memoryLimitBytes: number;
  memoryPercent: number;
  pids: number | null;
}

/** One row from two samples of a container (pure: the tests feed it numbers). */
export function statsRow(
  c: { id: string; name: string },
  prev: StatsSample,
  next: StatsSample,
  hostMemory: number,
): StatsRow {
  const limit =
    next.memoryLimitBytes && next.memoryLimitBytes < hostMemory ? next.memoryLimitBytes : hostMemory;
  return {
    id: c.id,
    name: c.name,
    cpuPercent: cpuPercent({ ns: prev.cpuUsageNs, at: prev.at }, { ns: next.cpuUsageNs, at: next.at }),
    memoryBytes: next.memoryBytes,
    memoryLimitBytes: limit,
    memoryPercent: Math.round((next.memoryBytes / limit) * 10000) / 100,
    pids: next.pids ?? null,
  };
}

function display(r: StatsRow): Record<string, string> {
  return {
    id: r.id.slice(0, 12),
    name: r.name,
    cpu: `${r.cpuPercent.toFixed(2)}%`,
    mem: `${humanSize(r.memoryBytes)} / ${humanSize(r.memoryLimitBytes)}`,
    memPerc: `${r.memoryPercent.toFixed(2)}%`,
    pids: r.pids === null ? '-' : String(r.pids),
  };
}

async function sampleAll(
  src: ContainerSource,
  targets: Array<{ id: string; name: string; ref: string }>,
): Promise<Map<string, StatsSample>> {
  const out = new Map<string, StatsSample>();
  for (const t of targets) {
    // a container that stopped between the listing and the sample just drops out
    const s = await src.stats(t.ref).catch((err: unknown) => {
      if (isBerthError(err, 'Conflict') || isBerthError(err, 'NotFound')) return undefined;
      throw err;
    });
    if (s) out.set(t.id, s);
  }
  return out;
}

export function registerStats(program: Command, ctx: () => CliContext): void {
  const source = () => containerSource(ctx(), () => containerManager(ctx()));

  program
    .command('stats')
    .description('CPU %, memory and processes of running containers (cgroups v1 or v2)')
    .argument('[containers...]', 'only these (default: every running container)')
    .option('--no-stream', 'print one result and exit')
    .option('--format <format>', "table (default) | json | a template, e.g. '{{.Name}} {{.CPUPerc}}'")
    .action(async (refs: string[], o: { stream: boolean; format?: string }) => {
      const src = await source();
      const ac = new AbortController();
      const onSig = () => ac.abort();
      process.once('SIGINT', onSig);
      try {
        for (let first = true; first || (o.stream && !ac.signal.aborted); first = false) {
          const running = (await src.list(false)).filter(
            (c) => refs.length === 0 || refs.some((r) => c.id === r || c.name === r || c.id.startsWith(r)),
          );
          if (refs.length > 0 && running.length === 0 && first)
            throw notFound(`no running container matches ${refs.join(', ')}`);
          // the agent's routes take the agent's name for a container; the state dir takes either
          const targets = running.map((c) => ({ id: c.id, name: c.name, ref: src.viaAgent ? c.name : c.id }));
          const a = await sampleAll(src, targets);
          await new Promise((r) => setTimeout(r, SAMPLE_MS));
          const b = await sampleAll(src, targets);
          const rows = targets
            .filter((t) => a.has(t.id) && b.has(t.id))
            .map((t) => statsRow(t, a.get(t.id)!, b.get(t.id)!, totalmem()));
          const text = renderListing(
            rows.map((r) => ({
              ...display(r),
              // docker's template names
              container: r.id.slice(0, 12),
              cpuPerc: `${r.cpuPercent.toFixed(2)}%`,
              memUsage: `${humanSize(r.memoryBytes)} / ${humanSize(r.memoryLimitBytes)}`,
              pIDs: r.pids === null ? '-' : String(r.pids),
            })),
            STATS_COLUMNS,
            o.format,
            rows,
          );
          // streaming on a terminal redraws in place, as docker stats does
          if (o.stream && process.stdout.isTTY) process.stdout.write('\x1b[2J\x1b[H');
          process.stdout.write(text);
        }
      } finally {
        process.off('SIGINT', onSig);
      }
    });

  program
    .command('top')
    .description("a running container's processes (ps -ef)")
    .argument('<container>', 'name, id, id prefix, or an app service')
    .option('--format <format>', 'table (default) | json')
    .action(async (ref: string, o: { format?: string }) => {
      const t = await (await source()).top(ref);
      if (o.format === 'json') {
        process.stdout.write(`${JSON.stringify(t, null, 2)}\n`);
        return;
      }
      const keys = t.titles.map((_x, i) => String(i));
      process.stdout.write(
        renderTable(
          t.processes.map((p) => Object.fromEntries(p.map((v, i) => [String(i), v]))),
          keys,
          t.titles,
        ),
      );
    });
}
