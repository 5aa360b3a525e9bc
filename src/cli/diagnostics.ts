/**
 * Hidden self-checks used to verify a packaged executable on its target (tests and `packaging/README.md`):
 * `db-check` opens the state dir's SQLite database through the embedded addon, `mqtt-ping` connects to a
 * broker and publishes a retained online status, `native-path` resolves a native program (extracting the
 * embedded ones). They stay small and stable; the agent and image commands
 * exercise the same parts for real.
 */
import type { Command } from 'commander';

import { invalidInput, withContext } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import { type NativeProgram, nativeArch } from '../lib/native.js';
import { BUILD } from '../version.js';
import type { CliContext } from './context.js';
import { printJson } from './output.js';

const NATIVE_PROGRAMS: NativeProgram[] = ['runtime', 'monitor', 'storage'];

export function registerDiagnostics(program: Command, ctx: () => CliContext): void {
  program
    .command('db-check', { hidden: true })
    .description('open (creating if needed) the state database and print its schema version')
    .action(() => {
      const c = ctx();
      const db = c.db;
      const row = db.prepare('SELECT sqlite_version() AS sqlite').get() as { sqlite: string };
      printJson({
        stateDir: c.stateDir,
        sqlite: row.sqlite,
        schemaVersion: db.pragma('user_version', { simple: true }),
        journalMode: db.pragma('journal_mode', { simple: true }),
      });
    });

  program
    .command('native-path', { hidden: true })
    .description('print where a native program is run from (extracting the embedded ones if needed)')
    .argument('<name>', 'runtime | monitor | storage')
    .action((name: string) => {
      if (!NATIVE_PROGRAMS.includes(name as NativeProgram)) {
        throw invalidInput(`unknown native program ${JSON.stringify(name)}: ${NATIVE_PROGRAMS.join(', ')}`);
      }
      // the state dir is an extraction candidate: the context's native parts know it
      process.stdout.write(`${ctx().native.path(name as NativeProgram)}\n`);
    });

  program
    .command('mqtt-ping', { hidden: true })
    .description('connect to the broker, publish a retained online status, disconnect')
    .option('--broker <url>', 'broker URL (default: config mqtt.broker)')
    .option('--topic <topic>', 'topic (default: berth/v1/<fleet>/devices/<deviceId>/status)')
    .option('--timeout <ms>', 'connect timeout', '10000')
    .option('--hold <seconds>', 'stay connected (with the database open) this long, like an idle agent')
    .action(async (opts: { broker?: string; topic?: string; timeout: string; hold?: string }) => {
      const mqttConfig = ctx().config.mqtt;
      const broker = opts.broker ?? mqttConfig.broker;
      if (!broker) throw invalidInput('no broker: pass --broker or set mqtt.broker');
      const deviceId = mqttConfig.deviceId ?? 'unnamed';
      assertSafeName('device id', deviceId);
      const topic = opts.topic ?? `berth/v1/${mqttConfig.fleet}/devices/${deviceId}/status`;
      const timeoutMs = Number(opts.timeout);
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0)
        throw invalidInput(`--timeout ${opts.timeout}: expected a positive number of milliseconds`);
      // Loaded on use: mqtt and its transports cost start-up time every other command would pay.
      const { MqttConnection } = await import('../transport/connection.js');
      const c = ctx();
      const conn = new MqttConnection({
        url: broker,
        clientId: `berth-ping-${process.pid}`,
        // the same negotiation every command uses: MQTT 5 first, 3.1.1 when the broker refuses it
        protocolVersion: mqttConfig.protocolVersion,
        username: mqttConfig.username,
        password: process.env.BERTH_MQTT_PASSWORD ?? mqttConfig.password,
        log: c.log,
      });
      const status = { online: true, deviceId, version: BUILD.version, arch: nativeArch(), ts: Date.now() };
      try {
        await conn.start({ timeoutMs });
        await conn.publish(topic, JSON.stringify(status), { qos: 1, retain: true });
        if (opts.hold) {
          c.db;
          await new Promise((r) => setTimeout(r, Number(opts.hold) * 1000));
        }
      } catch (err) {
        throw withContext(`cannot reach ${broker}`, err);
      } finally {
        await conn.close(true);
      }
      printJson({ broker, topic, status });
    });
}
