import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { Config } from '../config/schema.js';
import { invalidInput, notFound } from '../lib/errors.js';
import type { MqttConnectionOptions } from '../transport/connection.js';

/** MQTT connection flags shared by `fleet serve`, `fleet deploy`, `agent` and `pull`. */
export interface MqttFlags {
  broker?: string;
  fleet?: string;
  username?: string;
  password?: string;
  ca?: string;
  cert?: string;
  key?: string;
  mqttVersion?: string;
  insecure?: boolean;
  connectTimeout?: string;
}

/** How long a command that needs the broker waits for it before failing Unavailable (ms). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 15_000;

/**
 * The MQTT flags. `waits: true` for commands that wait for their broker as long as it takes (the agent
 * runs offline until its broker comes); every other command fails `Unavailable` after
 * `--connect-timeout`.
 */
export function addMqttOptions(cmd: Command, opts: { waits?: boolean } = {}): Command {
  if (!opts.waits)
    cmd.option(
      '--connect-timeout <ms>',
      'fail (Unavailable, exit 1) when no broker answered within this long',
      String(DEFAULT_CONNECT_TIMEOUT_MS),
    );
  return cmd
    .option('--broker <url>', 'MQTT broker, mqtt://host:port or mqtts://host:port (config mqtt.broker)')
    .option('--fleet <name>', 'fleet name, the topic prefix berth/v1/<fleet>/ (config mqtt.fleet)')
    .option('--username <user>', 'MQTT username')
    .option('--password <password>', 'MQTT password (prefer BERTH_MQTT_PASSWORD)')
    .option('--ca <file>', 'CA certificate (PEM) for mqtts://')
    .option('--cert <file>', 'client certificate (PEM)')
    .option('--key <file>', 'client private key (PEM)')
    .option('--mqtt-version <v>', '4 (MQTT 3.1.1), 5, or auto (5, falling back to 3.1.1)')
    .option('--insecure', 'do not verify the broker certificate (testing only)');
}

function readPem(what: string, file: string | undefined): Buffer | undefined {
  if (!file) return undefined;
  try {
    return readFileSync(file);
  } catch {
    throw notFound(`${what} file ${file} not found or unreadable`);
  }
}

export function connectTimeoutMs(flags: MqttFlags): number {
  const ms = Number(flags.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS);
  if (!Number.isInteger(ms) || ms <= 0)
    throw invalidInput(
      `--connect-timeout ${flags.connectTimeout}: expected a positive number of milliseconds`,
    );
  return ms;
}

/** Flags over config; TLS files are read here, at the composition root. */
export function mqttOptionsFrom(
  flags: MqttFlags,
  config: Config,
  fallbackBroker?: string,
): Omit<MqttConnectionOptions, 'clientId' | 'log' | 'will'> {
  const url = flags.broker ?? config.mqtt.broker ?? fallbackBroker;
  if (!url) throw invalidInput('no MQTT broker: pass --broker mqtt://host:port or set mqtt.broker');
  if (!/^(mqtts?|tcp|ssl|tls):\/\//.test(url))
    throw invalidInput(`broker URL ${url} must start with mqtt:// or mqtts://`);
  let protocolVersion: 4 | 5 | 'auto' = config.mqtt.protocolVersion;
  if (flags.mqttVersion !== undefined) {
    if (flags.mqttVersion === '4' || flags.mqttVersion === '3.1.1') protocolVersion = 4;
    else if (flags.mqttVersion === '5') protocolVersion = 5;
    else if (flags.mqttVersion === 'auto') protocolVersion = 'auto';
    else throw invalidInput(`--mqtt-version ${flags.mqttVersion}: expected 4, 5 or auto`);
  }
  return {
    url,
    protocolVersion,
    username: flags.username ?? config.mqtt.username,
    password: flags.password ?? process.env.BERTH_MQTT_PASSWORD ?? config.mqtt.password,
    ca: readPem('CA', flags.ca ?? config.mqtt.ca),
    cert: readPem('client certificate', flags.cert ?? config.mqtt.cert),
    key: readPem('client key', flags.key ?? config.mqtt.key),
    ...(flags.insecure ? { rejectUnauthorized: false } : {}),
  };
}

/** Resolve when SIGINT or SIGTERM arrives, or with the first of `also` to settle. */
export function untilSignal<T = never>(also: Array<Promise<T>> = []): Promise<string | T> {
  return new Promise((resolve) => {
    // Signal handlers do not hold the event loop open; a daemon must stay up while reconnecting.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    let done = false;
    const finish = (v: string | T) => {
      if (done) return;
      done = true;
      clearInterval(keepAlive);
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(v);
    };
    const on = (sig: string) => finish(sig);
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
    for (const p of also) void p.then(finish);
  });
}
