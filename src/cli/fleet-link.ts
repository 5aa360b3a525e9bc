/**
 * The fleet side's MQTT links from the CLI (local mode: deploy, revoke, command): to the broker `fleet serve` on this state dir
 * noted in fleet-serve.json (with the fleet account of fleet-account.json when it is the embedded broker),
 * else the config's / flags'.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { readFleetAccount } from '../fleet/fleet-account.js';
import { assertSafeName } from '../lib/ids.js';
import { MqttConnection, type MqttConnectionOptions } from '../transport/connection.js';
import type { CliContext } from './context.js';
import { connectTimeoutMs, type MqttFlags, mqttOptionsFrom } from './mqtt-options.js';

/** Where `fleet serve` notes the broker it uses, so `fleet deploy` on the same state dir finds it. */
export const SERVE_FILE = 'fleet-serve.json';

export interface ServeFile {
  broker: string;
  fleet: string;
  pid?: number;
  /** the server runs the embedded broker (its clients use the fleet account) */
  embedded?: boolean;
  /** the management API's URL (`--http`), when it serves one */
  api?: string;
}

export async function readServeFile(stateDir: string): Promise<ServeFile | undefined> {
  try {
    return JSON.parse(await fsp.readFile(path.join(stateDir, SERVE_FILE), 'utf8'));
  } catch {
    return undefined;
  }
}

/** MQTT options for a fleet-side link on this state dir. */
export async function fleetLinkOptions(
  c: CliContext,
  opts: MqttFlags,
): Promise<Omit<MqttConnectionOptions, 'clientId' | 'log' | 'will'>> {
  const served = await readServeFile(c.stateDir);
  const o = mqttOptionsFrom(opts, c.config, served?.broker);
  if (served?.embedded && o.url === served.broker) {
    // the embedded broker speaks MQTT 3.1.1: no need to try 5 first
    const version = opts.mqttVersion === undefined ? { protocolVersion: 4 as const } : {};
    const account = o.username === undefined ? await readFleetAccount(c.stateDir) : undefined;
    return {
      ...o,
      ...version,
      ...(account ? { username: account.username, password: account.password } : {}),
    };
  }
  return o;
}

/**
 * An MQTT link for fleet-side commands on this state dir: to the broker `fleet serve` uses (with the fleet
 * account on the embedded broker), or the config's / flags'. The caller closes it.
 */
export async function openFleetLink(
  c: CliContext,
  opts: MqttFlags,
  clientPrefix: string,
): Promise<{ fleet: string; conn: MqttConnection }> {
  const served = await readServeFile(c.stateDir);
  const fleet = assertSafeName('fleet', opts.fleet ?? served?.fleet ?? c.config.mqtt.fleet);
  const conn = new MqttConnection({
    ...(await fleetLinkOptions(c, opts)),
    clientId: `${clientPrefix}-${process.pid}`,
    log: c.log,
  });
  try {
    // Unavailable (exit 1) when the broker does not answer within --connect-timeout: never a silent exit 0
    await conn.start({ timeoutMs: connectTimeoutMs(opts) });
  } catch (err) {
    await conn.close(false);
    throw err;
  }
  return { fleet, conn };
}
