/**
 * `berth fleet rollout …`: staged rollouts (docs/rollouts.md), local (the server's state dir: the running
 * `fleet serve` carries the rollout out) or remote (`--server/--token`), like every fleet command.
 *
 *   berth fleet rollout create app.yaml --group g1 --phases 1,10%,100% --error-threshold 2 --soak 10m
 *   berth fleet rollout ls [--active]
 *   berth fleet rollout show <id> [--devices] [--watch]
 *   berth fleet rollout pause|resume|approve|start <id>
 *   berth fleet rollout abort <id> [--reason text] [--no-rollback]
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import type { RolloutCreateBody, RolloutDeviceWire, RolloutWire } from '../fleet/api/schemas.js';
import type { FleetClient } from '../fleet/client/client.js';
import { BerthError, conflict, invalidInput } from '../lib/errors.js';
import type { CliContext } from './context.js';
import { parseDurationFlag } from './duration.js';
import { addClientOptions, type ClientFlags, openFleetClient } from './fleet-client.js';
import { columnsOf, deviceLines, FORMAT_HELP, printJson, printListing } from './output.js';

const FINISHED = ['succeeded', 'aborted', 'superseded'];

function percentFlag(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v.replace(/%$/, ''));
  if (!Number.isFinite(n) || n < 0 || n > 100) throw invalidInput(`${flag} ${v}: a percentage from 0 to 100`);
  return n;
}

function rolloutId(s: string): number {
  if (!/^\d{1,12}$/.test(s) || Number(s) < 1)
    throw invalidInput(`rollout id ${JSON.stringify(s)}: a number ≥ 1`);
  return Number(s);
}

function bar(done: number, failed: number, total: number, width = 30): string {
  if (total === 0) return `[${' '.repeat(width)}]`;
  const ok = Math.round((done / total) * width);
  const bad = Math.min(width - ok, Math.round((failed / total) * width));
  return `[${'#'.repeat(ok)}${'x'.repeat(bad)}${'.'.repeat(width - ok - bad)}]`;
}

/** The rollout as `show` prints it: a header, then one progress bar per phase. */
export function formatRollout(r: RolloutWire): string {
  const lines = [
    `rollout ${r.id}${r.name ? ` "${r.name}"` : ''}: ${r.state}${r.phase ? `, phase ${r.phase}/${r.phases.length}` : ''}`,
  ];
  if (r.reason) lines.push(`  reason: ${r.reason}`);
  const sel =
    r.selection.kind === 'group'
      ? `group ${r.selection.group}`
      : r.selection.kind === 'selector'
        ? `labels ${r.selection.selector}`
        : r.selection.kind === 'devices'
          ? `${r.selection.devices} device(s)`
          : 'all devices';
  lines.push(
    `  selection: ${sel} (${r.total} devices${r.excluded ? `, ${r.excluded} left out` : ''}); release: ${r.target.images.map((i) => i.name).join(', ')}`,
  );
  const p = r.policy;
  lines.push(
    `  policy: success ≥ ${p.successThreshold} %, errors ≤ ${p.errorThreshold} %, pending ≤ ${p.maxPending} %, soak ${p.soakMs / 1000}s${p.phaseTimeoutMs !== null ? `, timeout ${p.phaseTimeoutMs / 1000}s` : ''}${p.approval ? ', approval' : ''}${p.rollback ? '' : ', no rollback'}`,
  );
  for (const ph of r.phases) {
    const counted = ph.size - ph.superseded;
    lines.push(
      `  ${String(ph.index).padStart(2)} ${ph.spec.padEnd(6)} ${bar(ph.converged, ph.failed, counted)} ${String(ph.converged).padStart(5)}/${counted} ok ${ph.failed} failed ${ph.pending} pending${ph.offline ? ` (${ph.offline} offline)` : ''}${ph.queued ? ` ${ph.queued} queued` : ''}  ${ph.state}`,
    );
  }
  if (r.rollback.state !== 'none')
    lines.push(
      `  rollback: ${r.rollback.state}, ${r.rollback.returned}/${r.rollback.moved} returned to their previous target`,
    );
  if (r.group?.deployment) lines.push(`  group target: ${r.group.deployment.text}`);
  return `${lines.join('\n')}\n`;
}

