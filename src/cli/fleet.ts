import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { readDeployText } from '../fleet/deploy-file.js';
import { loadOrCreateFleetAccount } from '../fleet/fleet-account.js';
import { keygen, loadFleetPrivateKey } from '../fleet/keys.js';
import { FleetServer } from '../fleet/server.js';
import type { DeployInput, DeployService } from '../fleet/services/deploy.js';
import { formatTargetRef, type ProgressSummary } from '../fleet/view.js';
import { writeFileAtomic } from '../lib/atomic.js';
import { BerthError, invalidInput, notFound } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import type { CliContext } from './context.js';
import { parseDurationFlag } from './duration.js';
import { registerFleetAdmin } from './fleet-admin.js';
import { registerFleetCommand } from './fleet-command.js';
import { registerFleetDevices } from './fleet-devices.js';
import { registerFleetEnroll } from './fleet-enroll.js';
import { SERVE_FILE, type ServeFile } from './fleet-link.js';
import { fleetStores, localFleet } from './fleet-local.js';
import { registerFleetRelease } from './fleet-release.js';
import { addMqttOptions, type MqttFlags, mqttOptionsFrom, untilSignal } from './mqtt-options.js';
import { humanSize, printJson, printTable } from './output.js';
import { pushImage } from './push.js';

export function registerFleet(program: Command, ctx: () => CliContext): void {
  const fleet = program
    .command('fleet')
    .description('fleet server: images, devices, signed targets, enrollment, blob service over MQTT');

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
      .option(
        '--allow-anonymous',
        'embedded broker: let clients in without credentials, with full access (a lab only)',
      )
      .option(
        '--broker-auth <mode>',
        'with --broker: dynsec (Mosquitto dynamic security: a client + role per device) or external (you manage it)',
        'external',
      )
      .option(
        '--advertise-broker <url>',
        'the broker URL enrolling devices are told (default: the one in use)',
      )
      .option('--rate-limit <bytes/s>', 'cap blob egress (0 = none)', '0')
      .option('--gather-ms <ms>', 'how long to gather fan-out interest in a blob', '150'),
  ).action(
    async (
      opts: MqttFlags & {
        listen: string;
        rateLimit: string;
        gatherMs: string;
        allowAnonymous?: boolean;
        brokerAuth: string;
        advertiseBroker?: string;
      },
    ) => {
      const c = ctx();
      const flt = assertSafeName('fleet', opts.fleet ?? c.config.mqtt.fleet);
      const external = opts.broker ?? c.config.mqtt.broker;
      if (opts.brokerAuth !== 'dynsec' && opts.brokerAuth !== 'external')
        throw invalidInput(`--broker-auth ${opts.brokerAuth}: expected dynsec or external`);
      if (external && opts.allowAnonymous)
        throw invalidInput('--allow-anonymous is for the embedded broker; configure your own broker instead');
      const [host, portStr] = splitHostPort(opts.listen);
      const server = new FleetServer({
        fleet: flt,
        db: c.db,
        store: c.store,
        stores: fleetStores(c),
        privateKey: await loadFleetPrivateKey(c.stateDir),
        log: c.log,
        mqtt: external ? mqttOptionsFrom(opts, c.config) : undefined,
        brokerAuth: opts.brokerAuth,
        listen: { host, port: Number(portStr) },
        fleetAccount: external ? undefined : await loadOrCreateFleetAccount(c.stateDir),
        allowAnonymous: opts.allowAnonymous === true,
        advertiseBroker: opts.advertiseBroker,
        blob: { rateLimit: Number(opts.rateLimit), gatherMs: Number(opts.gatherMs) },
      });
      await server.start();
      const serve: ServeFile = {
        broker: server.brokerUrl,
        fleet: flt,
        pid: process.pid,
        embedded: !external,
      };
      await writeFileAtomic(path.join(c.stateDir, SERVE_FILE), JSON.stringify(serve));
      c.log.info(
        { broker: server.brokerUrl, fleet: flt, brokerAuth: server.access.mode },
        'fleet server ready',
      );
      process.stdout.write(`fleet ${flt} serving on ${server.brokerUrl}\n`);
      await untilSignal();
      await server.stop();
    },
  );

  fleet
    .command('push <source>')
    .description(
      'import an image (OCI layout dir, oci-archive or docker-archive) into the fleet, every platform kept',
    )
    .requiredOption('--tag <name:tag>', 'name the image is deployed and pulled by')
    .action(async (source: string, opts: { tag: string }) => {
      const c = ctx();
      const row = await pushImage(c, fleetStores(c), source, opts.tag);
      process.stdout.write(`${row.name} ${row.digest} ${row.platforms} ${humanSize(row.totalSize)}\n`);
    });

  fleet
    .command('images')
    .description('list images in the fleet')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }) => {
      const rows = fleetStores(ctx()).images.list();
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

  addMqttOptions(
    fleet
      .command('deploy [file]')
      .description(
        'sign and publish (retained) a new target version for a device or a group: a target JSON or a docker-compose file',
      )
      .option('--app <name>', 'app name for a compose file (default: its name: key)')
      .option('--device <id>', 'target one device')
      .option('--group <name>', 'target a group of devices')
      .option('--clear', "with --device: clear the device's own target, so its groups' targets apply again")
      .option('--allow-unknown', 'deploy to a device id the fleet has never seen')
      .option(
        '--agent <version>',
        'the agent release the devices run (fleet release push); without a file, the current apps stay',
      )
      .option('--allow-downgrade', 'with --agent: let devices that run a newer agent go back to it')
      .option(
        '--wait',
        'wait until every device concerned converged, rejected or failed (exit 1 if any did not converge)',
      )
      .option('--timeout <duration>', 'with --wait: give up after this long (e.g. 90s, 5m)', '5m'),
  ).action(
    async (
      file: string | undefined,
      opts: MqttFlags & {
        device?: string;
        group?: string;
        app?: string;
        clear?: boolean;
        allowUnknown?: boolean;
        agent?: string;
        allowDowngrade?: boolean;
        wait?: boolean;
        timeout: string;
      },
    ) => {
      const c = ctx();
      if (Boolean(opts.device) === Boolean(opts.group))
        throw invalidInput('pass exactly one of --device ID or --group NAME');
      const scope = opts.device
        ? { kind: 'device' as const, id: assertSafeName('device id', opts.device) }
        : { kind: 'group' as const, id: assertSafeName('group', opts.group!) };
      const timeoutMs = parseDurationFlag('--timeout', opts.timeout);
      const { services } = await localFleet(c, opts);
      let row: Awaited<ReturnType<DeployService['deploy']>>;
      if (opts.clear) {
        if (scope.kind !== 'device') throw invalidInput('--clear works with --device (a device override)');
        if (file) throw invalidInput('--clear takes no target file');
        row = await services.deploy.clear(scope.id);
        process.stdout.write(
          `cleared device ${scope.id}'s own target (version ${row.version}); its groups' targets apply\n`,
        );
      } else {
        if (!file && !opts.agent) throw invalidInput('a target file is required (or --agent, or --clear)');
        if (opts.allowDowngrade && !opts.agent) throw invalidInput('--allow-downgrade goes with --agent');
        let input: DeployInput;
        if (file) {
          const text = await fsp.readFile(file, 'utf8').catch((err: unknown) => {
            throw invalidInput(`cannot read target file ${file}: ${(err as Error).message}`);
          });
          input = readDeployText(text, file, opts.app ? { app: opts.app } : {});
        } else {
          // only the agent changes: the scope's current apps and images stay
          input = services.deploy.currentInput(scope);
        }
        if (opts.agent)
          input = {
            ...input,
            agent: { version: opts.agent, ...(opts.allowDowngrade ? { allowDowngrade: true } : {}) },
          };
        row = await services.deploy.deploy(input, scope, { allowUnknown: opts.allowUnknown === true });
        process.stdout.write(`deployed ${scope.kind} ${scope.id} version ${row.version}\n`);
      }
      if (!opts.wait) return;
      const want = { ...scope, version: row.version };
      const result = await waitForDeployment(() => services.deploy.progress(want), timeoutMs);
      if (!result.ok || !result.done) {
        const bad = result.devices.filter((d) => d.state !== 'converged' && d.state !== 'superseded');
        throw new BerthError(
          result.done ? 'Conflict' : 'Timeout',
          `${formatTargetRef(want)}: ${result.done ? '' : `not done after ${opts.timeout}; `}${bad
            .map((d) => `${d.deviceId} ${d.state}${d.detail ? ` (${d.detail})` : ''}`)
            .join('; ')}`,
        );
      }
    },
  );

  fleet
    .command('state <device>')
    .description("print a device's reported state, as the fleet server stored it")
    .action((device: string) => {
      const d = fleetStores(ctx()).devices.detail(assertSafeName('device id', device));
      if (!d?.state) throw notFound(`no reported state from device ${device} (is fleet serve running?)`);
      printJson(d.state);
    });

  registerFleetRelease(fleet, ctx);
  registerFleetDevices(fleet, ctx);
  registerFleetEnroll(fleet, ctx);
  registerFleetCommand(fleet, ctx);
  registerFleetAdmin(fleet, ctx);
}

