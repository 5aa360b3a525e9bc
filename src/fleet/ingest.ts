/**
 * The fleet server's ingest: everything devices report, decoded (size-capped before parsing, schema-checked,
 * attributed to the device its topic names — the broker's ACL makes the topic the device's own) and stored
 * in batches. A status flood from 10,000 reconnecting devices becomes a few transactions, not 10,000:
 * messages are queued and flushed every `flushMs` or at `maxBatch`, keeping only the newest status, state
 * and info per device within a batch. The queue is bounded: past `maxQueued` queued events and metrics
 * are dropped (counted in `stats.dropped`) — presence and state never are (one entry per device).
 *
 * After each flush the bus hears what changed: device online/offline, state (with the fleet's status),
 * each event, and how the device stands with the target that applies to it (`deployment.progress`).
 *
 * Lifecycle: `new Ingest(opts)` → `start(conn)` (subscribes) → … → `stop()` (flushes what is queued).
 */
import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { MqttConnection } from '../transport/connection.js';
import {
  CommandResultSchema,
  decodeJson,
  MAX_CONTROL_BYTES,
  MAX_REPLY_BYTES,
  StatusSchema,
} from '../transport/messages.js';
import {
  EventSchema,
  InfoSchema,
  MAX_REPORT_BYTES,
  MAX_STATE_BYTES,
  MetricsSchema,
  ReportedStateSchema,
  TargetRejectedSchema,
} from '../transport/reports.js';
import { type DeviceChannel, parseTopic, serverReportFilter } from '../transport/topics.js';
import type { FleetBus } from './bus.js';
import type { InfoUpdate, RejectionUpdate, StateUpdate, StatusUpdate } from './store/devices.js';
import type { EventInput } from './store/events.js';
import type { FleetStores } from './store/index.js';
import { type MetricSample, metricSeries } from './store/metrics.js';
import { deviceProgress, effectiveTarget, type ScopeKey, snapshotOf } from './view.js';

export interface IngestOptions {
  fleet: string;
  stores: FleetStores;
  bus: FleetBus;
  log: Logger;
  now?: () => number;
  flushMs?: number;
  maxBatch?: number;
  maxQueued?: number;
}

export const INGEST_CHANNELS: readonly DeviceChannel[] = [
  'status',
  'state',
  'info',
  'event',
  'metrics',
  'result',
];
const QUEUED: ReadonlySet<DeviceChannel> = new Set(['event', 'metrics', 'result']);

