/**
 * `berth fleet deployments` and `berth fleet redeploy`: a scope's release history, and going back to an
 * earlier release of it.
 *
 *   berth fleet deployments --group lab            newest first; `*` marks each scope's current one
 *   berth fleet redeploy 12 --wait                 deployment 12's release again, as its scope's next version
 *
 * Why a verb of its own and not `deploy --from 12`: `deploy` takes a file and a scope (--device/--group);
 * a redeploy takes neither — the deployment names both its scope and its release — so none of deploy's
 * other flags (--app, --agent, --clear, --allow-unknown, --dry-run) would apply to it. `redeploy <id>`
 * says what it does, matches the API (`POST /deployments/{id}/redeploy`), and shares `--wait`.
 * `--device/--group` on redeploy are an optional guard: refused when the id is another scope's.
 */
import type { Command } from 'commander';
import type { Deployment, DeploymentProgress } from '../fleet/api/schemas.js';
import type { FleetClient } from '../fleet/client/client.js';
import { BerthError, invalidInput } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import type { CliContext } from './context.js';
import { parseDurationFlag } from './duration.js';
import { addClientOptions, type ClientFlags, openFleetClient } from './fleet-client.js';
import { waitForRollout } from './fleet-rollout.js';
import { addMqttOptions, type MqttFlags } from './mqtt-options.js';
import { deviceLines, printJson, printTable } from './output.js';

export function registerFleetDeployments(fleet: Command, ctx: () => CliContext): void {
  addClientOptions(
    fleet
      .command('deployments')
      .description(
        'the targets the fleet published, newest first: a device or group history (* = its current one)',
      )
      .option('--device <id>', "one device's own targets (its overrides)")
      .option('--group <name>', "one group's targets")
      .option('--limit <n>', 'how many (1-500)', '20')
      .option('--json', 'print JSON'),
  ).action(async (o: ClientFlags & { device?: string; group?: string; limit: string; json?: boolean }) => {
    const limit = Number(o.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 500)
      throw invalidInput(`--limit ${o.limit}: expected a whole number from 1 to 500`);
    const page = await (await openFleetClient(ctx(), o)).deployments({ ...scopeFlags(o), limit });
    if (o.json) return printJson(page.items);
    if (page.items.length === 0) {
      process.stdout.write('no deployments yet\n');
      return;
    }
    printTable(page.items.map(historyRow), ['id', 'scope', 'version', 'images', 'state', 'when', 'by']);
  });

  addClientOptions(
    addMqttOptions(
      fleet
        .command('redeploy <deployment-id>')
        .description(
          "publish an earlier deployment's release (apps, images as pinned then) again as its scope's next version; a group: a one-phase rollout",
        )
        .option('--device <id>', 'refuse unless the deployment is this device’s')
        .option('--group <name>', 'refuse unless the deployment is this group’s')
        .option('--reason <text>', 'why, for the audit log (at most 500 characters)')
        .option(
          '--wait',
          'wait until every device concerned converged, rejected or failed (exit 1 if any did not converge); a group: until its rollout ends',
        )
        .option('--timeout <duration>', 'with --wait: give up after this long (e.g. 90s, 5m)', '5m'),
    ),
  ).action(
    async (
      idText: string,
      o: MqttFlags &
        ClientFlags & { device?: string; group?: string; reason?: string; wait?: boolean; timeout: string },
    ) => {
      const id = Number(idText);
      if (!/^[1-9][0-9]{0,15}$/.test(idText) || !Number.isSafeInteger(id))
        throw invalidInput(
          `deployment id ${JSON.stringify(idText)}: expected a number (fleet deployments lists them)`,
        );
      const timeoutMs = parseDurationFlag('--timeout', o.timeout);
      const client = await openFleetClient(ctx(), o);
      const dep = await client.redeploy(id, {
        ...scopeFlags(o),
        ...(o.reason !== undefined ? { reason: o.reason } : {}),
      });
      process.stdout.write(
        `redeployed deployment ${id} as ${dep.scope.kind} ${dep.scope.id} version ${dep.version}${dep.rolloutId !== undefined ? ` as rollout ${dep.rolloutId} (berth fleet rollout show ${dep.rolloutId})` : ''}\n`,
      );
      if (o.wait) await followDeployment(client, dep, timeoutMs, o.timeout);
    },
  );
}

function scopeFlags(o: { device?: string; group?: string }) {
  if (o.device !== undefined && o.group !== undefined)
    throw invalidInput('pass --device or --group, not both');
  if (o.device !== undefined) return { device: assertSafeName('device id', o.device) };
  return o.group !== undefined ? { group: assertSafeName('group', o.group) } : {};
}

/** One history line: `12  group lab  7 *  app:1@1a2b3c4d5e6f  published  2026-…  token:ci (redeploy of 9)`. */
export function historyRow(d: Deployment): Record<string, string> {
  return {
    id: String(d.id),
    scope: `${d.scope.kind} ${d.scope.id}`,
    version: `${d.version}${d.current ? ' *' : ''}`,
    images: d.cleared
      ? '(cleared)'
      : d.images.map((i) => `${i.name}@${i.digest.replace(/^sha256:/, '').slice(0, 12)}`).join(',') || '-',
    state: d.state,
    when: d.createdAt,
    by: `${d.createdBy ?? '-'}${d.redeployOf !== null ? ` (redeploy of ${d.redeployOf})` : ''}`,
  };
}

/**
 * `--wait` after a deploy or a redeploy: a group's one-phase rollout until it ends, a device's progress
 * until it answered; Conflict (exit 1) naming the devices that rejected or failed, Timeout after `timeoutMs`.
 */
export async function followDeployment(
  client: FleetClient,
  dep: Deployment,
  timeoutMs: number,
  timeoutText: string,
): Promise<void> {
  if (dep.rolloutId !== undefined)
    return waitForRollout(client, dep.rolloutId, dep.text, timeoutMs, timeoutText);
  const result = await waitForDeployment(() => client.progress(dep.id), timeoutMs);
  if (!result.ok || !result.done) {
    const bad = result.devices.filter((d) => d.state !== 'converged' && d.state !== 'superseded');
    throw new BerthError(
      result.done ? 'Conflict' : 'Timeout',
      `${dep.text}: ${result.done ? '' : `not done after ${timeoutText}; `}${bad
        .map((d) => `${d.deviceId} ${d.state}${d.detail ? ` (${d.detail})` : ''}`)
        .join('; ')}`,
    );
  }
}

/**
 * Poll the deployment's progress until every device answered (converged, rejected, failed, superseded) or
 * the time is up; progress lines go to stderr as devices move.
 */
export async function waitForDeployment(
  progress: () => DeploymentProgress | Promise<DeploymentProgress>,
  timeoutMs: number,
  out: NodeJS.WritableStream = process.stderr,
): Promise<DeploymentProgress> {
  const until = Date.now() + timeoutMs;
  const tell = deviceLines(out);
  for (;;) {
    const p = await progress();
    for (const d of p.devices) tell(d);
    if (p.done || Date.now() >= until) {
      out.write(
        `${p.converged}/${p.total} converged, ${p.failed} rejected or failed, ${p.pending} pending\n`,
      );
      return p;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
