import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import type { Deployment } from '../fleet/api/schemas.js';
import { loadOrCreateFleetAccount } from '../fleet/fleet-account.js';
import { keygen, loadFleetPrivateKey } from '../fleet/keys.js';
import { FleetServer } from '../fleet/server.js';
import { writeFileAtomic } from '../lib/atomic.js';
import { invalidInput, notFound } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import { BUILD } from '../version.js';
import type { CliContext } from './context.js';
import { parseDurationFlag } from './duration.js';
import { registerFleetAdmin } from './fleet-admin.js';
import { addClientOptions, type ClientFlags, openFleetClient } from './fleet-client.js';
import { registerFleetCommand } from './fleet-command.js';
import { followDeployment, registerFleetDeployments } from './fleet-deployments.js';
import { registerFleetDevices } from './fleet-devices.js';
import { registerFleetEnroll } from './fleet-enroll.js';
import { SERVE_FILE, type ServeFile } from './fleet-link.js';
import { fleetStores } from './fleet-local.js';
import { registerFleetRelease } from './fleet-release.js';
import { registerFleetRollout } from './fleet-rollout.js';
import {
  addMqttOptions,
  connectTimeoutMs,
  type MqttFlags,
  mqttOptionsFrom,
  untilSignal,
} from './mqtt-options.js';
import { columnsOf, FORMAT_HELP, humanSize, printJson, printListing } from './output.js';
import { ProgressBar } from './progress.js';

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
      .option('--rate-limit <bytes/s>', 'cap blob egress (0 = none), shared fairly between devices', '0')
      .option('--gather-ms <ms>', 'how long to gather fan-out interest in a blob', '150')
      .option(
        '--pull-policy <targets|any>',
        'which images a device may pull: what its targets name (targets), or every image of the fleet (any)',
        'targets',
      )
      .option('--http <host:port>', 'the management API (off: none)', '127.0.0.1:8080')
      .option('--tls-cert <file>', 'serve the API over HTTPS with this certificate chain (PEM)')
      .option('--tls-key <file>', 'the private key (PEM) of --tls-cert')
      .option('--max-upload <bytes>', 'largest image upload the API accepts', String(4 * 1024 * 1024 * 1024)),
  ).action(
    async (
      opts: MqttFlags & {
        listen: string;
        rateLimit: string;
        gatherMs: string;
        pullPolicy: string;
        allowAnonymous?: boolean;
        brokerAuth: string;
        advertiseBroker?: string;
        http: string;
        tlsCert?: string;
        tlsKey?: string;
        maxUpload: string;
      },
    ) => {
      const c = ctx();
      const flt = assertSafeName('fleet', opts.fleet ?? c.config.mqtt.fleet);
      const external = opts.broker ?? c.config.mqtt.broker;
      if (opts.brokerAuth !== 'dynsec' && opts.brokerAuth !== 'external')
        throw invalidInput(`--broker-auth ${opts.brokerAuth}: expected dynsec or external`);
      if (opts.pullPolicy !== 'targets' && opts.pullPolicy !== 'any')
        throw invalidInput(`--pull-policy ${opts.pullPolicy}: expected targets or any`);
      if (external && opts.allowAnonymous)
        throw invalidInput('--allow-anonymous is for the embedded broker; configure your own broker instead');
      const [host, portStr] = splitHostPort('--listen', opts.listen);
      const http = opts.http === 'off' ? undefined : splitHostPort('--http', opts.http);
      if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey))
        throw invalidInput('--tls-cert and --tls-key go together');
      const tls =
        opts.tlsCert && opts.tlsKey
          ? { cert: await readPem('--tls-cert', opts.tlsCert), key: await readPem('--tls-key', opts.tlsKey) }
          : undefined;
      const maxUpload = Number(opts.maxUpload);
      if (!(Number.isInteger(maxUpload) && maxUpload > 0))
        throw invalidInput(`--max-upload ${opts.maxUpload}: bytes`);
      const privateKey = await loadFleetPrivateKey(c.stateDir);
      const server = new FleetServer({
        fleet: flt,
        db: c.db,
        store: c.store,
        stores: fleetStores(c),
        privateKey,
        log: c.log,
        mqtt: external ? mqttOptionsFrom(opts, c.config) : undefined,
        brokerAuth: opts.brokerAuth,
        listen: { host, port: Number(portStr) },
        fleetAccount: external ? undefined : await loadOrCreateFleetAccount(c.stateDir),
        allowAnonymous: opts.allowAnonymous === true,
        advertiseBroker: opts.advertiseBroker,
        blob: { rateLimit: Number(opts.rateLimit), gatherMs: Number(opts.gatherMs) },
        pullPolicy: opts.pullPolicy,
      });
      // An external broker that does not answer: Unavailable after --connect-timeout (exit 1).
      await server.start({ connectTimeoutMs: connectTimeoutMs(opts) });
      let api: Awaited<ReturnType<typeof import('../fleet/api/index.js').serveFleetApi>> | undefined;
      try {
        if (http) {
          // the HTTP side (hono, routes, schemas) loads only here
          const { serveFleetApi } = await import('../fleet/api/index.js');
          api = await serveFleetApi({
            served: {
              fleet: flt,
              stores: server.stores,
              services: server.services,
              bus: server.bus,
              conn: server.conn,
            },
            privateKey,
            content: { store: c.store, db: c.db },
            log: c.log,
            version: BUILD.version,
            listen: { host: http[0], port: Number(http[1]), tls },
            maxUploadBytes: maxUpload,
          });
        }
      } catch (err) {
        await server.stop();
        throw err;
      }
      const serve: ServeFile = {
        broker: server.brokerUrl,
        fleet: flt,
        pid: process.pid,
        embedded: !external,
        ...(api ? { api: api.server.url } : {}),
      };
      await writeFileAtomic(path.join(c.stateDir, SERVE_FILE), JSON.stringify(serve), 0o600);
      c.log.info(
        { broker: server.brokerUrl, api: api?.server.url, fleet: flt, brokerAuth: server.access.mode },
        'fleet server ready',
      );
      process.stdout.write(
        `fleet ${flt} serving on ${server.brokerUrl}${api ? `; API on ${api.server.url}/api/v1` : ''}\n`,
      );
      if (api?.setupToken)
        process.stdout.write(
          `no users yet: create the first admin with \`berth fleet user add <name> --role admin\` here, or\n` +
            `  POST ${api.server.url}/api/v1/setup {"token": "${api.setupToken}", "name": …, "password": …} (one use)\n`,
        );
      await untilSignal();
      await api?.server.close();
      await server.stop();
    },
  );

  addClientOptions(
    fleet
      .command('push <source>')
      .description(
        'import an image into the fleet, every platform kept: an oci-archive or docker-archive (an OCI layout dir on the server)',
      )
      .requiredOption('--tag <name:tag>', 'name the image is deployed and pulled by'),
  ).action(async (source: string, opts: ClientFlags & { tag: string }) => {
    const client = await openFleetClient(ctx(), opts);
    const bar = new ProgressBar(`push ${opts.tag}`);
    const img = await client.pushImage(source, opts.tag, (n, total) => bar.update(n, total));
    bar.finish();
    process.stdout.write(
      `${img.name} ${img.digest} ${img.platforms.join(',')} ${humanSize(img.totalSize)}\n`,
    );
  });

  addClientOptions(
    fleet
      .command('images')
      .description('list images in the fleet')
      .option('--format <format>', FORMAT_HELP)
      .option('--json', 'print JSON (same as --format json)'),
  ).action(async (opts: ClientFlags & { json?: boolean; format?: string }) => {
    const rows = await (await openFleetClient(ctx(), opts)).images();
    printListing(
      rows.map((r) => ({
        name: r.name,
        digest: r.digest.slice(0, 19),
        platforms: r.platforms.join(','),
        size: humanSize(r.totalSize),
        pushed: r.pushedAt,
      })),
      columnsOf('name', 'digest', 'platforms', 'size', 'pushed'),
      opts,
      rows,
    );
  });

  addClientOptions(
    fleet
      .command('image-rm <name>')
      .description('forget an image of the fleet (refused while a current deployment pins it)'),
  ).action(async (name: string, opts: ClientFlags) => {
    await (await openFleetClient(ctx(), opts)).deleteImage(name);
    process.stdout.write(`image ${name} removed from the fleet\n`);
  });

  addClientOptions(
    addMqttOptions(
      fleet
        .command('deploy [file]')
        .description(
          'sign and publish (retained) a new target version for a device (an override) or a group (a one-phase rollout): a target JSON or a docker-compose file',
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
          'wait until every device concerned converged, rejected or failed (exit 1 if any did not converge); a group deploy: until its rollout ends',
        )
        .option('--timeout <duration>', 'with --wait: give up after this long (e.g. 90s, 5m)', '5m')
        .option('--dry-run', 'validate (schema, images, size) without publishing'),
    ),
  ).action(
    async (
      file: string | undefined,
      opts: MqttFlags &
        ClientFlags & {
          device?: string;
          group?: string;
          app?: string;
          clear?: boolean;
          allowUnknown?: boolean;
          agent?: string;
          allowDowngrade?: boolean;
          wait?: boolean;
          timeout: string;
          dryRun?: boolean;
        },
    ) => {
      if (Boolean(opts.device) === Boolean(opts.group))
        throw invalidInput('pass exactly one of --device ID or --group NAME');
      const scope = opts.device
        ? { kind: 'device' as const, id: assertSafeName('device id', opts.device) }
        : { kind: 'group' as const, id: assertSafeName('group', opts.group!) };
      const timeoutMs = parseDurationFlag('--timeout', opts.timeout);
      const client = await openFleetClient(ctx(), opts);
      let dep: Deployment;
      if (opts.clear) {
        if (scope.kind !== 'device') throw invalidInput('--clear works with --device (a device override)');
        if (file) throw invalidInput('--clear takes no target file');
        dep = await client.clearOverride(scope.id);
        process.stdout.write(
          `cleared device ${scope.id}'s own target (version ${dep.version}); its groups' targets apply\n`,
        );
      } else {
        if (!file && !opts.agent) throw invalidInput('a target file is required (or --agent, or --clear)');
        if (opts.allowDowngrade && !opts.agent) throw invalidInput('--allow-downgrade goes with --agent');
        const text = file
          ? await fsp.readFile(file, 'utf8').catch((err: unknown) => {
              throw invalidInput(`cannot read target file ${file}: ${(err as Error).message}`);
            })
          : undefined;
        // without a file only the agent changes: the scope's current apps and images stay
        const req = {
          [scope.kind]: scope.id,
          ...(file && text !== undefined ? { file: { name: path.basename(file), text } } : {}),
          ...(opts.agent
            ? { agent: { version: opts.agent, ...(opts.allowDowngrade ? { allowDowngrade: true } : {}) } }
            : {}),
          ...(opts.app ? { app: opts.app } : {}),
          ...(opts.allowUnknown ? { allowUnknown: true } : {}),
        };
        if (opts.dryRun) {
          const v = await client.validateDeployment(req);
          process.stdout.write(
            `valid for ${scope.kind} ${scope.id}: apps ${v.apps.join(', ')}; images ${v.images.map((i) => `${i.name}@${i.digest.slice(7, 19)}`).join(', ')}; ${v.bytes} bytes signed\n`,
          );
          return;
        }
        dep = await client.deploy(req);
        process.stdout.write(
          `deployed ${scope.kind} ${scope.id} version ${dep.version}${dep.rolloutId !== undefined ? ` as rollout ${dep.rolloutId} (berth fleet rollout show ${dep.rolloutId})` : ''}\n`,
        );
      }
      if (opts.wait) await followDeployment(client, dep, timeoutMs, opts.timeout);
    },
  );

  addClientOptions(
    fleet
      .command('state <device>')
      .description("print a device's reported state, as the fleet server stored it"),
  ).action(async (device: string, opts: ClientFlags) => {
    const d = await (await openFleetClient(ctx(), opts)).device(assertSafeName('device id', device));
    if (!d.state) throw notFound(`no reported state from device ${device} yet (is fleet serve running?)`);
    printJson(d.state);
  });

  registerFleetDeployments(fleet, ctx);
  registerFleetRelease(fleet, ctx);
  registerFleetDevices(fleet, ctx);
  registerFleetEnroll(fleet, ctx);
  registerFleetRollout(fleet, ctx);
  registerFleetCommand(fleet, ctx);
  registerFleetAdmin(fleet, ctx);
}

function splitHostPort(flag: string, s: string): [string, string] {
  const i = s.lastIndexOf(':');
  if (i <= 0 || !/^\d+$/.test(s.slice(i + 1))) throw invalidInput(`${flag} ${s}: expected host:port`);
  return [s.slice(0, i).replace(/^\[(.*)\]$/, '$1'), s.slice(i + 1)];
}

async function readPem(flag: string, file: string): Promise<Buffer> {
  try {
    return await fsp.readFile(file);
  } catch (err) {
    throw invalidInput(`${flag} ${file}: ${(err as Error).message}`);
  }
}