/** Every device of a rollout, page by page. */
async function allDevices(client: FleetClient, id: number): Promise<RolloutDeviceWire[]> {
  const out: RolloutDeviceWire[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.rolloutDevices(id, { limit: 500, ...(cursor ? { cursor } : {}) });
    out.push(...page.items);
    cursor = page.next ?? undefined;
  } while (cursor);
  return out;
}

/**
 * `fleet deploy --group --wait`: follow the deploy's one-phase rollout until it ends — a line per device as
 * it moves (to `out`), then the counts. Succeeded: every device converged. Aborted (devices failed, none
 * left pending) or superseded (a newer deploy or rollout took the group): Conflict naming the failed
 * devices or the newer rollout. Still running after `timeoutMs`: Timeout naming the devices not done.
 */
export async function waitForRollout(
  client: FleetClient,
  id: number,
  what: string,
  timeoutMs: number,
  timeoutText: string,
  out: NodeJS.WritableStream = process.stderr,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  const tell = deviceLines(out);
  for (;;) {
    const r = await client.rollout(id);
    const devices = await allDevices(client, id);
    for (const x of devices) tell({ ...x, state: x.outcome });
    const over = FINISHED.includes(r.state);
    if (over || Date.now() >= until) {
      const superseded = devices.filter((x) => x.outcome === 'superseded').length;
      out.write(
        `${r.converged}/${r.total} converged, ${r.failed} rejected or failed, ${r.total - r.converged - r.failed - superseded} pending${superseded ? `, ${superseded} superseded` : ''}\n`,
      );
      if (r.state === 'succeeded') return;
      const named = (outcomes: string[]) =>
        devices
          .filter((x) => outcomes.includes(x.outcome))
          .map((x) => `${x.deviceId} ${x.outcome}${x.detail ? ` (${x.detail})` : ''}`)
          .join('; ');
      if (!over)
        throw new BerthError(
          'Timeout',
          `${what}: rollout ${id} not done after ${timeoutText}; ${named(['queued', 'pending', 'failed'])}`,
        );
      if (r.state === 'superseded')
        throw conflict(`${what}: rollout ${id} was superseded${r.reason ? ` (${r.reason})` : ''}`);
      throw conflict(`${what}: rollout ${id} ${r.state}: ${r.reason ?? ''}; ${named(['failed'])}`);
    }
    await new Promise((res) => setTimeout(res, 500));
  }
}