/**
 * Poll the deployment's progress until every device answered (converged, rejected, failed, superseded) or
 * the time is up; progress lines go to stderr as devices move.
 */
export async function waitForDeployment(
  progress: () => ProgressSummary | Promise<ProgressSummary>,
  timeoutMs: number,
  out: NodeJS.WritableStream = process.stderr,
): Promise<ProgressSummary> {
  const until = Date.now() + timeoutMs;
  const told = new Map<string, string>();
  for (;;) {
    const p = await progress();
    for (const d of p.devices) {
      const line = `${d.deviceId}: ${d.state}${d.detail ? ` (${d.detail})` : ''}${d.online ? '' : ' [offline]'}`;
      if (told.get(d.deviceId) === line) continue;
      told.set(d.deviceId, line);
      out.write(`${line}\n`);
    }
    if (p.done || Date.now() >= until) {
      out.write(
        `${p.converged}/${p.total} converged, ${p.failed} rejected or failed, ${p.pending} pending\n`,
      );
      return p;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function splitHostPort(s: string): [string, string] {
  const i = s.lastIndexOf(':');
  if (i <= 0 || !/^\d+$/.test(s.slice(i + 1))) throw invalidInput(`--listen ${s}: expected host:port`);
  return [s.slice(0, i), s.slice(i + 1)];
}
