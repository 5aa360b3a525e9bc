/**
 * The device agent: the device stack (device-stack.ts: snapshotter, images, runtime, ContainerManager —
 * the same wiring the docker-like commands use), the fleet connection (optional) and the Agent on top.
 * `berth agent` and the end-to-end tests build the agent here, so both run the same wiring.
 *
 * Targets: the fleet signs a target per scope (the device, each group), versioned per scope
 * (transport_targets). The agent applies one (`chooseTarget`): the device's own target when it has one that
 * is not cleared, else the target of the first of its groups — in the order it follows them — that has one;
 * the others are fallbacks, never merged (the same rule as the fleet's view, src/fleet/view.ts). The chosen
 * target keeps its origin (scope + the operator's version), which reports and events show; the agent gives
 * it its own increasing version whenever the origin changes, so clearing an override — which may go back
 * to a lower group version — is still a new target for the reconciler. When nothing applies, the device
 * keeps running what it runs.
 *
 * A target the agent refuses (signature, schema, topic, replay — in the connection, or the agent's target
 * schema here) is reported as a `target-rejected` event, so the fleet shows it and `deploy --wait` fails.
 */
import type { KeyObject } from 'node:crypto';
import * as path from 'node:path';
import { CONFIG_FORMAT } from '../../config/format.js';
import type { Config } from '../../config/schema.js';
import { ImageRepo } from '../../content/images.js';
import type { ContentStore } from '../../content/store.js';
import { agentArch, type UpdateStatus } from '../../core/self-update.js';
import { parseTarget, sameOrigin, type TargetOrigin } from '../../core/target.js';
import type { Db } from '../../db/database.js';
import { FAULT_NEVER_CONNECT } from '../../faults.js';
import { errorMessage } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { developmentParts, type NativeParts } from '../../lib/native.js';
import { secureStateDir } from '../../lib/state-dir.js';
import type { ContainerManager } from '../../runtime/containers.js';
import { remountNodev } from '../../snapshots/mount.js';
import type { Snapshotter } from '../../snapshots/snapshotter.js';
import type { SignedTarget, TargetAgent } from '../../transport/messages.js';
import { BUILD } from '../../version.js';
import { Agent, type AgentOptions } from '../agent.js';
import type { AgentConnection } from '../connection.js';
import { HostUpdateLocks, lockRootFor } from '../locks.js';
import { systemClock, type Transport } from '../ports.js';
import type { AgentEvent } from '../reconciler.js';
import { AgentDir } from '../self-update/files.js';
import type { Launched } from '../self-update/launched.js';
import { SelfUpdater } from '../self-update/updater.js';
import { HostVolumes } from '../volumes.js';
import { DeviceStack } from './device-stack.js';
import { RuntimeEngine } from './engine.js';
import type { AgentImages } from './images.js';
import { RecordedNetworks } from './networks.js';
import { MqttAgentTransport, offlineTransport } from './transport.js';

/** The agent's options from the config's `agent` section (tests may still override them). */
export function agentOptionsFromConfig(a: Config['agent']): NonNullable<DeviceAgentOptions['agent']> {
  return {
    reconciler: {
      healthWindowMs: a.healthWindowMs,
      minDelayMs: a.retryMinMs,
      maxDelayMs: a.retryMaxMs,
      idleIntervalMs: a.idleIntervalMs,
      reserveBytes: a.diskReserveBytes,
    },
    metricsIntervalMs: a.metricsIntervalMs,
    outbox: { maxBytes: a.outboxMaxBytes, maxAgeMs: a.outboxMaxAgeMs },
  };
}

export interface DeviceAgentOptions {
  db: Db;
  store: ContentStore;
  config: Config;
  stateDir: string;
  log: Logger;
  /** where the native programs run from (default: native/build, for tests; `berth agent` passes its own) */
  native?: NativeParts;
  /** the fleet link; undefined runs the agent from SQLite alone (no fleet configured) */
  connection?: AgentConnection | undefined;
  fleet?: string;
  deviceId?: string;
  /** argv the monitor runs after an auto-remove (`run -d --rm`) container exits: `berth rm -f <id>` */
  autoRemoveCommand?: ((id: string) => string[]) | undefined;
  /** passed to Agent (tests shorten intervals) */
  agent?: Partial<Omit<AgentOptions, 'db' | 'ports' | 'transport' | 'log' | 'stateDir'>>;
  /** how the launcher started this agent (a trial run reports milestones and applies no new target) */
  launched?: Launched | undefined;
  /** the agent's own updates over the fleet (needs `connection`) */
  selfUpdate?: { publicKey: KeyObject; running: string; restart: () => void } | undefined;
}

export interface DeviceAgent {
  agent: Agent;
  images: AgentImages;
  engine: RuntimeEngine;
  manager: ContainerManager;
  snapshotter: Snapshotter;
  /** stop the agent and the connection; containers keep running (their monitors own them) */
  stop(): Promise<void>;
  /** the self-update, when the agent has a fleet link and is not on trial */
  updater: SelfUpdater | undefined;
}