export function registerFleetRollout(fleet: Command, ctx: () => CliContext): void {
  const rollout = fleet
    .command('rollout')
    .description('staged rollouts: a release to a selection of devices, phase by phase, with thresholds');

  addClientOptions(
    rollout
      .command('create <file>')
      .description('create a rollout of a target JSON or compose file and start it (see docs/rollouts.md)')
      .option('--app <name>', 'app name for a compose file')
      .option('--group <name>', 'select the devices of a group (the last phase sets the group target)')
      .option('--selector <labels>', 'select by labels: site=berlin,tier!=lab')
      .option('--devices <ids>', 'select these devices (comma-separated)')
      .option('--all', 'select every device of the fleet')
      .option('--phases <list>', 'cumulative phases, the last 100%: 1,10%,100%', '100%')
      .option('--canary <ids>', 'devices to put first (comma-separated)')
      .option('--success-threshold <pct>', '% of a phase converged before the next (default 100)')
      .option('--error-threshold <pct>', '% of devices so far that may fail before it aborts (default 0)')
      .option('--max-pending <pct>', '% of a phase that may stay pending (offline) (default 0)')
      .option('--soak <duration>', 'a phase holds its threshold this long (e.g. 10m)')
      .option('--phase-timeout <duration>', 'abort when a phase has not passed after this long')
      .option('--approval', 'wait for `rollout approve` before each phase after the first')
      .option('--no-rollback', 'on abort, leave moved devices on the release')
      .option('--name <name>', 'a name to show')
      .option('--draft', 'store it without starting (`rollout start <id>`)')
      .option('--dry-run', 'run every pre-check and show the phases, store nothing')
      .option('--json', 'print JSON'),
  ).action(
    async (
      file: string,
      o: ClientFlags & {
        app?: string;
        group?: string;
        selector?: string;
        devices?: string;
        all?: boolean;
        phases: string;
        canary?: string;
        successThreshold?: string;
        errorThreshold?: string;
        maxPending?: string;
        soak?: string;
        phaseTimeout?: string;
        approval?: boolean;
        rollback: boolean;
        name?: string;
        draft?: boolean;
        dryRun?: boolean;
        json?: boolean;
      },
    ) => {
      const text = await fsp.readFile(file, 'utf8').catch((err: unknown) => {
        throw invalidInput(`cannot read target file ${file}: ${(err as Error).message}`);
      });
      const list = (s: string | undefined) =>
        s === undefined
          ? undefined
          : s
              .split(',')
              .map((x) => x.trim())
              .filter(Boolean);
      const body: RolloutCreateBody = {
        file: { name: path.basename(file), text },
        ...(o.app ? { app: o.app } : {}),
        ...(o.group !== undefined ? { group: o.group } : {}),
        ...(o.selector !== undefined ? { selector: o.selector } : {}),
        ...(o.devices !== undefined ? { devices: list(o.devices) } : {}),
        ...(o.all ? { all: true as const } : {}),
        phases: list(o.phases)!,
        ...(o.canary !== undefined ? { canaries: list(o.canary) } : {}),
        ...(o.successThreshold !== undefined
          ? { successThreshold: percentFlag('--success-threshold', o.successThreshold) }
          : {}),
        ...(o.errorThreshold !== undefined
          ? { errorThreshold: percentFlag('--error-threshold', o.errorThreshold) }
          : {}),
        ...(o.maxPending !== undefined ? { maxPending: percentFlag('--max-pending', o.maxPending) } : {}),
        ...(o.soak !== undefined ? { soakMs: parseDurationFlag('--soak', o.soak) } : {}),
        ...(o.phaseTimeout !== undefined
          ? { phaseTimeoutMs: parseDurationFlag('--phase-timeout', o.phaseTimeout) }
          : {}),
        ...(o.approval ? { approval: true } : {}),
        ...(o.rollback === false ? { rollback: false } : {}),
        ...(o.name !== undefined ? { name: o.name } : {}),
      };
      const client = await openFleetClient(ctx(), o);
      if (o.dryRun) {
        const { draft: _d, ...req } = body;
        const v = await client.validateRollout(req);
        if (o.json) return printJson(v);
        process.stdout.write(
          `valid: ${v.selection}, ${v.devices} devices in ${v.phases.length} phase(s): ${v.phases.map((p) => `${p.spec}→${p.size}`).join(', ')}; images ${v.images.map((i) => `${i.name}@${i.digest.slice(7, 19)}`).join(', ')}\n`,
        );
        for (const e of v.excluded) process.stdout.write(`  left out: ${e.deviceId}: ${e.reason}\n`);
        return;
      }
      const r = await client.createRollout({ ...body, ...(o.draft ? { draft: true } : {}) });
      if (o.json) return printJson(r);
      process.stdout.write(`rollout ${r.id} ${r.state}: ${r.total} devices in ${r.phases.length} phase(s)\n`);
    },
  );

  addClientOptions(
    rollout
      .command('ls')
      .description('list rollouts, newest first')
      .option('--active', 'only running, waiting-approval or paused ones')
      .option('--state <state>', 'only rollouts in this state')
      .option('--limit <n>', 'at most this many', '50')
      .option('--format <format>', FORMAT_HELP)
      .option('--json', 'print JSON (same as --format json)'),
  ).action(
    async (
      o: ClientFlags & { active?: boolean; state?: string; limit: string; json?: boolean; format?: string },
    ) => {
      const page = await (await openFleetClient(ctx(), o)).rollouts({
        ...(o.active ? { active: true } : {}),
        ...(o.state ? { state: o.state as RolloutWire['state'] } : {}),
        limit: Number(o.limit),
      });
      printListing(
        page.items.map((r) => ({
          id: r.id,
          name: r.name ?? '',
          state: r.state,
          phase: `${r.phase}/${r.phases.length}`,
          done: `${r.done}/${r.total}`,
          failed: r.failed,
          created: r.createdAt,
          reason: r.reason ?? '',
        })),
        columnsOf('id', 'name', 'state', 'phase', 'done', 'failed', 'created', 'reason'),
        o,
        page.items,
      );
    },
  );

  addClientOptions(
    rollout
      .command('show <id>')
      .description('a rollout with a progress bar per phase')
      .option('--devices', 'list its devices (phase, outcome, what they were sent)')
      .option('--watch', 'redraw until it is over (and its rollback done)')
      .option('--json', 'print JSON'),
  ).action(
    async (idText: string, o: ClientFlags & { devices?: boolean; watch?: boolean; json?: boolean }) => {
      const id = rolloutId(idText);
      const client = await openFleetClient(ctx(), o);
      if (o.devices) {
        const page = await client.rolloutDevices(id, { limit: 500 });
        if (o.json) return printJson(page);
        printListing(
          page.items.map((x) => ({
            device: x.deviceId,
            phase: x.phase,
            canary: x.canary ? 'yes' : '',
            outcome: x.outcome,
            online: x.online ? 'yes' : 'no',
            sent: x.target?.text ?? '',
            previous: x.previous?.text ?? '',
            rollback: x.rollback.state === 'none' ? '' : x.rollback.state,
            detail: x.detail ?? '',
          })),
          columnsOf(
            'device',
            'phase',
            'canary',
            'outcome',
            'online',
            'sent',
            'previous',
            'rollback',
            'detail',
          ),
          {},
          page.items,
        );
        return;
      }
      let r = await client.rollout(id);
      if (o.json && !o.watch) return printJson(r);
      if (!o.watch) {
        process.stdout.write(formatRollout(r));
        return;
      }
      const tty = process.stdout.isTTY === true;
      let last = '';
      for (;;) {
        const text = formatRollout(r);
        if (text !== last) {
          if (tty && last) process.stdout.write(`\x1b[${last.split('\n').length - 1}A\x1b[J`);
          process.stdout.write(text);
          last = text;
        }
        const over =
          FINISHED.includes(r.state) && r.rollback.state !== 'pending' && r.rollback.state !== 'sent';
        if (over) break;
        await new Promise((res) => setTimeout(res, 1000));
        r = await client.rollout(id);
      }
      if (r.state === 'aborted') process.exitCode = 1;
    },
  );

  const act = (name: 'start' | 'pause' | 'resume' | 'approve', what: string) =>
    addClientOptions(rollout.command(`${name} <id>`).description(what)).action(
      async (idText: string, o: ClientFlags) => {
        const r = await (await openFleetClient(ctx(), o)).rolloutAction(rolloutId(idText), name);
        process.stdout.write(
          `rollout ${r.id} ${r.state}${r.phase ? `, phase ${r.phase}/${r.phases.length}` : ''}\n`,
        );
      },
    );
  act('start', 'start a draft rollout');
  act('pause', 'pause: nothing new is published, no phase starts (failures still abort it)');
  act('resume', 'resume a paused rollout');
  act('approve', 'approve the next phase of a rollout waiting for approval');

  addClientOptions(
    rollout
      .command('abort <id>')
      .description('abort: moved devices get their previous target back (unless --no-rollback)')
      .option('--reason <text>', 'why (kept with the rollout)')
      .option(
        '--rollback',
        'give moved devices their previous target back even when the rollout was made without rollback (a deploy)',
      )
      .option('--no-rollback', 'leave moved devices on the release'),
  ).action(async (idText: string, o: ClientFlags & { reason?: string; rollback?: boolean }) => {
    const r = await (await openFleetClient(ctx(), o)).rolloutAction(rolloutId(idText), 'abort', {
      ...(o.reason ? { reason: o.reason } : {}),
      ...(o.rollback !== undefined ? { rollback: o.rollback } : {}),
    });
    process.stdout.write(
      `rollout ${r.id} aborted${r.rollback.state === 'none' ? '' : `; ${r.rollback.moved} moved device(s) get their previous target back`}\n`,
    );
  });
}
