import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Command } from 'commander';
import { startDeviceAgent } from '../agent/adapters/device-agent.js';
import { agentSocketPath } from '../agent/api-client.js';
import { AgentConnection } from '../agent/connection.js';
import { type Enrollment, enroll, readEnrollment } from '../agent/enroll.js';
import { PageOut } from '../agent/memory.js';
import { AgentDir } from '../agent/self-update/files.js';
import { inProcessLaunch, type Launched, launchedFromEnv } from '../agent/self-update/launched.js';
import { type AgentExit, Launcher, processExecve } from '../agent/self-update/launcher.js';
import { agentArch } from '../core/self-update.js';
import { databaseSchemaVersion } from '../db/database.js';
import { faultAtStart } from '../faults.js';
import { systemClock } from '../lib/clock.js';
import { invalidInput, notFound } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import { autoRemoveCommand, selfLauncherCommand } from '../lib/self.js';
import { formatPlatform, hostPlatform, parsePlatform } from '../oci/platform.js';
import { StorageHelper } from '../snapshots/storage-helper.js';
import { resolvePublicKey } from '../transport/signing.js';
import { BUILD } from '../version.js';
import { registerAgentStatus } from './agent-status.js';
import type { CliContext } from './context.js';
import { invocation } from './invocation.js';
import { addMqttOptions, type MqttFlags, mqttOptionsFrom, untilSignal } from './mqtt-options.js';
import { ProgressBar } from './progress.js';

interface AgentFlags extends MqttFlags {
  deviceId?: string;
  group?: string[];
  fleetKey?: string;
  offline?: boolean;
  enroll?: string;
  token?: string;
  tokenFile?: string;
}

/**
 * `berth agent`: the launcher first (src/agent/self-update/launcher.ts: which version runs, trials and
 * rollbacks of self-updates), then the full device agent (src/agent/adapters/device-agent.ts). SIGTERM
 * or SIGINT stops the agent; the apps' containers keep running under their monitors.
 *
 * Enrolled (`--enroll <server-url> --token <t>`, once; see src/agent/enroll.ts), the agent takes broker,
 * fleet, device id, credentials, groups and fleet key from <state-dir>/enrollment.json; flags still win.
 */
export function registerAgent(program: Command, ctx: () => CliContext): void {
  const agent = addMqttOptions(
    program
      .command('agent')
      .description(
        'run the device agent: fleet connection, reconciler, health, reporting, local API on <state-dir>/berth.sock',
      )
      .option(
        '--device-id <id>',
        'this device (config mqtt.deviceId; default: enrollment, else the hostname)',
      )
      .option('--group <name...>', 'groups whose targets this device follows, in priority order')
      .option('--fleet-key <file|pem>', 'fleet public key (config mqtt.fleetPublicKey)')
      .option('--offline', 'no fleet connection: run the last applied target from the state dir')
      .option(
        '--enroll <server-url>',
        'enroll at this fleet server first (once: skipped when already enrolled)',
      )
      .option('--token <token>', 'the enrollment token (prefer --token-file)')
      .option('--token-file <file>', 'a file holding the enrollment token'),
    { waits: true },
  ).action(async (opts: AgentFlags) => {
    const c = ctx();
    const configFile = program.opts<{ config?: string }>().config;
    const launched = launchedFromEnv(process.env);
    const arch = agentArch(process.arch);
    const dir = arch ? new AgentDir(c.stateDir, arch) : undefined;
    if (launched) {
      // A launcher chose this version: run it.
      try {
        faultAtStart();
        if (launched.mode === 'exec') await dir?.clearExecAttempts();
        const r = await runAgent(c, opts, launched, configFile);
        if (r.restart) process.exitCode = launched.restart();
      } finally {
        launched.close();
      }
      return;
    }
    const self = selfLauncherCommand();
    if (!dir || !self) {
      await runAgent(c, opts, inProcessLaunch(), configFile);
      return;
    }
    const launcher = new Launcher({
      dir,
      selfVersion: BUILD.version,
      selfArgv: [...self, ...invocation.argv],
      agentArgs: [...invocation.argv],
      log: c.log,
      trialDeadlineMs: c.config.agent.trialDeadlineMs,
      trialBoots: c.config.agent.trialBoots,
      databaseSchema: async (file) => databaseSchemaVersion(file, c.native.sqliteBinding()),
      execve: processExecve(),
      runSelf: async () => {
        // Each run in this process gets its own database handle, connection and agent.
        const fresh = c.fresh();
        try {
          return await runAgent(fresh, opts, inProcessLaunch(), configFile);
        } finally {
          await fresh.close();
        }
      },
    });
    process.exitCode = await launcher.run();
  });
  registerAgentStatus(agent, ctx);
}