export class Ingest {
  private status = new Map<string, StatusUpdate>();
  private state = new Map<string, StateUpdate>();
  private info = new Map<string, InfoUpdate>();
  private events: EventInput[] = [];
  private metrics: Array<{ deviceId: string; at: number; sample: Record<string, unknown> }> = [];
  private rejections: RejectionUpdate[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** presence as last stored, to tell the bus only about changes */
  private online = new Map<string, boolean>();
  private conn: MqttConnection | undefined;
  private readonly now: () => number;
  readonly stats = { received: 0, rejected: 0, dropped: 0, flushes: 0, stored: 0 };
  private readonly onMessage = (topic: string, payload: Buffer) => this.receive(topic, payload);

  constructor(private readonly o: IngestOptions) {
    this.now = o.now ?? Date.now;
  }

  async start(conn: MqttConnection): Promise<void> {
    this.conn = conn;
    conn.on('message', this.onMessage);
    const shared = conn.protocolVersion === 5;
    for (const ch of INGEST_CHANNELS)
      await conn.subscribe(serverReportFilter(this.o.fleet, ch, shared && QUEUED.has(ch)), 1);
  }

  stop(): void {
    this.conn?.off('message', this.onMessage);
    this.conn = undefined;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.flush();
  }

  private get queued(): number {
    return this.status.size + this.state.size + this.info.size + this.events.length + this.metrics.length;
  }

  private reject(topic: string, channel: DeviceChannel, reason: string) {
    this.stats.rejected++;
    this.o.log.warn({ topic, reason }, `rejected ${channel}`);
  }

  /** One message from the broker (public for tests and the bench). */
  receive(topic: string, payload: Buffer): void {
    const t = parseTopic(topic);
    if (t?.kind !== 'device' || t.fleet !== this.o.fleet) return;
    if (!Buffer.isBuffer(payload) || payload.length === 0) return; // a retained message cleared
    this.stats.received++;
    let why: string | undefined;
    try {
      why = this.queue(t.channel, t.deviceId, payload, this.now());
    } catch (err) {
      why = errorMessage(err);
    }
    if (why !== undefined) {
      this.reject(topic, t.channel, why);
      return;
    }
    if (this.queued >= (this.o.maxBatch ?? 2000)) this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.o.flushMs ?? 100);
      this.timer.unref?.();
    }
  }

  /** Decode and queue; returns why the message was refused, if it was. */
  private queue(channel: DeviceChannel, deviceId: string, payload: Buffer, at: number): string | undefined {
    switch (channel) {
      case 'status': {
        const m = decodeJson(StatusSchema, payload, MAX_CONTROL_BYTES);
        if (!m.ok) return m.reason;
        if (m.value.deviceId !== deviceId) return `status names device ${m.value.deviceId}`;
        const v = m.value;
        this.status.set(deviceId, {
          deviceId,
          online: v.state === 'online',
          at,
          platform: v.platform,
          agentVersion: v.agentVersion,
          agentUpdate: v.agentUpdate,
          groups: v.groups ?? [],
          keyId: v.keyId,
        });
        break;
      }
      case 'state': {
        const m = decodeJson(ReportedStateSchema, payload, MAX_STATE_BYTES);
        if (!m.ok) return m.reason;
        this.state.set(deviceId, { deviceId, state: m.value, at });
        break;
      }
      case 'info': {
        const m = decodeJson(InfoSchema, payload, MAX_REPORT_BYTES);
        if (!m.ok) return m.reason;
        this.info.set(deviceId, { deviceId, json: payload.toString('utf8'), at });
        break;
      }
      case 'event': {
        const m = decodeJson(EventSchema, payload, MAX_REPORT_BYTES);
        if (!m.ok) return m.reason;
        if (!this.room()) return undefined;
        this.events.push({
          deviceId,
          type: m.value.type,
          at: m.value.at,
          receivedAt: at,
          json: payload.toString('utf8'),
        });
        if (m.value.type === 'target-rejected') {
          const r = TargetRejectedSchema.safeParse(m.value);
          if (r.success && r.data.scope)
            this.rejections.push({
              deviceId,
              kind: r.data.scope.kind,
              id: r.data.scope.id,
              version: r.data.version ?? null,
              reason: r.data.reason,
              at,
            });
        }
        break;
      }
      case 'metrics': {
        const m = decodeJson(MetricsSchema, payload, MAX_REPORT_BYTES);
        if (!m.ok) return m.reason;
        if (!this.room()) return undefined;
        this.metrics.push({ deviceId, at: m.value.at, sample: m.value });
        break;
      }
      case 'result': {
        const m = decodeJson(CommandResultSchema, payload, MAX_REPLY_BYTES);
        if (!m.ok) return m.reason;
        if (!this.room()) return undefined;
        // the answer itself (logs…) goes to whoever asked; the history keeps that it was answered
        const { id, kind, ok, error } = m.value;
        this.events.push({
          deviceId,
          type: 'command-result',
          receivedAt: at,
          json: JSON.stringify({ type: 'command-result', id, kind, ok, ...(error ? { error } : {}) }),
        });
        break;
      }
      default:
        return undefined;
    }
    return undefined;
  }

  private room(): boolean {
    if (this.events.length + this.metrics.length < (this.o.maxQueued ?? 100_000)) return true;
    this.stats.dropped++;
    return false;
  }

  /** Store everything queued (one transaction per kind), then tell the bus. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const status = [...this.status.values()];
    const state = [...this.state.values()];
    const info = [...this.info.values()];
    const events = this.events;
    const metrics = this.metrics;
    const rejections = this.rejections;
    this.status = new Map();
    this.state = new Map();
    this.info = new Map();
    this.events = [];
    this.metrics = [];
    this.rejections = [];
    if (status.length + state.length + info.length + events.length + metrics.length === 0) return;
    const { stores, bus, log } = this.o;
    let eventIds: number[] = [];
    try {
      // presence first (a device's first status creates its row), rejections after the state they judge
      stores.devices.applyStatus(status);
      stores.devices.applyState(state);
      stores.devices.applyInfo(info);
      stores.devices.touch(
        new Set([...state, ...info, ...events, ...metrics].map((m) => m.deviceId)),
        this.now(),
      );
      eventIds = stores.events.append(events);
      stores.devices.applyRejections(rejections);
      stores.metrics.record(
        metrics.map(
          (m): MetricSample => ({
            deviceId: m.deviceId,
            at: m.at,
            values: metricSeries(m.sample, (cid) => stores.devices.serviceOfContainer(m.deviceId, cid)),
          }),
        ),
      );
      this.stats.flushes++;
      this.stats.stored += status.length + state.length + info.length + events.length + metrics.length;
    } catch (err) {
      log.error({ err: errorMessage(err) }, 'storing device reports failed; this batch is lost');
      return;
    }
    if (bus.size === 0) {
      for (const s of status) this.online.set(s.deviceId, s.online);
      return;
    }
    this.tell(status, state, events, eventIds, rejections);
  }

  private tell(
    status: StatusUpdate[],
    state: StateUpdate[],
    events: EventInput[],
    eventIds: number[],
    rejections: RejectionUpdate[],
  ): void {
    const { bus, stores } = this.o;
    for (const s of status) {
      if (this.online.get(s.deviceId) === s.online) continue;
      this.online.set(s.deviceId, s.online);
      bus.emit({ type: s.online ? 'device.online' : 'device.offline', deviceId: s.deviceId, at: s.at });
    }
    const touched = new Set<string>();
    for (const u of state) {
      const row = stores.devices.get(u.deviceId);
      if (!row || row.revokedAt) continue;
      bus.emit({
        type: 'device.state',
        deviceId: u.deviceId,
        at: u.at,
        status: row.status,
        applied: row.applied,
        lastError: row.lastError,
      });
      touched.add(u.deviceId);
    }
    events.forEach((e, i) => {
      let event: Record<string, unknown>;
      try {
        event = JSON.parse(e.json) as Record<string, unknown>;
      } catch {
        return;
      }
      bus.emit({ type: 'device.event', deviceId: e.deviceId, at: e.receivedAt, id: eventIds[i] ?? 0, event });
    });
    for (const r of rejections) touched.add(r.deviceId);
    for (const id of touched) this.tellProgress(id);
  }

  /** How the device stands with the target that applies to it now. */
  private tellProgress(deviceId: string): void {
    const { stores, bus } = this.o;
    const d = stores.devices.get(deviceId);
    if (!d) return;
    const expected = effectiveTarget(d.id, d.groups, (s: ScopeKey) => stores.deployments.current(s));
    if (!expected) return;
    const p = deviceProgress(expected, snapshotOf(d, expected));
    bus.emit({
      type: 'deployment.progress',
      deviceId,
      at: this.now(),
      scope: { kind: expected.kind, id: expected.id },
      version: expected.version,
      state: p.state,
      ...(p.detail ? { detail: p.detail } : {}),
    });
  }
}
