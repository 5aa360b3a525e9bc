import { hostname } from 'node:os';
import type { Command } from 'commander';
import { AgentConnection } from '../agent/connection.js';
import { resolvePublicKey } from '../fleet/keys.js';
import { errorMessage, invalidInput } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import { hostPlatform, parsePlatform } from '../oci/platform.js';
import { BUILD } from '../version.js';
import type { CliContext } from './context.js';
import { addMqttOptions, type MqttFlags, mqttOptionsFrom, untilSignal } from './mqtt-options.js';
import { ProgressBar } from './progress.js';

/**
 * `berth agent` (transport part): connect, announce presence, receive and verify targets, pull the
 * images they reference. Running the apps is the reconciler's (src/agent/) job; it builds on
 * AgentConnection the same way.
 */
export function registerAgent(program: Command, ctx: () => CliContext): void {
  addMqttOptions(
    program
      .command('agent')
      .description('run the device agent: presence, signed targets, image pulls over MQTT')
      .option('--device-id <id>', 'this device (config mqtt.deviceId)')
      .option('--group <name...>', 'groups whose targets this device follows')
      .option('--fleet-key <file|pem>', 'fleet public key (config mqtt.fleetPublicKey)')
      .option('--no-pull', 'record targets without pulling their images'),
  ).action(
    async (opts: MqttFlags & { deviceId?: string; group?: string[]; fleetKey?: string; pull: boolean }) => {
      const c = ctx();
      const agent = await buildAgentConnection(c, opts, true);
      agent.on('target', (signed) => {
        if (!opts.pull) return;
        (async () => {
          for (const img of signed.target.images) {
            const r = await agent.pullImage(img.name, { expectDigest: img.digest });
            c.log.info({ image: img.name, digest: r.digest, fetched: r.fetchedBytes }, 'image pulled');
          }
        })().catch((err) => c.log.error({ err: errorMessage(err) }, 'pull for target failed'));
      });
      await agent.start(false);
      await untilSignal();
      await agent.stop();
    },
  );
}

export async function buildAgentConnection(
  c: CliContext,
  opts: MqttFlags & {
    deviceId?: string;
    group?: string[];
    fleetKey?: string;
    window?: string;
    fanout?: boolean;
  },
  presence: boolean,
  clientId?: string,
): Promise<AgentConnection> {
  const deviceId = assertSafeName('device id', opts.deviceId ?? c.config.mqtt.deviceId ?? hostname());
  const keyText = opts.fleetKey ?? c.config.mqtt.fleetPublicKey;
  if (!keyText) throw invalidInput('no fleet public key: pass --fleet-key or set mqtt.fleetPublicKey');
  return new AgentConnection({
    fleet: assertSafeName('fleet', opts.fleet ?? c.config.mqtt.fleet),
    deviceId,
    groups: (opts.group ?? []).map((g) => assertSafeName('group', g)),
    platform: c.config.platform ? parsePlatform(c.config.platform) : hostPlatform(),
    agentVersion: BUILD.version,
    mqtt: mqttOptionsFrom(opts, c.config),
    store: c.store,
    db: c.db,
    publicKey: await resolvePublicKey(keyText),
    log: c.log,
    presence,
    transfer: {
      ...(opts.window ? { window: Number(opts.window) } : {}),
      ...(opts.fanout === false ? { fanout: false } : {}),
    },
    ...(clientId ? { clientId } : {}),
  });
}

export function pullProgress(label: string): {
  bar: ProgressBar;
  fn: (d: number, t: number, w: string) => void;
} {
  const bar = new ProgressBar(label);
  return { bar, fn: (d, t, w) => bar.update(d, t, w) };
}
