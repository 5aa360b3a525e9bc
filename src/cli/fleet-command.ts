/**
 * `berth fleet command <device> <kind>`: a remote command for one device, signed with the fleet key,
 * published on the device's `command` topic; waits for the device's answer on its `result` topic.
 *
 *   berth fleet command dev1 restart --app web [--service api]
 *   berth fleet command dev1 logs --app web --service api [--tail 50]
 *   berth fleet command dev1 report
 *   berth fleet command dev1 purge-volume --app web --volume data [--force]
 */
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { CommandSchema } from '../agent/commands.js';
import { loadFleetPrivateKey } from '../fleet/keys.js';
import { BerthError, errorFromWire, invalidInput } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import { formatIssues } from '../oci/validate.js';
import { signCommand } from '../transport/commands.js';
import { CommandResultSchema, decodeJson, encodeJson, MAX_REPLY_BYTES } from '../transport/messages.js';
import { deviceTopic } from '../transport/topics.js';
import type { CliContext } from './context.js';
import { withFleetLink } from './fleet-link.js';
import { addMqttOptions, type MqttFlags } from './mqtt-options.js';
import { printJson } from './output.js';

const KINDS = { restart: 'restart', logs: 'logs', report: 'report', 'purge-volume': 'purgeVolume' } as const;

interface Flags extends MqttFlags {
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
  addMqttOptions(
    fleet
      .command('command <device> <kind>')
      .description(
        'send a signed remote command to a device and print its answer: restart | logs | report | purge-volume',
      )
      .option('--app <name>', 'the app (restart, logs, purge-volume)')
      .option('--service <name>', 'the service (logs; restart: one service instead of the whole app)')
      .option('--tail <n>', 'logs: how many lines', '200')
      .option('--volume <name>', 'purge-volume: the volume')
      .option('--force', 'purge-volume: even while the app holds its update lock')
      .option('--timeout <ms>', 'how long to wait for the answer', '30000')
      .option('--expires <s>', 'the device refuses the command after this many seconds', '300')
      .option('--json', 'print the whole answer as JSON'),
  ).action(async (device: string, kindArg: string, o: Flags) => {
    const c = ctx();
    const kind = KINDS[kindArg as keyof typeof KINDS];
    if (!kind) throw invalidInput(`unknown command ${kindArg}: use ${Object.keys(KINDS).join(' | ')}`);
    const id = randomBytes(8).toString('hex');
    const parsed = CommandSchema.safeParse({
      kind,
      ...(o.app !== undefined ? { app: o.app } : {}),
      ...(o.service !== undefined ? { service: o.service } : {}),
      ...(kind === 'logs' ? { tail: Number(o.tail) } : {}),
      ...(o.volume !== undefined ? { volume: o.volume } : {}),
      ...(kind === 'purgeVolume' ? { force: o.force === true } : {}),
    });
    if (!parsed.success) throw invalidInput(`${kindArg}: ${formatIssues(parsed.error)}`);
    const expiresS = Number(o.expires);
    if (!(expiresS > 0)) throw invalidInput(`invalid --expires ${o.expires}`);
    const key = await loadFleetPrivateKey(c.stateDir);
    const deviceId = assertSafeName('device id', device);

    const answer = await withFleetLink(c, o, 'berth-command', async ({ fleet: flt, conn, next }) => {
      const resultTopic = deviceTopic(flt, deviceId, 'result');
      const got = next((t, payload) => {
        if (t !== resultTopic) return false;
        const r = decodeJson(CommandResultSchema, payload, MAX_REPLY_BYTES);
        return r.ok && r.value.id === id;
      }, Number(o.timeout));
      await conn.subscribe(resultTopic, 1);
      const now = Date.now();
      const signed = signCommand(
        {
          v: 1,
          fleet: flt,
          deviceId,
          id,
          issuedAt: new Date(now).toISOString(),
          expiresAt: new Date(now + expiresS * 1000).toISOString(),
          body: parsed.data as Record<string, unknown>,
        },
        key,
      );
      await conn.publish(deviceTopic(flt, deviceId, 'command'), encodeJson(signed), {
        qos: 1,
        retain: false,
      });
      return got;
    });
    if (!answer)
      throw new BerthError(
        'Timeout',
        `device ${device} did not answer command ${id} within ${o.timeout} ms (offline?)`,
      );
    const res = JSON.parse(answer.toString('utf8')) as {
      ok: boolean;
      result?: unknown;
      error?: { code: string; message: string };
    };
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
