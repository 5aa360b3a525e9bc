import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { buildTarget, publishTarget } from '../fleet/deploy.js';
import { readDeployText } from '../fleet/deploy-file.js';
import { keygen, loadFleetPrivateKey } from '../fleet/keys.js';
import { FleetRegistry } from '../fleet/registry.js';
import { FleetServer } from '../fleet/server.js';
import { writeFileAtomic } from '../lib/atomic.js';
import { invalidInput, notFound } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import { deviceTopic } from '../transport/topics.js';
import type { CliContext } from './context.js';
import { registerFleetAdmin } from './fleet-admin.js';
import { registerFleetCommand } from './fleet-command.js';
import { SERVE_FILE, withFleetLink } from './fleet-link.js';
import { addMqttOptions, type MqttFlags, mqttOptionsFrom, untilSignal } from './mqtt-options.js';
import { humanSize, printJson, printTable } from './output.js';
import { pushImage } from './push.js';

export function registerFleet(program: Command, ctx: () => CliContext): void {
  const fleet = program
    .command('fleet')
    .description('fleet server: images, signed targets, blob service over MQTT');

  fleet
    .command('keygen')
    .description(
      'create the fleet ed25519 signing key in the state dir (prints the public key to provision on devices)',
    )
    .option('--force', 'replace an existing key (devices must be re-provisioned)')
    .action(async (opts: { force?: boolean }) => {
      const k = await keygen(ctx().stateDir, opts.force ?? false);
      process.stderr.write(`fleet key ${k.keyId} written to ${k.privateFile}; public key: ${k.publicFile}\n`);
      process.stdout.write(k.publicKeyPem);
    });

  addMqttOptions(
    fleet
      .command('serve')
      .description('run the fleet server: on --broker, or on an embedded MQTT broker when none is given')
      .option('--listen <host:port>', 'embedded broker address', '127.0.0.1:1883')
      .option('--rate-limit <bytes/s>', 'cap blob egress (0 = none)', '0')
      .option('--gather-ms <ms>', 'how long to gather fan-out interest in a blob', '150'),
  ).action(async (opts: MqttFlags & { listen: string; rateLimit: string; gatherMs: string }) => {
    const c = ctx();
    const flt = assertSafeName('fleet', opts.fleet ?? c.config.mqtt.fleet);
    const external = opts.broker ?? c.config.mqtt.broker;
    const [host, portStr] = splitHostPort(opts.listen);
    const server = new FleetServer({
      fleet: flt,
      db: c.db,
      store: c.store,
      privateKey: await loadFleetPrivateKey(c.stateDir),
      log: c.log,
      mqtt: external ? mqttOptionsFrom(opts, c.config) : undefined,
      listen: { host, port: Number(portStr) },
      blob: { rateLimit: Number(opts.rateLimit), gatherMs: Number(opts.gatherMs) },
    });
    await server.start();
    await writeFileAtomic(
      path.join(c.stateDir, SERVE_FILE),
      JSON.stringify({ broker: server.brokerUrl, fleet: flt, pid: process.pid }),
    );
    c.log.info({ broker: server.brokerUrl, fleet: flt }, 'fleet server ready');
    process.stdout.write(`fleet ${flt} serving on ${server.brokerUrl}\n`);
    await untilSignal();
    await server.stop();
  });

  fleet
    .command('push <source>')
    .description(
      'import an image (OCI layout dir, oci-archive or docker-archive) into the fleet, every platform kept',
    )
    .requiredOption('--tag <name:tag>', 'name the image is deployed and pulled by')
    .action(async (source: string, opts: { tag: string }) => {
      const c = ctx();
      const row = await pushImage(c, source, opts.tag);
      process.stdout.write(`${row.name} ${row.digest} ${row.platforms} ${humanSize(row.totalSize)}\n`);
    });

  fleet
    .command('images')
    .description('list images in the fleet')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }) => {
      const rows = new FleetRegistry(ctx().db).images();
      if (opts.json) return printJson(rows);
      printTable(
        rows.map((r) => ({
          name: r.name,
          digest: r.digest.slice(0, 19),
          platforms: r.platforms,
          size: humanSize(r.totalSize),
          pushed: new Date(r.pushedAt).toISOString(),
        })),
        ['name', 'digest', 'platforms', 'size', 'pushed'],
      );
    });

  fleet
    .command('devices')
    .description('list devices: online/offline, last seen, platform, target versions received')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }) => {
      const reg = new FleetRegistry(ctx().db);
      const rows = reg.devices();
      if (opts.json) return printJson(rows);
      printTable(
        rows.map((d) => ({
          id: d.id,
          state: d.online ? 'online' : 'offline',
          'last seen': new Date(d.lastSeen).toISOString(),
          platform: d.platform ?? '',
          groups: d.groups.join(','),
          target: `device v${d.deviceVersion ?? '-'} group v${d.groupVersion ?? '-'}`,
        })),
        ['id', 'state', 'last seen', 'platform', 'groups', 'target'],
      );
    });

  addMqttOptions(
    fleet
      .command('deploy <file>')
      .description(
        'sign and publish (retained) a new target version for a device or a group: a target JSON or a docker-compose file',
      )
      .option('--app <name>', 'app name for a compose file (default: its name: key)')
      .option('--device <id>', 'target one device')
      .option('--group <name>', 'target a group of devices'),
  ).action(async (file: string, opts: MqttFlags & { device?: string; group?: string; app?: string }) => {
    const c = ctx();
    if (Boolean(opts.device) === Boolean(opts.group))
      throw invalidInput('pass exactly one of --device ID or --group NAME');
    const scope = opts.device
      ? { kind: 'device' as const, id: assertSafeName('device id', opts.device) }
      : { kind: 'group' as const, id: assertSafeName('group', opts.group!) };
    const text = await fsp.readFile(file, 'utf8').catch((err: unknown) => {
      throw invalidInput(`cannot read target file ${file}: ${(err as Error).message}`);
    });
    const input = readDeployText(text, file, opts.app ? { app: opts.app } : {});
    const registry = new FleetRegistry(c.db);
    const key = await loadFleetPrivateKey(c.stateDir);
    const signed = await withFleetLink(c, opts, 'berth-deploy', async ({ fleet: flt, conn }) => {
      const s = buildTarget(registry, flt, scope, input, key);
      await publishTarget(conn, s);
      return s;
    });
    registry.recordDeployment(signed);
    process.stdout.write(`deployed ${scope.kind} ${scope.id} version ${signed.target.version}\n`);
  });

  addMqttOptions(
    fleet
      .command('state <device>')
      .description("print a device's reported state (retained on berth/v1/<fleet>/devices/<id>/state)")
      .option('--timeout <ms>', 'how long to wait for the retained message', '5000'),
  ).action(async (device: string, opts: MqttFlags & { timeout: string }) => {
    const c = ctx();
    await withFleetLink(c, opts, 'berth-state', async ({ fleet: flt, conn, next }) => {
      const topic = deviceTopic(flt, assertSafeName('device id', device), 'state');
      const got = next((t, payload) => t === topic && payload.length > 0, Number(opts.timeout));
      await conn.subscribe(topic, 1);
      const payload = await got;
      if (!payload) throw notFound(`no reported state from device ${device} on ${topic}`);
      printJson(JSON.parse(payload.toString('utf8')));
    });
  });

  registerFleetCommand(fleet, ctx);
  registerFleetAdmin(fleet, ctx);
}

function splitHostPort(s: string): [string, string] {
  const i = s.lastIndexOf(':');
  if (i <= 0 || !/^\d+$/.test(s.slice(i + 1))) throw invalidInput(`--listen ${s}: expected host:port`);
  return [s.slice(0, i), s.slice(i + 1)];
}
