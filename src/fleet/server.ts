import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import type { ContentStore } from '../content/store.js';
import type { Db } from '../db/database.js';
import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { targetsAuthorizer } from '../transport/blob-access.js';
import { BlobServer, type BlobServerOptions } from '../transport/blob-server.js';
import { MqttConnection, type MqttConnectionOptions } from '../transport/connection.js';
import { decodeJson, MAX_CONTROL_BYTES, StatusSchema, type Target } from '../transport/messages.js';
import { parseTopic, serverStatusFilter } from '../transport/topics.js';
import { type EmbeddedBroker, startEmbeddedBroker } from './broker.js';
import { publishTarget } from './deploy.js';
import { FleetRegistry } from './registry.js';

/**
 * The fleet server: one MQTT connection (to `broker`, or to an embedded aedes when none is given), the
 * device registry fed by retained status messages, the blob service, and the current targets
 * re-published (retained) at start so a broker that lost its retained store converges again.
 *
 * Lifecycle: `new FleetServer(opts)` → `start()` → … → `stop()`. Nothing is opened in the constructor.
 */
export interface FleetServerOptions {
  fleet: string;
  db: Db;
  store: ContentStore;
  privateKey: KeyObject;
  log: Logger;
  /** External broker; when absent an embedded one listens on `listen`. */
  mqtt?: Omit<MqttConnectionOptions, 'clientId' | 'log'> | undefined;
  listen?: { host?: string; port?: number } | undefined;
  blob?:
    | Pick<
        BlobServerOptions,
        'gatherMs' | 'maxInflight' | 'rateLimit' | 'maxQueuedPerDevice' | 'maxQueued' | 'maxQueueAgeMs'
      >
    | undefined;
  /**
   * Which images a device may pull: `targets` only what the current targets of the device and its
   * groups name; `any` every image of the fleet. The composition root decides: `berth fleet serve` uses
   * `targets` unless told `--pull-policy any` (docs/protocol.md); embedding code that says nothing gets
   * `any`, the behaviour of earlier versions.
   */
  pullPolicy?: 'targets' | 'any' | undefined;
}

export class FleetServer {
  readonly registry: FleetRegistry;
  conn: MqttConnection | undefined;
  blobs: BlobServer | undefined;
  broker: EmbeddedBroker | undefined;
  /** Each device's groups, as its retained status says. */
  private readonly groups = new Map<string, string[]>();

  constructor(private readonly opts: FleetServerOptions) {
    this.registry = new FleetRegistry(opts.db);
  }

  /** The broker URL in use (the embedded one's once started). */
  get brokerUrl(): string {
    return this.broker?.url ?? this.opts.mqtt?.url ?? '';
  }

  /** Connect (Unavailable after `connectTimeoutMs` when the broker does not answer), then serve. */
  async start(opts: { connectTimeoutMs?: number } = {}): Promise<void> {
    const { log } = this.opts;
    let mqtt = this.opts.mqtt;
    if (!mqtt) {
      this.broker = await startEmbeddedBroker({ ...this.opts.listen, log });
      mqtt = { url: this.broker.url, protocolVersion: 4 };
    }
    const conn = new MqttConnection({
      ...mqtt,
      clientId: `berth-fleet-${randomBytes(4).toString('hex')}`,
      log,
    });
    this.conn = conn;
    conn.on('message', (topic, payload) => this.onStatus(topic, payload));
    conn.on('connect', () => {
      this.republish().catch((err) => log.warn({ err: errorMessage(err) }, 'republishing targets failed'));
    });
    try {
      await conn.start({ timeoutMs: opts.connectTimeoutMs });
    } catch (err) {
      await this.stop();
      throw err;
    }
    await conn.subscribe(serverStatusFilter(this.opts.fleet), 1);
    this.blobs = new BlobServer({
      conn,
      fleet: this.opts.fleet,
      store: this.opts.store,
      db: this.opts.db,
      privateKey: this.opts.privateKey,
      log,
      resolveImage: (name) => {
        const img = this.registry.image(name);
        return img ? { mediaType: img.mediaType, digest: img.digest, size: img.size } : undefined;
      },
      authorize:
        (this.opts.pullPolicy ?? 'any') === 'any'
          ? undefined
          : targetsAuthorizer({ store: this.opts.store, targetsFor: (id) => this.targetsOf(id) }),
      ...this.opts.blob,
    });
    await this.blobs.start();
  }

  async stop(): Promise<void> {
    this.blobs?.stop();
    await this.conn?.close(true);
    await this.broker?.close();
  }

  private onStatus(topic: string, payload: Buffer): void {
    const t = parseTopic(topic);
    if (t?.kind !== 'device' || t.channel !== 'status' || t.fleet !== this.opts.fleet) return;
    if (payload.length === 0) return;
    const msg = decodeJson(StatusSchema, payload, MAX_CONTROL_BYTES);
    if (!msg.ok) {
      this.opts.log.warn({ topic, reason: msg.reason }, 'rejected status');
      return;
    }
    if (msg.value.deviceId !== t.deviceId) {
      this.opts.log.warn({ topic, deviceId: msg.value.deviceId }, 'rejected status for another device');
      return;
    }
    this.registry.recordStatus(msg.value);
    this.groups.set(t.deviceId, msg.value.groups ?? []);
    // Its last will (or a clean stop): what it queued at the blob service goes.
    if (msg.value.state === 'offline') this.blobs?.deviceGone(t.deviceId);
  }

  /** The current targets a device follows: its own and those of the groups its status names. */
  private targetsOf(deviceId: string): Target[] {
    const groups = new Set(this.groups.get(deviceId) ?? []);
    return this.registry
      .currentDeployments()
      .map((s) => s.target)
      .filter((t) => (t.scope.kind === 'device' ? t.scope.id === deviceId : groups.has(t.scope.id)));
  }

  private async republish(): Promise<void> {
    if (!this.conn) return;
    for (const signed of this.registry.currentDeployments()) await publishTarget(this.conn, signed);
  }
}
