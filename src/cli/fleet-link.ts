/**
 * The fleet side's short MQTT links (deploy, state, command): to the broker `fleet serve` on this state dir
 * noted in fleet-serve.json, else the config's / flags'.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { assertSafeName } from '../lib/ids.js';
import { MqttConnection } from '../transport/connection.js';
import type { CliContext } from './context.js';
import { connectTimeoutMs, type MqttFlags, mqttOptionsFrom } from './mqtt-options.js';

/** Where `fleet serve` notes the broker it uses, so `fleet deploy` on the same state dir finds it. */
export const SERVE_FILE = 'fleet-serve.json';

export async function readServeFile(
  stateDir: string,
): Promise<{ broker: string; fleet: string } | undefined> {
  try {
    return JSON.parse(await fsp.readFile(path.join(stateDir, SERVE_FILE), 'utf8'));
  } catch {
    return undefined;
  }
}

export interface FleetLink {
  fleet: string;
  conn: MqttConnection;
  /** the first message `match` accepts within `timeoutMs` (undefined after it) */
  next(match: (topic: string, payload: Buffer) => boolean, timeoutMs: number): Promise<Buffer | undefined>;
}

/** A short-lived MQTT link for fleet-side commands, to the broker `fleet serve` on this state dir uses. */
export async function withFleetLink<T>(
  c: CliContext,
  opts: MqttFlags,
  clientPrefix: string,
  fn: (link: FleetLink) => Promise<T>,
): Promise<T> {
  const served = await readServeFile(c.stateDir);
  const flt = assertSafeName('fleet', opts.fleet ?? served?.fleet ?? c.config.mqtt.fleet);
  const conn = new MqttConnection({
    ...mqttOptionsFrom(opts, c.config, served?.broker),
    clientId: `${clientPrefix}-${process.pid}`,
    log: c.log,
  });
  const next: FleetLink['next'] = (match, timeoutMs) =>
    new Promise((resolve) => {
      const timer = setTimeout(() => {
        conn.off('message', on);
        resolve(undefined);
      }, timeoutMs);
      const on = (t: string, payload: Buffer) => {
        if (!match(t, payload)) return;
        clearTimeout(timer);
        conn.off('message', on);
        resolve(payload);
      };
      conn.on('message', on);
    });
  try {
    await conn.start({ timeoutMs: connectTimeoutMs(opts) });
    return await fn({ fleet: flt, conn, next });
  } finally {
    await conn.close(true);
  }
}