/**
 * The one target to apply, from the latest signed target per scope (see the file comment), with the agent
 * release it names (docs/self-update.md).
 */
export function chooseTarget(
  signed: readonly SignedTarget[],
  groups: readonly string[],
): { origin: TargetOrigin; apps: unknown; agent: TargetAgent | undefined } | undefined {
  const pick = (kind: 'device' | 'group', id?: string) =>
    signed.find((s) => s.target.scope.kind === kind && (id === undefined || s.target.scope.id === id));
  const device = pick('device');
  const chosen =
    device && !device.target.clear
      ? device
      : groups.map((g) => pick('group', g)).find((s) => s !== undefined && !s.target.clear);
  if (!chosen) return undefined;
  const { scope, version, apps, agent } = chosen.target;
  return { origin: { kind: scope.kind, id: scope.id, version }, apps, agent };
}

export async function startDeviceAgent(o: DeviceAgentOptions): Promise<DeviceAgent> {
  // a state dir an older berth left open to other users is locked down before anything runs
  secureStateDir(o.stateDir, o.log);
  const native = o.native ?? developmentParts;
  const stack = new DeviceStack({
    db: o.db,
    store: o.store,
    config: o.config,
    stateDir: o.stateDir,
    log: o.log,
    native,
    autoRemoveCommand: o.autoRemoveCommand,
    puller: o.connection,
  });
  // the agent fails at start, not at its first container, when a native part is missing
  native.path('monitor');
  const { snapshotter, images } = await stack.open();
  const manager = stack.manager;
  const recovered = await manager.recover();
  const orphans = await images.sweepOrphans(
    new Set((await manager.list({ all: true })).map((c) => c.id)),
    path.join(o.stateDir, 'containers'),
  );
  // container rootfs mounts an older berth made without nodev get it now (src/snapshots/mount.ts)
  const hardened = await remountNodev(path.join(o.stateDir, 'containers')).catch((err: unknown) => {
    o.log.warn({ err: errorMessage(err) }, 'container rootfs mounts not remounted nodev');
    return [];
  });
  if (hardened.length > 0) o.log.warn({ mounts: hardened }, 'container rootfs mounts remounted nodev');
  o.log.info({ ...recovered, orphanSnapshots: orphans.length }, 'containers recovered');
  const engine = new RuntimeEngine(manager);
  const transport: Transport =
    o.connection && o.fleet && o.deviceId
      ? new MqttAgentTransport(o.connection.conn, o.fleet, o.deviceId)
      : offlineTransport;
  const fromConfig = agentOptionsFromConfig(o.config.agent);
  const conn = o.connection;
  const arch = agentArch(process.arch);
  const onTrial = o.launched?.trialId !== undefined;
  const agentDir = arch ? new AgentDir(o.stateDir, arch) : undefined;
  const recorded = agentDir ? await agentDir.readStatus() : undefined;
  let updater: SelfUpdater | undefined;
  const agent = new Agent({
    ...fromConfig,
    ...o.agent,
    reconciler: { ...fromConfig.reconciler, ...o.agent?.reconciler },
    outbox: { ...fromConfig.outbox, ...o.agent?.outbox },
    db: o.db,
    ports: {
      engine,
      images,
      volumes: new HostVolumes(path.join(o.stateDir, 'volumes')),
      networks: new RecordedNetworks(path.join(o.stateDir, 'networks')),
      locks: new HostUpdateLocks(lockRootFor(o.config.runDir, o.stateDir)),
    },
    transport,
    log: o.log,
    stateDir: o.stateDir,
    agentReport: () => ({
      version: o.selfUpdate?.running ?? BUILD.version,
      update: updater?.status ?? recorded?.update,
    }),
    catalog: {
      list: () => new ImageRepo(o.db, o.store).list(),
      inspect: (ref) => new ImageRepo(o.db, o.store).describe(ref),
    },
  });
  if (conn && o.selfUpdate && agentDir && arch && o.fleet && !onTrial) {
    const self = o.selfUpdate;
    updater = new SelfUpdater({
      dir: agentDir,
      arch,
      running: self.running,
      fleet: o.fleet,
      publicKey: self.publicKey,
      fetchBlob: (desc, progress) => conn.fetcher.fetchBlob(desc, progress),
      online: () => conn.conn.connected,
      store: o.store,
      db: o.db,
      log: o.log,
      clock: systemClock,
      mutex: agent.mutex,
      configFormat: CONFIG_FORMAT,
      reserveBytes: o.config.agent.diskReserveBytes,
      trialDeadlineMs: o.config.agent.trialDeadlineMs,
      settled: () => agent.settled(),
      onUpdate: (u, changed) => {
        if (!changed) return agent.reportSoon();
        agent.report({ ...updateEvent(u), at: Date.now() });
        conn.refreshStatus();
      },
      restart: self.restart,
    });
    await updater.load();
  }
  conn?.setAgentUpdate(() => {
    const u = updater?.status ?? recorded?.update;
    return u
      ? { version: u.version, phase: u.phase, ...(u.reason ? { reason: u.reason.slice(0, 1024) } : {}) }
      : undefined;
  });

  let lastRejection = '';
  const reportRejection = (e: AgentEvent & { type: 'target-rejected' }) => {
    const key = JSON.stringify(e);
    if (key === lastRejection) return; // a retained bad target comes back on every reconnect: told once
    lastRejection = key;
    agent.report({ ...e, at: Date.now() });
  };
  const applyReceived = () => {
    if (!conn) return;
    // A version on trial runs the target it was switched under; new targets wait for its commit.
    if (onTrial) return;
    const signed = conn.receivedTargets();
    for (const s of signed) for (const img of s.target.images) images.pin(img.name, img.digest);
    const chosen = chooseTarget(signed, conn.groups);
    if (!chosen) return;
    updater?.setDesired(chosen.agent, `${chosen.origin.kind}/${chosen.origin.id}@${chosen.origin.version}`);
    const store = agent.store;
    const held = [store.getTarget('pending'), store.getTarget('current')];
    if (held.some((h) => sameOrigin(h?.target.origin, chosen.origin))) {
      // The fleet announced the target this device is already applying (a re-deploy, a retained copy after
      // a reconnect): whatever the last try failed on may be fixed on the fleet's side, so try now.
      if (agent.reconciler.retry) void agent.reconciler.retryNow('the fleet announced the target again');
      return;
    }
    const label = `${chosen.origin.kind} ${chosen.origin.id} version ${chosen.origin.version}`;
    try {
      const target = parseTarget(
        { version: store.nextVersion(), origin: chosen.origin, apps: chosen.apps },
        `target of ${label}`,
      );
      if (agent.receiveTarget(target)) o.log.info({ origin: chosen.origin }, 'target applied');
    } catch (err) {
      o.log.error({ origin: chosen.origin, err: errorMessage(err) }, 'target refused');
      const { kind, id, version } = chosen.origin;
      if (kind !== 'local')
        reportRejection({ type: 'target-rejected', scope: { kind, id }, version, reason: errorMessage(err) });
    }
  };
  applyReceived();
  await agent.start();
  const launched = o.launched;
  if (launched?.trialId) {
    // The trial's milestones (src/core/self-update.ts): state open, fleet connected, a reconcile done.
    launched.milestone('state');
    agent.onReconciled((out) => {
      if (out.status === 'converged' || out.status === 'waiting') launched.milestone('reconciled');
    });
    conn?.conn.once('connect', () => launched.milestone('connected'));
    if (agent.reconciler.lastOutcome) void agent.reconciler.trigger();
  }
  if (agentDir) await reportRecordedUpdate(agent, agentDir, o.log);
  if (updater) {
    const u = updater;
    agent.onReconciled(() => u.poke());
    conn?.conn.on('connect', () => u.poke());
  }
  if (conn) {
    conn.on('target', () => applyReceived());
    conn.on('rejected', (reason, _topic, claimed) => {
      if (claimed.what !== 'target') return; // a refused command gets no answer at all (docs/protocol.md)
      reportRejection({
        type: 'target-rejected',
        ...(claimed.scope ? { scope: claimed.scope } : {}),
        ...(claimed.version !== undefined ? { version: claimed.version } : {}),
        reason,
      });
    });
    conn.on('command', (cmd) => {
      void (async () => {
        const res = await agent.command({ ...cmd.body, id: cmd.id });
        await conn.publishResult(
          res.ok
            ? { id: cmd.id, kind: res.kind, ok: true, result: res.result }
            : { id: cmd.id, kind: res.kind, ok: false, error: res.error },
        );
      })().catch((err) => o.log.warn({ id: cmd.id, err: errorMessage(err) }, 'command result not sent'));
    });
    if (!FAULT_NEVER_CONNECT) await conn.start(false);
  }
  return {
    updater,
    agent,
    images,
    engine,
    manager,
    snapshotter,
    stop: async () => {
      await updater?.stop();
      const stopping = agent.stop(); // no new run starts from here on
      // A pull in flight waits for its broker as long as it takes; stopping must not.
      conn?.fetcher.stop();
      await stopping;
      if (conn) await conn.stop().catch(() => undefined);
      await stack.close();
    },
  };
}

/**
 * An update outcome the launcher recorded (trial started, committed, rolled back) goes out once as an
 * event, from whichever agent runs next; `told` in status.json remembers it was sent.
 */
async function reportRecordedUpdate(agent: Agent, dir: AgentDir, log: Logger): Promise<void> {
  const st = await dir.readStatus();
  const u = st.update;
  if (!u || !['trial', 'committed', 'rolled-back'].includes(u.phase)) return;
  const key = `${u.version}/${u.phase}/${u.at}`;
  if (st.told === key) return;
  agent.report({ ...updateEvent(u), at: Date.now() });
  await dir
    .writeStatus((s) => ({ ...s, told: key }))
    .catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'update status not written'));
}

function updateEvent(u: UpdateStatus): AgentEvent {
  return {
    type: 'agent-update',
    version: u.version,
    phase: u.phase,
    ...(u.from ? { from: u.from } : {}),
    ...(u.reason ? { reason: u.reason } : {}),
  };
}