/** The device agent until a signal, the launcher going away, or a switch to a new version (restart). */
async function runAgent(
  c: CliContext,
  opts: AgentFlags,
  launched: Launched,
  configFile: string | undefined,
): Promise<AgentExit> {
  const enrollment = await enrollIfAsked(c, opts);
  const flags = withEnrollment(opts, enrollment);
  const hasFleet = !opts.offline && Boolean(flags.broker ?? c.config.mqtt.broker);
  const connection = hasFleet ? await buildAgentConnection(c, flags, true) : undefined;
  const deviceId = assertSafeName('device id', flags.deviceId ?? c.config.mqtt.deviceId ?? hostname());
  const keyText = flags.fleetKey ?? c.config.mqtt.fleetPublicKey;
  let restart: () => void = () => undefined;
  const restarting = new Promise<'restart'>((resolve) => {
    restart = () => resolve('restart');
  });
  const gone = new Promise<'gone'>((resolve) => launched.onLauncherGone(() => resolve('gone')));
  const device = await startDeviceAgent({
    db: c.db,
    store: c.store,
    config: c.config,
    stateDir: c.stateDir,
    log: c.log,
    native: c.native,
    connection,
    fleet: assertSafeName('fleet', flags.fleet ?? c.config.mqtt.fleet),
    deviceId,
    autoRemoveCommand: autoRemoveCommand(c.stateDir, configFile),
    launched,
    selfUpdate:
      connection && keyText
        ? { publicKey: await resolvePublicKey(keyText), running: BUILD.version, restart }
        : undefined,
  });
  const pageOut = new PageOut({
    afterMs: c.config.agent.pageOutAfterMs,
    clock: systemClock,
    run: () => new StorageHelper(c.native).pageOut(process.pid),
    log: c.log,
  });
  device.agent.onReconciled((out) => pageOut.outcome(out));
  pageOut.start();
  c.log.info(
    {
      deviceId,
      fleet: hasFleet,
      socket: agentSocketPath(c.stateDir),
      version: BUILD.version,
      mode: launched.mode,
    },
    'agent running',
  );
  const why = await untilSignal([restarting, gone]);
  if (why === 'gone') c.log.warn('the launcher is gone; stopping');
  // containers keep running: their monitors own them; the next agent picks them up
  pageOut.stop();
  await device.stop();
  launched.close();
  return why === 'restart' ? { restart: true } : { restart: false, code: 0 };
}

async function enrollIfAsked(c: CliContext, opts: AgentFlags): Promise<Enrollment | undefined> {
  const have = await readEnrollment(c.stateDir);
  if (!opts.enroll) {
    if (opts.token || opts.tokenFile) throw invalidInput('--token needs --enroll <server-url>');
    return have;
  }
  if (have) {
    c.log.info(
      { deviceId: have.deviceId, fleet: have.fleet, server: have.server },
      'already enrolled; --enroll ignored',
    );
    return have;
  }
  let token = opts.token;
  if (opts.tokenFile) {
    try {
      token = readFileSync(opts.tokenFile, 'utf8').trim();
    } catch {
      throw notFound(`token file ${opts.tokenFile} not found or unreadable`);
    }
  }
  if (!token) throw invalidInput('--enroll needs --token or --token-file');
  const deviceId = assertSafeName('device id', opts.deviceId ?? c.config.mqtt.deviceId ?? hostname());
  const ca = opts.ca ?? c.config.mqtt.ca;
  let caPem: Buffer | undefined;
  if (ca) {
    try {
      caPem = readFileSync(ca);
    } catch {
      throw notFound(`CA file ${ca} not found or unreadable`);
    }
  }
  const e = await enroll(c.stateDir, {
    server: opts.enroll,
    token,
    deviceId,
    platform: formatPlatform(c.config.platform ? parsePlatform(c.config.platform) : hostPlatform()),
    agentVersion: BUILD.version,
    ca: caPem,
  });
  c.log.info({ deviceId: e.deviceId, fleet: e.fleet, broker: e.broker, groups: e.groups }, 'enrolled');
  return e;
}

/** Flags over the enrollment (which is over the config file). */
export function withEnrollment<
  T extends MqttFlags & { deviceId?: string; group?: string[]; fleetKey?: string },
>(opts: T, e: Enrollment | undefined): T {
  if (!e) return opts;
  const creds = opts.username === undefined && e.username !== undefined;
  return {
    ...opts,
    broker: opts.broker ?? e.broker,
    fleet: opts.fleet ?? e.fleet,
    deviceId: opts.deviceId ?? e.deviceId,
    group: opts.group ?? e.groups,
    fleetKey: opts.fleetKey ?? e.fleetPublicKey,
    ...(creds ? { username: e.username, password: opts.password ?? e.password } : {}),
  };
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
