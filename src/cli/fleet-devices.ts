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
import { DEVICE_SORTS } from '../fleet/store/devices.js';
import { DEVICE_STATUSES, type DeviceStatus } from '../fleet/view.js';
import { invalidInput } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import type { CliContext } from './context.js';
import { addClientOptions, type ClientFlags, openFleetClient } from './fleet-client.js';
import { addMqttOptions, type MqttFlags } from './mqtt-options.js';
import { printJson, printTable } from './output.js';

interface ListFlags extends ClientFlags {
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

function ago(iso: string | null): string {
  if (iso === null) return 'never';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

export function registerFleetDevices(fleet: Command, ctx: () => CliContext): void {
  addClientOptions(
    fleet
      .command('devices')
      .description('list devices as they reported: online, target (operator version), status, last error')
      .option('--online', 'only online devices')
      .option('--offline', 'only offline devices')
      .option('--status <status>', `only this status: ${DEVICE_STATUSES.join(' | ')}`)
      .option('--group <name>', 'only devices that follow this group')
      .option('--label <k=v...>', 'only devices with these labels (k=v), or that have the key (k)')
      .option('--platform <os/arch>', 'only this platform')
      .option('--prefix <id>', 'only ids starting with this')
      .option('--image <name:tag>', 'only devices that run this image')
      .option('--sort <field>', `${DEVICE_SORTS.join(' | ')}`, 'id')
      .option('--desc', 'sort descending')
      .option('--limit <n>', 'rows per page (1-500)', '50')
      .option('--cursor <c>', 'the next page (printed after a full page)')
      .option('--json', 'print the page as JSON ({items, total, next})'),
  ).action(async (o: ListFlags) => {
    if (o.online && o.offline) throw invalidInput('--online and --offline exclude each other');
    if (o.status !== undefined && !(DEVICE_STATUSES as readonly string[]).includes(o.status))
      throw invalidInput(`--status ${o.status}: expected ${DEVICE_STATUSES.join(' | ')}`);
    if (!(DEVICE_SORTS as readonly string[]).includes(o.sort ?? 'id'))
      throw invalidInput(`--sort ${o.sort}: expected ${DEVICE_SORTS.join(' | ')}`);
    const client = await openFleetClient(ctx(), o);
    const page = await client.devices({
      ...(o.online ? { online: true } : o.offline ? { online: false } : {}),
      ...(o.status ? { status: o.status as DeviceStatus } : {}),
      ...(o.group ? { group: o.group } : {}),
      ...(o.label ? { label: o.label } : {}),
      ...(o.platform ? { platform: o.platform } : {}),
      ...(o.prefix ? { prefix: o.prefix } : {}),
      ...(o.image ? { image: o.image } : {}),
      sort: (o.sort ?? 'id') as (typeof DEVICE_SORTS)[number],
      order: o.desc ? 'desc' : 'asc',
      limit: Number(o.limit),
      ...(o.cursor ? { cursor: o.cursor } : {}),
    });
    if (o.json) return printJson(page);
    printTable(
      page.items.map((d) => ({
        id: d.id,
        state: d.revokedAt ? 'revoked' : d.online ? 'online' : 'offline',
        status: d.status,
        target: d.applied?.text ?? '-',
        expected: d.expected?.text ?? '-',
        previous: d.previous?.text ?? '-',
        'last seen': ago(d.lastSeen),
        groups: d.groups.join(','),
        agent: d.agentVersion ?? '-',
        'agent update': d.agentUpdate ? `${d.agentUpdate.version} ${d.agentUpdate.phase}` : '-',
        'last error': (d.lastError ?? '').slice(0, 80),
      })),
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
      `${page.items.length} of ${page.total ?? '?'} devices${page.next ? `; next page: --cursor ${page.next}` : ''}\n`,
    );
  });

  const device = fleet.command('device').description('one device: show, label, revoke');

  addClientOptions(
    device
      .command('show <id>')
      .description('everything the fleet knows of a device: identity, reported state per service, info'),
  ).action(async (id: string, o: ClientFlags) => {
    const client = await openFleetClient(ctx(), o);
    printJson(await client.device(assertSafeName('device id', id)));
  });

  addClientOptions(
    device
      .command('label <id> [pairs...]')
      .description('set labels (key=value) and remove others (--rm key)')
      .option('--rm <key...>', 'labels to remove'),
  ).action(async (id: string, pairs: string[], o: ClientFlags & { rm?: string[] }) => {
    if (pairs.length === 0 && !o.rm?.length) throw invalidInput('give key=value pairs to set, or --rm key');
    const client = await openFleetClient(ctx(), o);
    const { labels } = await client.setLabels(assertSafeName('device id', id), {
      set: parseLabelPairs(pairs),
      remove: o.rm ?? [],
    });
    printTable(
      Object.entries(labels).map(([k, v]) => ({ key: k, value: v })),
      ['key', 'value'],
    );
  });

  addClientOptions(
    addMqttOptions(
      device
        .command('revoke <id>')
        .description(
          'cut a device off: its broker access goes (it is disconnected), it is refused from now on',
        ),
    ),
  ).action(async (id: string, o: MqttFlags & ClientFlags) => {
    const client = await openFleetClient(ctx(), o);
    await client.revokeDevice(assertSafeName('device id', id));
    process.stdout.write(`revoked device ${id}: disconnected, and refused from now on\n`);
  });
}
