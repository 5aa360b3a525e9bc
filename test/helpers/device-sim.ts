/**
 * A device simulator that speaks berth's real protocol over real MQTT, without containers: presence
 * (retained status, an `offline` last will per device when it has its own connection), device info,
 * retained reported state, events, metrics; it verifies signed targets with the fleet key exactly as the
 * agent does (src/transport/targets.ts), picks the target that applies by the agent's rule (own target,
 * else the first of its groups — chooseTarget), "applies" it after `applyMs`, reports it converged, and
 * after its health window (`windowMs`) healthy — or, for a configurable share of devices, a rollback to what
 * it ran before. A target that does
 * not verify is reported as `target-rejected`, as the agent does. Signed commands are answered (and
 * logged); a device can start with a pending reconcile retry (`retry`), which the `retry` command ends as a
 * retry that succeeded does.
 *
 *   const sim = await startSimulator({ url, fleet: 'test', count: 10_000, connections: 8, publicKey, ... });
 *   await sim.ready();          // every device's status + state handed to the broker (PUBACKed)
 *   …                           // deploy, query the fleet
 *   await sim.stop();           // offline statuses, connections closed
 *
 * Connections: `perDevice` gives each device its own (credentials, client id berth-agent-<id>, last will)
 * — realistic, and what the broker ACL tests need; else `connections` links (default 4) carry many devices
 * each, with an account allowed to publish for any device (the fleet account, or an anonymous lab broker):
 * one process then simulates 10,000 devices (bench/fleet-api.ts). Why not a connection each at that scale:
 * see the figures in bench/fleet-sim.ts.
 */
import type { KeyObject } from 'node:crypto';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { chooseTarget } from '../../src/agent/adapters/device-agent.js';
import { verifyCommand } from '../../src/transport/commands.js';
import {
  decodeJson,
  MAX_CONTROL_BYTES,
  MAX_TARGET_BYTES,
  SignedCommandSchema,
  type SignedTarget,
  SignedTargetSchema,
} from '../../src/transport/messages.js';
import type { TargetRef, WireReportedState } from '../../src/transport/reports.js';
import { keyId } from '../../src/transport/signing.js';
import { verifyTarget } from '../../src/transport/targets.js';
import { deviceTopic, parseTopic, prefix } from '../../src/transport/topics.js';

export interface SimulatorOptions {
  url: string;
  fleet: string;
  /** device ids, or `count` ids `<idPrefix>-00001`… */
  ids?: string[];
  count?: number;
  idPrefix?: string;
  /** groups each device follows (priority order), per device */
  groups?: (id: string, i: number) => string[];
  /** the fleet public key the simulated agents trust */
  publicKey: KeyObject;
  /** each device on its own connection with these credentials (undefined: no credentials) */
  perDevice?: ((id: string) => Promise<{ username?: string; password?: string }>) | undefined;
  /** shared mode: this many connections (default 4) with `account` */
  connections?: number;
  account?: { username: string; password: string } | undefined;
  protocolVersion?: 4 | 5;
  /** share of devices whose updates fail their health window (0..1; which ones is fixed by id) */
  failShare?: number;
  /** how long an update takes to "apply" (ms, default 50) */
  applyMs?: number;
  /** the health window after converging (ms, default applyMs): then healthy, or a rollback for the failing share */
  windowMs?: number;
  /** publish a metrics sample per device this often (0 = never, the default) */
  metricsMs?: number;
  platform?: string;
  /** a reconcile retry the device reports pending from the start (`target.retry`), per device */
  retry?: (id: string, i: number) => Retry | undefined;
}

type Retry = NonNullable<WireReportedState['target']['retry']>;

interface SimDevice {
  id: string;
  index: number;
  groups: string[];
  link: MqttClient;
  fails: boolean;
  /** latest verified target per scope */
  targets: Map<string, SignedTarget>;
  applied: TargetRef | null;
  previous: TargetRef | null;
  status: string | null;
  reason?: string | undefined;
  apps: WireReportedState['apps'];
  retry?: Retry | undefined;
  timer?: NodeJS.Timeout | undefined;
}

