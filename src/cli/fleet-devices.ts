/**
 * `berth fleet devices` and `berth fleet device …`: the fleet's view of its devices — what each reported
 * (online, the target it applies with the operator's version, status, agent version and self-update, last
 * error), never what the fleet
 * assumes — and the operator's changes to one device: labels and revocation.
 *
 *   berth fleet devices [--online|--offline] [--status S] [--group G] [--label k=v] [--sort lastSeen --desc]
 *   berth fleet device show d1
 *   berth fleet device label d1 site=berlin [--rm site]
 *   berth fleet device revoke d1
 */
import type { Command } from 'commander';
import { DEVICE_SORTS, type DeviceQuery, type DeviceRow } from '../fleet/store/devices.js';
import { DEVICE_STATUSES, type DeviceStatus, effectiveTarget, formatTargetRef } from '../fleet/view.js';
import { invalidInput, notFound } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import type { CliContext } from './context.js';
import { fleetStores, localFleet } from './fleet-local.js';
import { addMqttOptions, type MqttFlags } from './mqtt-options.js';
import { printJson, printTable } from './output.js';

interface ListFlags {
  online?: boolean;
  offline?: boolean;
  status?: string;
  group?: string;
  label?: string[];
  platform?: string;
  prefix?: string;
  image?: string;
  sort?: string;
  desc?: boolean;
  limit: string;
  cursor?: string;
  json?: boolean;
}

/** `k=v` pairs (labels): every key once. */
export function parseLabelPairs(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const i = p.indexOf('=');
    if (i <= 0) throw invalidInput(`label ${JSON.stringify(p)}: expected key=value`);
    const k = p.slice(0, i);
    if (k in out) throw invalidInput(`label ${k} given twice`);
    out[k] = p.slice(i + 1);
  }
  return out;
}

function ago(ms: number | null): string {
  if (ms === null) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

export function registerFleetDevices(fleet: Command, ctx: () => CliContext): void {
  fleet
    .command('devices')
    .description('list devices as they reported: online, target (operator version), status, last error')
    .option('--online', 'only online devices')
    .option('--offline', 'only offline devices')
    .option('--status <status>', `only this status: ${DEVICE_STATUSES.join(' | ')}`)
    .option('--group <name>', 'only devices that follow this group')
    .option('--label <k=v...>', 'only devices with these labels')
    .option('--platform <os/arch>', 'only this platform')
    .option('--prefix <id>', 'only ids starting with this')
    .option('--image <name:tag>', 'only devices that run this image')
    .option('--sort <field>', `${DEVICE_SORTS.join(' | ')}`, 'id')
    .option('--desc', 'sort descending')
    .option('--limit <n>', 'rows per page (1-500)', '50')
    .option('--cursor <c>', 'the next page (printed after a full page)')
    .option('--json', 'print the page as JSON ({items, total, nextCursor})')
    .action((o: ListFlags) => {
      const stores = fleetStores(ctx());
      if (o.online && o.offline) throw invalidInput('--online and --offline exclude each other');
      if (o.status !== undefined && !(DEVICE_STATUSES as readonly string[]).includes(o.status))
        throw invalidInput(`--status ${o.status}: expected ${DEVICE_STATUSES.join(' | ')}`);
      const q: DeviceQuery = {
        ...(o.online ? { online: true } : o.offline ? { online: false } : {}),
        ...(o.status ? { status: o.status as DeviceStatus } : {}),
        ...(o.group ? { group: o.group } : {}),
        ...(o.label ? { labels: parseLabelPairs(o.label) } : {}),
        ...(o.platform ? { platform: o.platform } : {}),
        ...(o.prefix ? { idPrefix: o.prefix } : {}),
        ...(o.image ? { image: o.image } : {}),
        sort: o.sort as DeviceQuery['sort'],
        order: o.desc ? 'desc' : 'asc',
        limit: Number(o.limit),
        ...(o.cursor ? { cursor: o.cursor } : {}),
      };
      const page = stores.devices.list(q);
      if (o.json) return printJson(page);
      const expected = (d: DeviceRow) =>
        effectiveTarget(d.id, d.groups, (s) => stores.deployments.current(s));
      printTable(
        page.items.map((d) => {
          const e = expected(d);
          return {
            id: d.id,
            state: d.revokedAt ? 'revoked' : d.online ? 'online' : 'offline',
            status: d.status,
            target: formatTargetRef(d.applied),
            expected: e ? (e.cleared ? '-' : formatTargetRef(e)) : '-',
            previous: formatTargetRef(d.previous),
            'last seen': ago(d.lastSeen),
            groups: d.groups.join(','),
            agent: d.agentVersion ?? '-',
            'agent update': d.agentUpdate ? `${d.agentUpdate.version} ${d.agentUpdate.phase}` : '-',
            'last error': (d.lastError ?? '').slice(0, 80),
          };
        }),
        [
          'id',
          'state',
          'status',
          'target',
          'expected',
          'previous',
          'last seen',
          'groups',
          'agent',
          'agent update',
          'last error',
        ],
      );
      process.stderr.write(
        `${page.items.length} of ${page.total ?? '?'} devices${page.nextCursor ? `; next page: --cursor ${page.nextCursor}` : ''}\n`,
      );
    });

  const device = fleet.command('device').description('one device: show, label, revoke');

  device
    .command('show <id>')
    .description('everything the fleet knows of a device: identity, reported state per service, info')
    .action((id: string) => {
      const d = fleetStores(ctx()).devices.detail(assertSafeName('device id', id));
      if (!d) throw notFound(`no device ${id} in the fleet`);
      printJson(d);
    });

  device
    .command('label <id> [pairs...]')
    .description('set labels (key=value) and remove others (--rm key)')
    .option('--rm <key...>', 'labels to remove')
    .action(async (id: string, pairs: string[], o: { rm?: string[] }) => {
      const c = ctx();
      if (pairs.length === 0 && !o.rm?.length) throw invalidInput('give key=value pairs to set, or --rm key');
      const { services } = await localFleet(c, {});
      const labels = services.devices.setLabels(
        assertSafeName('device id', id),
        parseLabelPairs(pairs),
        o.rm ?? [],
      );
      printTable(
        Object.entries(labels).map(([k, v]) => ({ key: k, value: v })),
        ['key', 'value'],
      );
    });

  addMqttOptions(
    device
      .command('revoke <id>')
      .description(
        'cut a device off: its broker access goes (it is disconnected), it is refused from now on',
      ),
  ).action(async (id: string, o: MqttFlags) => {
    const c = ctx();
    const { services } = await localFleet(c, o);
    await services.devices.revoke(assertSafeName('device id', id));
    process.stdout.write(`revoked device ${id}: disconnected, and refused from now on\n`);
  });
}
