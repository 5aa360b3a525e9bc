import { EventEmitter } from 'node:events';
import { connect, type IClientOptions, type IClientPublishOptions, type MqttClient } from 'mqtt';
import { unavailable } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { backoffDelay } from './backoff.js';
import { deliverGuarded, type MessageListener } from './guard.js';

/**
 * One MQTT connection with berth's habits: reconnect with exponential backoff and jitter (mqtt.js's
 * fixed-period reconnect is off), subscriptions remembered and renewed on every connect, the broker's
 * maximum packet size (MQTT 5 CONNACK) exposed for chunk sizing, and a last will. TLS material and
 * credentials arrive as values: the composition root reads files, this class opens no files.
 *
 * Lifecycle: `new` → `start()` (resolves on the first CONNACK, or keeps retrying in the background when
 * `waitForConnect` is false) → events `connect` / `disconnect` / `message` → `close()`.
 */
export interface MqttConnectionOptions {
  url: string;
  clientId: string;
  /** 4 = MQTT 3.1.1, 5 = MQTT 5; 'auto' tries 5 and falls back to 3.1.1 when the broker refuses it. */
  protocolVersion: 4 | 5 | 'auto';
  username?: string | undefined;
  password?: string | undefined;
  ca?: Buffer | string | undefined;
  cert?: Buffer | string | undefined;
  key?: Buffer | string | undefined;
  rejectUnauthorized?: boolean;
  will?: { topic: string; payload: Buffer; qos: 0 | 1; retain: boolean } | undefined;
  keepaliveSec?: number;
  backoff?: { initialMs: number; maxMs: number };
  log: Logger;
}

/** When the broker says nothing (MQTT 3.1.1, or MQTT 5 without the property), assume this limit. */
export const DEFAULT_MAX_PACKET = 256 * 1024 + 1024;

export interface ConnectionEvents {
  connect: [];
  disconnect: [];
  message: [topic: string, payload: Buffer];
}

export class MqttConnection extends EventEmitter<ConnectionEvents> {
  private client: MqttClient | undefined;
  private readonly subs = new Map<string, 0 | 1>();
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private version: 4 | 5;
  connected = false;
  /** The broker's maximum packet size, learned at CONNACK. */
  maxPacket = DEFAULT_MAX_PACKET;
  /** Connections made so far (1 after the first CONNACK). */
  connects = 0;
  /** Why the broker last refused us (bad credentials, not authorised), until a CONNACK accepts us. */
  refused: string | undefined;

  constructor(readonly opts: MqttConnectionOptions) {
    super();
    this.version = opts.protocolVersion === 4 ? 4 : 5;
  }

  get protocolVersion(): 4 | 5 {
    return this.version;
  }

