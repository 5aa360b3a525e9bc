import { hostname } from 'node:os';
import type { Command } from 'commander';
import { startDeviceAgent } from '../agent/adapters/device-agent.js';
import { agentSocketPath } from '../agent/api-client.js';
import { AgentConnection } from '../agent/connection.js';
import { invalidInput } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import { autoRemoveCommand } from '../lib/self.js';
import { hostPlatform, parsePlatform } from '../oci/platform.js';
import { resolvePublicKey } from '../transport/signing.js';
import { BUILD } from '../version.js';
import type { CliContext } from './context.js';
import { addMqttOptions, type MqttFlags, mqttOptionsFrom, untilSignal } from './mqtt-options.js';
import { ProgressBar } from './progress.js';

/**
 * `berth agent`: the full device agent (see src/agent/adapters/device-agent.ts for the wiring). SIGTERM
 * or SIGINT stops the agent; the apps' containers keep running under their monitors.
 */
export function registerAgent(program: Command, ctx: () => CliContext): void {
  addMqttOptions(
    program
      .command('agent')
      .description(
        'run the device agent: fleet connection, reconciler, health, reporting, local API on <state-dir>/berth.sock',
      )
      .option('--device-id <id>', 'this device (config mqtt.deviceId)')
      .option('--group <name...>', 'groups whose targets this device follows')
      .option('--fleet-key <file|pem>', 'fleet public key (config mqtt.fleetPublicKey)')
      .option('--offline', 'no fleet connection: run the last applied target from the state dir'),
  ).action(
    async (
      opts: MqttFlags & { deviceId?: string; group?: string[]; fleetKey?: string; offline?: boolean },
    ) => {
      const c = ctx();
      const hasFleet = !opts.offline && Boolean(opts.broker ?? c.config.mqtt.broker);
      const connection = hasFleet ? await buildAgentConnection(c, opts, true) : undefined;
      const deviceId = assertSafeName('device id', opts.deviceId ?? c.config.mqtt.deviceId ?? hostname());
      const device = await startDeviceAgent({
        db: c.db,
        store: c.store,
        config: c.config,
        stateDir: c.stateDir,
        log: c.log,
        native: c.native,
        connection,
        fleet: assertSafeName('fleet', opts.fleet ?? c.config.mqtt.fleet),
        deviceId,
        autoRemoveCommand: autoRemoveCommand(c.stateDir, program.opts<{ config?: string }>().config),
      });
      c.log.info({ deviceId, fleet: hasFleet, socket: agentSocketPath(c.stateDir) }, 'agent running');
      await untilSignal();
      // containers keep running: their monitors own them; the next agent picks them up
      await device.stop();
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
