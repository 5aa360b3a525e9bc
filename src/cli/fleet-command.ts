/**
 * `berth fleet command <device> <kind>`: a remote command for one device, signed with the fleet key on the
 * fleet server (locally: this state dir's key), published on the device's `command` topic; the device's
 * answer (its `result` topic) is printed. Works on the server's state dir and remotely (--server/--token).
 *
 *   berth fleet command dev1 restart --app web [--service api]
 *   berth fleet command dev1 logs --app web --service api [--tail 50]
 *   berth fleet command dev1 report
 *   berth fleet command dev1 purge-volume --app web --volume data [--force]
 *   berth fleet command dev1 retry          # reconcile now: the device's retry backoff reset
 */
import type { Command } from 'commander';
import type { CommandInput } from '../fleet/operations.js';
import { BerthError, errorFromWire, invalidInput } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import type { CliContext } from './context.js';
import { addClientOptions, type ClientFlags, openFleetClient } from './fleet-client.js';
import { addMqttOptions, type MqttFlags } from './mqtt-options.js';
import { printJson } from './output.js';

const KINDS = {
  restart: 'restart',
  logs: 'logs',
  report: 'report',
  'purge-volume': 'purgeVolume',
  retry: 'retry',
} as const;

interface Flags extends MqttFlags, ClientFlags {
  app?: string;
  service?: string;
  tail?: string;
  volume?: string;
  force?: boolean;
  timeout: string;
  expires: string;
  json?: boolean;
}

export function registerFleetCommand(fleet: Command, ctx: () => CliContext): void {
  addClientOptions(
    addMqttOptions(
      fleet
        .command('command <device> <kind>')
        .description(
          'send a signed remote command to a device and print its answer: restart | logs | report | ' +
            'purge-volume | retry (reconcile now, its retry backoff reset; `fleet device show` has the pending retry)',
        )
        .option('--app <name>', 'the app (restart, logs, purge-volume)')
        .option('--service <name>', 'the service (logs; restart: one service instead of the whole app)')
        .option('--tail <n>', 'logs: how many lines', '200')
        .option('--volume <name>', 'purge-volume: the volume')
        .option('--force', 'purge-volume: even while the app holds its update lock')
        .option('--timeout <ms>', 'how long to wait for the answer', '30000')
        .option('--expires <s>', 'the device refuses the command after this many seconds', '300')
        .option('--json', 'print the whole answer as JSON'),
    ),
  ).action(async (device: string, kindArg: string, o: Flags) => {
    const kind = KINDS[kindArg as keyof typeof KINDS];
    if (!kind) throw invalidInput(`unknown command ${kindArg}: use ${Object.keys(KINDS).join(' | ')}`);
    const timeoutMs = Number(o.timeout);
    const expiresS = Number(o.expires);
    if (!(timeoutMs > 0)) throw invalidInput(`invalid --timeout ${o.timeout}`);
    if (!(expiresS > 0)) throw invalidInput(`invalid --expires ${o.expires}`);
    const req: CommandInput = {
      kind,
      ...(o.app !== undefined ? { app: o.app } : {}),
      ...(o.service !== undefined ? { service: o.service } : {}),
      ...(kind === 'logs' ? { tail: Number(o.tail) } : {}),
      ...(o.volume !== undefined ? { volume: o.volume } : {}),
      ...(kind === 'purgeVolume' ? { force: o.force === true } : {}),
      timeoutMs,
      expiresS,
    };
    const client = await openFleetClient(ctx(), o);
    const res = await client.command(assertSafeName('device id', device), req);
    if (!res.ok) {
      const err = errorFromWire(res.error, 'command failed');
      throw new BerthError(err.code, `device ${device}: ${err.message}`);
    }
    const lines = (res.result as { lines?: unknown } | undefined)?.lines;
    if (!o.json && kind === 'logs' && Array.isArray(lines))
      process.stdout.write(lines.map((l) => `${l}\n`).join(''));
    else printJson(o.json ? res : res.result);
  });
}
