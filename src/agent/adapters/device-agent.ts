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
import * as path from 'node:path';
import type { Config } from '../../config/schema.js';
import { ImageRepo } from '../../content/images.js';
import type { ContentStore } from '../../content/store.js';
import { parseTarget, sameOrigin, type TargetOrigin } from '../../core/target.js';
import type { Db } from '../../db/database.js';
import { errorMessage } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { developmentParts, type NativeParts } from '../../lib/native.js';
import { secureStateDir } from '../../lib/state-dir.js';
import type { ContainerManager } from '../../runtime/containers.js';
import { remountNodev } from '../../snapshots/mount.js';
import type { Snapshotter } from '../../snapshots/snapshotter.js';
import type { SignedTarget } from '../../transport/messages.js';
import { Agent, type AgentOptions } from '../agent.js';
import type { AgentConnection } from '../connection.js';
import { HostUpdateLocks, lockRootFor } from '../locks.js';
import type { Transport } from '../ports.js';
import type { AgentEvent } from '../reconciler.js';
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
}

export interface DeviceAgent {
  agent: Agent;
  images: AgentImages;
  engine: RuntimeEngine;
  manager: ContainerManager;
  snapshotter: Snapshotter;
  /** stop the agent and the connection; containers keep running (their monitors own them) */
  stop(): Promise<void>;
}

/** The one target to apply, from the latest signed target per scope (see the file comment). */
export function chooseTarget(
  signed: readonly SignedTarget[],
  groups: readonly string[],
): { origin: TargetOrigin; apps: unknown } | undefined {
  const pick = (kind: 'device' | 'group', id?: string) =>
    signed.find((s) => s.target.scope.kind === kind && (id === undefined || s.target.scope.id === id));
  const device = pick('device');
  const chosen =
    device && !device.target.clear
      ? device
      : groups.map((g) => pick('group', g)).find((s) => s !== undefined && !s.target.clear);
  if (!chosen) return undefined;
  const { scope, version, apps } = chosen.target;
  return { origin: { kind: scope.kind, id: scope.id, version }, apps };
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
    catalog: {
      list: () => new ImageRepo(o.db, o.store).list(),
      inspect: (ref) => new ImageRepo(o.db, o.store).describe(ref),
    },
  });

  const conn = o.connection;
  let lastRejection = '';
  const reportRejection = (e: AgentEvent & { type: 'target-rejected' }) => {
    const key = JSON.stringify(e);
    if (key === lastRejection) return; // a retained bad target comes back on every reconnect: told once
    lastRejection = key;
    agent.report({ ...e, at: Date.now() });
  };
  const applyReceived = () => {
    if (!conn) return;
    const signed = conn.receivedTargets();
    for (const s of signed) for (const img of s.target.images) images.pin(img.name, img.digest);
    const chosen = chooseTarget(signed, conn.groups);
    if (!chosen) return;
    const store = agent.store;
    const held = [store.getTarget('pending'), store.getTarget('current')];
    if (held.some((h) => sameOrigin(h?.target.origin, chosen.origin))) return;
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
    await conn.start(false);
  }
  return {
    agent,
    images,
    engine,
    manager,
    snapshotter,
    stop: async () => {
      const stopping = agent.stop(); // no new run starts from here on
      // A pull in flight waits for its broker as long as it takes; stopping must not.
      conn?.fetcher.stop();
      await stopping;
      if (conn) await conn.stop().catch(() => undefined);
      await stack.close();
    },
  };
}