  /** Connect; resolves on the first CONNACK (retrying with backoff until then), rejects if closed first. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onConnect = () => {
        this.off('disconnect', onDisc);
        resolve();
      };
      const onDisc = () => {
        if (this.closed) reject(unavailable(`MQTT connection to ${this.opts.url} closed`));
      };
      this.once('connect', onConnect);
      this.on('disconnect', onDisc);
      this.dial();
    });
  }

  private dial(): void {
    if (this.closed) return;
    const o = this.opts;
    const options: IClientOptions = {
      clientId: o.clientId,
      protocolVersion: this.version,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      keepalive: o.keepaliveSec ?? 30,
      resubscribe: false,
      ...(o.username !== undefined ? { username: o.username } : {}),
      ...(o.password !== undefined ? { password: o.password } : {}),
      ...(o.ca !== undefined ? { ca: o.ca } : {}),
      ...(o.cert !== undefined ? { cert: o.cert } : {}),
      ...(o.key !== undefined ? { key: o.key } : {}),
      ...(o.rejectUnauthorized !== undefined ? { rejectUnauthorized: o.rejectUnauthorized } : {}),
      ...(o.will ? { will: { ...o.will } } : {}),
    };
    const client = connect(o.url, options);
    this.client = client;
    let gotConnack = false;
    client.on('connect', (connack) => {
      gotConnack = true;
      // Requests are small and latency-bound: no Nagle delay on our side of the socket.
      (client.stream as { setNoDelay?: (v: boolean) => void } | undefined)?.setNoDelay?.(true);
      this.attempt = 0;
      this.connected = true;
      this.refused = undefined;
      this.connects++;
      const mps = connack.properties?.maximumPacketSize;
      this.maxPacket = typeof mps === 'number' && mps > 0 ? mps : DEFAULT_MAX_PACKET;
      o.log.info({ broker: o.url, mqtt: this.version, maxPacket: this.maxPacket }, 'mqtt connected');
      for (const [filter, qos] of this.subs) this.subscribeNow(client, filter, qos);
      this.emit('connect');
    });
    // not emit(): a listener that throws must drop its message, not crash the process (guard.ts)
    client.on('message', (topic, payload) =>
      deliverGuarded(this.rawListeners('message') as MessageListener[], topic, payload, o.log),
    );
    client.on('error', (err) => {
      const code = (err as { code?: number }).code;
      o.log.warn({ broker: o.url, err: err.message, code }, 'mqtt error');
      // 3.1.1: 4 bad user name or password, 5 not authorised; MQTT 5: 134, 135
      if (code === 4 || code === 5 || code === 134 || code === 135) this.refused = err.message;
      if (o.protocolVersion === 'auto' && this.version === 5 && (code === 1 || code === 132))
        this.version = 4;
    });
    client.on('close', () => {
      if (this.client !== client) return;
      if (!gotConnack && o.protocolVersion === 'auto' && this.version === 5 && this.connects === 0) {
        // Brokers that only speak 3.1.1 (aedes, old mosquitto) drop an MQTT 5 CONNECT without a CONNACK.
        this.version = 4;
      }
      const was = this.connected;
      this.connected = false;
      client.removeAllListeners();
      client.on('error', () => undefined);
      client.end(true);
      this.client = undefined;
      if (was) o.log.warn({ broker: o.url }, 'mqtt disconnected');
      this.emit('disconnect');
      if (!this.closed) this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    const delay = backoffDelay(this.attempt++, this.opts.backoff ?? { initialMs: 200, maxMs: 30_000 });
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.dial();
    }, delay);
    this.timer.unref?.();
  }

  private subscribeNow(client: MqttClient, filter: string, qos: 0 | 1): void {
    client.subscribe(filter, { qos }, (err) => {
      if (err) this.opts.log.warn({ filter, err: err.message }, 'mqtt subscribe failed');
    });
  }

  /** Subscribe now (if connected) and on every reconnect. Resolves on SUBACK, or at once when offline. */
  subscribe(filter: string, qos: 0 | 1 = 1): Promise<void> {
    this.subs.set(filter, qos);
    const client = this.client;
    if (!client || !this.connected) return Promise.resolve();
    return new Promise((resolve) => {
      client.subscribe(filter, { qos }, (err) => {
        if (err) this.opts.log.warn({ filter, err: err.message }, 'mqtt subscribe failed');
        resolve();
      });
    });
  }

  unsubscribe(filter: string): void {
    this.subs.delete(filter);
    if (this.client && this.connected) this.client.unsubscribe(filter);
  }

  /** Publish; resolves when handed to the broker (QoS 1: PUBACK). Rejects Unavailable when offline. */
  publish(topic: string, payload: Buffer | string, opts: { qos: 0 | 1; retain?: boolean }): Promise<void> {
    const client = this.client;
    if (!client || !this.connected) return Promise.reject(unavailable('MQTT broker not connected'));
    const po: IClientPublishOptions = { qos: opts.qos, retain: opts.retain ?? false };
    return new Promise((resolve, reject) => {
      client.publish(topic, payload, po, (err) => (err ? reject(unavailable(err.message, err)) : resolve()));
    });
  }

  /** Resolves when connected (now or later); rejects after timeoutMs. */
  waitConnected(timeoutMs: number): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.off('connect', on);
        reject(
          unavailable(
            this.refused
              ? `MQTT broker ${this.opts.url} refused us: ${this.refused} (credentials?)`
              : `MQTT broker ${this.opts.url} not reachable within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      const on = () => {
        clearTimeout(t);
        resolve();
      };
      this.once('connect', on);
    });
  }

  /** Close. `graceful` sends DISCONNECT (no last will); otherwise the socket is just dropped. */
  async close(graceful = true): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    const client = this.client;
    this.client = undefined;
    this.connected = false;
    if (!client) return;
    await new Promise<void>((resolve) => client.end(!graceful, {}, () => resolve()));
  }
}