export interface Simulator {
  ids: string[];
  /** every device's presence, info and state published and acknowledged */
  ready(): Promise<void>;
  /** a device's current simulated report */
  state(id: string): WireReportedState | undefined;
  /** counters */
  stats: { targets: number; rejected: number; converged: number; rolledBack: number; commands: number };
  /** the signed commands the devices ran, in order */
  commandLog: Array<{ deviceId: string; kind: string }>;
  stop(): Promise<void>;
}

const pad = (n: number) => String(n).padStart(5, '0');

export async function startSimulator(o: SimulatorOptions): Promise<Simulator> {
  const ids = o.ids ?? Array.from({ length: o.count ?? 1 }, (_, i) => `${o.idPrefix ?? 'sim'}-${pad(i + 1)}`);
  const failShare = o.failShare ?? 0;
  const applyMs = o.applyMs ?? 50;
  const windowMs = o.windowMs ?? applyMs;
  const stats = { targets: 0, rejected: 0, converged: 0, rolledBack: 0, commands: 0 };
  const commandLog: Simulator['commandLog'] = [];
  const base = prefix(o.fleet);
  const trusted = keyId(o.publicKey);
  const devices = new Map<string, SimDevice>();
  const links: MqttClient[] = [];
  const at = () => new Date().toISOString();
  const status = (d: Pick<SimDevice, 'id' | 'groups'>, state: 'online' | 'offline') =>
    JSON.stringify({
      v: 1,
      deviceId: d.id,
      state,
      at: at(),
      platform: o.platform ?? 'linux/amd64',
      agentVersion: 'sim',
      groups: d.groups,
      keyId: trusted,
    });
  const report = (d: SimDevice): WireReportedState => ({
    schema: 1,
    target: {
      applied: d.applied,
      status: d.status,
      ...(d.reason ? { reason: d.reason } : {}),
      previous: d.previous,
      ...(d.retry ? { retry: d.retry } : {}),
    },
    apps: d.apps,
  });
  // after stop() a device still applying (a timer already running) says nothing more: its link is closing
  let stopped = false;
  const pub = (
    d: SimDevice,
    ch: 'state' | 'info' | 'event' | 'metrics' | 'status' | 'result',
    body: string,
    retain = false,
  ) =>
    stopped && ch !== 'status'
      ? Promise.resolve(undefined)
      : d.link.publishAsync(deviceTopic(o.fleet, d.id, ch), body, { qos: 1, retain });
  const event = (d: SimDevice, e: Record<string, unknown>) =>
    pub(d, 'event', JSON.stringify({ ...e, at: Date.now() }));
  const label = (r: TargetRef) =>
    r.kind === 'group' ? `group ${r.id} ${r.version}` : `${r.kind} ${r.version}`;

  const apply = (d: SimDevice) => {
    const chosen = chooseTarget([...d.targets.values()], d.groups);
    if (!chosen) return;
    const origin = chosen.origin as TargetRef;
    if (
      d.applied &&
      d.applied.kind === origin.kind &&
      d.applied.id === origin.id &&
      d.applied.version === origin.version
    )
      return;
    const before = d.applied ? { applied: d.applied, apps: d.apps } : undefined;
    d.previous = d.applied;
    d.applied = origin;
    d.status = 'applying';
    d.reason = undefined;
    void event(d, { type: 'target-accepted', target: origin });
    void pub(d, 'state', JSON.stringify(report(d)), true);
    if (d.timer) clearTimeout(d.timer);
    d.timer = setTimeout(() => {
      d.timer = undefined;
      const services: Record<string, WireReportedState['apps'][string]['services'][string]> = {};
      const apps: WireReportedState['apps'] = {};
      for (const [app, body] of Object.entries(
        (chosen.apps ?? {}) as Record<string, { services?: Record<string, { image?: string }> }>,
      )) {
        for (const [svc, spec] of Object.entries(body.services ?? {}))
          services[svc] = { image: String(spec.image ?? ''), state: 'running', health: 'none', restarts: 0 };
        apps[app] = { status: 'running', services: { ...services } };
      }
      // converged: the new version runs, on probation for its health window
      d.apps = apps;
      d.status = 'converged';
      void event(d, { type: 'converged', target: origin });
      void pub(d, 'state', JSON.stringify(report(d)), true);
      d.timer = setTimeout(() => {
        d.timer = undefined;
        if (d.fails && before) {
          // it "crashes" in the window: back to what ran before, and why
          d.reason = `rollback from ${label(origin)}: simulated crash in the health window`;
          void event(d, { type: 'rollback', from: origin, to: before.applied, reason: d.reason });
          d.applied = before.applied;
          d.apps = before.apps;
          d.previous = null;
          stats.rolledBack++;
        } else {
          stats.converged++;
          void event(d, { type: 'rollout-healthy', target: origin });
        }
        d.status = 'healthy';
        void pub(d, 'state', JSON.stringify(report(d)), true);
      }, windowMs);
    }, applyMs);
  };

  const onMessage = (topic: string, payload: Buffer) => {
    if (payload.length === 0) return;
    const t = parseTopic(topic);
    if (!t || t.fleet !== o.fleet) return;
    const targets: SimDevice[] =
      t.kind === 'device'
        ? [devices.get(t.deviceId)].filter((x): x is SimDevice => !!x)
        : t.kind === 'group-target'
          ? [...devices.values()].filter((d) => d.groups.includes(t.group))
          : [];
    if (t.kind === 'device' && t.channel === 'command') {
      const d = targets[0];
      const m = decodeJson(SignedCommandSchema, payload, MAX_CONTROL_BYTES);
      if (!d || !m.ok || !verifyCommand(m.value, o.publicKey).ok) return; // refused commands get no answer
      stats.commands++;
      const kind = String(m.value.command.body.kind);
      commandLog.push({ deviceId: d.id, kind });
      void pub(
        d,
        'result',
        JSON.stringify({ id: m.value.command.id, kind, ok: true, result: { simulated: true } }),
      );
      if (kind === 'retry' && d.retry) {
        // the run the operator asked for went through: nothing pending any more, as the agent reports it
        d.retry = undefined;
        void pub(d, 'state', JSON.stringify(report(d)), true);
      }
      return;
    }
    if (!(t.kind === 'group-target' || (t.kind === 'device' && t.channel === 'target'))) return;
    const m = decodeJson(SignedTargetSchema, payload, MAX_TARGET_BYTES);
    for (const d of targets) {
      stats.targets++;
      const scope =
        t.kind === 'device'
          ? { kind: 'device' as const, id: t.deviceId }
          : { kind: 'group' as const, id: t.group };
      if (!m.ok) {
        stats.rejected++;
        void event(d, { type: 'target-rejected', scope, reason: m.reason });
        continue;
      }
      const check = verifyTarget(m.value, o.publicKey);
      if (!check.ok) {
        stats.rejected++;
        void event(d, {
          type: 'target-rejected',
          scope,
          version: m.value.target.version,
          reason: check.reason,
        });
        continue;
      }
      const k = `${scope.kind}/${scope.id}`;
      const had = d.targets.get(k);
      if (had && had.target.version >= m.value.target.version) continue; // the retained copy again
      d.targets.set(k, m.value);
      apply(d);
    }
  };

  const connect = async (
    clientId: string,
    creds: { username?: string; password?: string },
    will?: IClientOptions['will'],
  ) => {
    const c = await connectAsync(o.url, {
      clientId,
      protocolVersion: o.protocolVersion ?? 4,
      reconnectPeriod: 1000,
      connectTimeout: 30_000,
      keepalive: 60,
      ...creds,
      ...(will ? { will } : {}),
    });
    c.on('message', onMessage);
    links.push(c);
    return c;
  };

  const mk = (id: string, index: number, link: MqttClient): SimDevice => ({
    id,
    index,
    groups: o.groups?.(id, index) ?? [],
    link,
    // a fixed, evenly spread choice: every 1/failShare-th device fails
    fails: failShare > 0 && Math.floor((index + 1) * failShare) !== Math.floor(index * failShare),
    targets: new Map(),
    applied: null,
    previous: null,
    status: null,
    apps: {},
    retry: o.retry?.(id, index),
  });

  if (o.perDevice) {
    for (const [i, id] of ids.entries()) {
      const groups = o.groups?.(id, i) ?? [];
      const link = await connect(`berth-agent-${id}`, await o.perDevice(id), {
        topic: deviceTopic(o.fleet, id, 'status'),
        payload: Buffer.from(status({ id, groups }, 'offline')),
        qos: 1,
        retain: true,
      });
      const d = mk(id, i, link);
      devices.set(id, d);
      await link.subscribeAsync(
        [
          deviceTopic(o.fleet, id, 'target'),
          deviceTopic(o.fleet, id, 'command'),
          ...d.groups.map((g) => `${base}/groups/${g}/target`),
        ],
        { qos: 1 },
      );
    }
  } else {
    const n = Math.max(1, Math.min(o.connections ?? 4, ids.length));
    const shared: MqttClient[] = [];
    for (let i = 0; i < n; i++) shared.push(await connect(`berth-sim-${process.pid}-${i}`, o.account ?? {}));
    for (const [i, id] of ids.entries()) devices.set(id, mk(id, i, shared[i % n]!));
    // one link hears every target and command; each device acts only on its own (or its groups')
    const link0 = shared[0]!;
    for (const l of shared) if (l !== link0) l.removeListener('message', onMessage);
    await link0.subscribeAsync(
      [`${base}/devices/+/target`, `${base}/devices/+/command`, `${base}/groups/+/target`],
      {
        qos: 1,
      },
    );
  }

  const info = JSON.stringify({
    os: { platform: 'linux', distro: 'sim', release: '1', kernel: '6.1', arch: 'x64', hostname: 'sim' },
    cpu: { manufacturer: 'sim', brand: 'sim', cores: 4, physicalCores: 4 },
    memory: { totalBytes: 2 ** 30 },
    disks: [],
    network: [],
  });
  const announced = (async () => {
    const all = [...devices.values()];
    // in waves, so a 10,000-device start does not queue 30,000 publishes at once
    for (let i = 0; i < all.length; i += 500) {
      await Promise.all(
        all.slice(i, i + 500).map(async (d) => {
          await pub(d, 'status', status(d, 'online'), true);
          await pub(d, 'info', info, true);
          await pub(d, 'state', JSON.stringify(report(d)), true);
        }),
      );
    }
  })();

  let metricsTimer: NodeJS.Timeout | undefined;
  if (o.metricsMs) {
    const tick = () => {
      for (const d of devices.values())
        void pub(
          d,
          'metrics',
          JSON.stringify({
            at: Date.now(),
            cpuPercent: (d.index * 7) % 100,
            memory: { usedBytes: 1e8, totalBytes: 1e9 },
          }),
        );
      metricsTimer = setTimeout(tick, o.metricsMs);
    };
    metricsTimer = setTimeout(tick, o.metricsMs);
  }

  return {
    ids,
    ready: () => announced,
    state: (id) => {
      const d = devices.get(id);
      return d ? report(d) : undefined;
    },
    stats,
    commandLog,
    stop: async () => {
      stopped = true;
      if (metricsTimer) clearTimeout(metricsTimer);
      for (const d of devices.values()) if (d.timer) clearTimeout(d.timer);
      await announced.catch(() => undefined);
      if (!o.perDevice)
        await Promise.all(
          [...devices.values()].map((d) =>
            pub(d, 'status', status(d, 'offline'), true).catch(() => undefined),
          ),
        );
      // per device: dropped, not disconnected, so each last will (offline) fires as for a real device
      await Promise.all(links.map((l) => l.endAsync(Boolean(o.perDevice)).catch(() => undefined)));
    },
  };
}
