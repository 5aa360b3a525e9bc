import { EventEmitter } from 'node:events';
import {
  connect,
  type IClientOptions,
  type IClientPublishOptions,
  MqttClient,
  type StreamBuilder,
} from 'mqtt';
import { backoffDelay } from '../lib/backoff.js';
import { type Clock, systemClock, type TimerHandle } from '../lib/clock.js';
import { unavailable } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { deliverGuarded, type MessageListener } from './guard.js';

/**
 * One MQTT connection with berth's habits: reconnect with exponential backoff and jitter (mqtt.js's
 * fixed-period reconnect is off), subscriptions remembered and renewed on every connect, the broker's
 * maximum packet size (MQTT 5 CONNACK) exposed for chunk sizing, and a last will. TLS material and
 * credentials arrive as values: the composition root reads files, this class opens no files.
 *
 * The byte stream and the clock are passed in (as MQTT.js and aedes do in their own tests): by default
 * the URL picks a TCP/TLS stream and time is the system's; tests hand in an in-memory duplex per dial and
 * a manual clock, so reconnects, losses and timeouts run without sockets or waiting.
 *
 * Lifecycle: `new` → `start()` (resolves on the first CONNACK, or rejects Unavailable after its timeout)
 * → events `connect` / `disconnect` / `message` → `close()`. While anyone waits for a connection
 * (`start`, `waitConnected`) the process is kept alive: a command waiting for its broker must not end
 * with exit code 0 just because the retry timer is the only thing left on the event loop.
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
  /** The byte stream for each dial (default: TCP or TLS from `url`). */
  streamBuilder?: StreamBuilder | undefined;
  /** Time for backoff and timeouts (default: the system clock). */
  clock?: Clock | undefined;
}

/** When the broker says nothing (MQTT 3.1.1, or MQTT 5 without the property), assume this limit. */
export const DEFAULT_MAX_PACKET = 256 * 1024 + 1024;

export interface ConnectionEvents {
  connect: [];
  disconnect: [];
  message: [topic: string, payload: Buffer];
}

export type MessageHandler = (topic: string, payload: Buffer) => void;

/** CONNACK codes that mean "not this protocol version": 3.1.1's 1 and MQTT 5's 0x84. */
const REFUSED_VERSION = new Set([1, 132]);

export class MqttConnection extends EventEmitter<ConnectionEvents> {
  private client: MqttClient | undefined;
  private readonly subs = new Map<string, 0 | 1>();
  private readonly claims = new Set<{ match: (topic: string) => boolean; handler: MessageHandler }>();
  /**
   * Publishes not settled yet, settled as failed when their connection goes: MQTT.js never calls back a
   * QoS 0 publish that waits for 'drain' on a socket that then closes, and a sender counting its frames
   * in flight must not lose a slot each time a broker dies.
   */
  private readonly unsettled = new Set<(err: Error) => void>();
  private readonly clock: Clock;
  private attempt = 0;
  private timer: TimerHandle | undefined;
  private closed = false;
  private version: 4 | 5;
  /** Ref'd while someone waits for a connection, so Node does not exit under them. */
  private holds = 0;
  private holdTimer: NodeJS.Timeout | undefined;
  connected = false;
  /** The broker's maximum packet size, learned at CONNACK. */
  maxPacket = DEFAULT_MAX_PACKET;
  /** Connections made so far (1 after the first CONNACK). */
  connects = 0;
  /** Why the last dial failed (socket error, refused CONNACK), for Unavailable messages. */
  lastError: string | undefined;
  /** Why the broker last refused us (bad credentials, not authorised), until a CONNACK accepts us. */
  refused: string | undefined;

  constructor(readonly opts: MqttConnectionOptions) {
    super();
    this.version = opts.protocolVersion === 4 ? 4 : 5;
    this.clock = opts.clock ?? systemClock;
  }

  get protocolVersion(): 4 | 5 {
    return this.version;
  }

  /**
   * Connect; resolves on the first CONNACK (retrying with backoff until then). Rejects Unavailable if
   * closed first or, with `timeoutMs`, when no broker answered in time.
   */
  start(opts: { timeoutMs?: number | undefined } = {}): Promise<void> {
    const first = this.connected ? Promise.resolve() : this.waitConnected(opts.timeoutMs);
    if (!this.client && !this.timer) this.dial();
    return first;
  }

  /** Resolves when connected (now or later); rejects Unavailable after `timeoutMs` or on close. */
  waitConnected(timeoutMs?: number): Promise<void> {
    if (this.connected) return Promise.resolve();
    if (this.closed) return Promise.reject(unavailable(`MQTT connection to ${this.opts.url} closed`));
    return new Promise((resolve, reject) => {
      this.hold(+1);
      let t: TimerHandle | undefined;
      const done = () => {
        this.hold(-1);
        if (t) this.clock.clearTimeout(t);
        this.off('connect', onConnect);
        this.off('disconnect', onDisc);
      };
      const onConnect = () => {
        done();
        resolve();
      };
      const onDisc = () => {
        if (!this.closed) return;
        done();
        reject(unavailable(`MQTT connection to ${this.opts.url} closed`));
      };
      if (timeoutMs !== undefined)
        t = this.clock.setTimeout(() => {
          done();
          const why = this.lastError ? ` (${this.lastError})` : '';
          reject(
            unavailable(
              this.refused
                ? `MQTT broker ${this.opts.url} refused us: ${this.refused} (credentials?)`
                : `MQTT broker ${this.opts.url} not reachable within ${timeoutMs} ms${why}`,
            ),
          );
        }, timeoutMs);
      this.on('connect', onConnect);
      this.on('disconnect', onDisc);
    });
  }

  private hold(delta: number): void {
    this.holds += delta;
    if (this.holds > 0 && !this.holdTimer) this.holdTimer = setInterval(() => undefined, 1 << 30);
    else if (this.holds === 0 && this.holdTimer) {
      clearInterval(this.holdTimer);
      this.holdTimer = undefined;
    }
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
      // mqtt-packet otherwise builds, at the first packet, a table of 65,536 two-byte Buffers (every packet
      // id pre-encoded): 6.7 MiB of heap kept for the process's life, measured in the idle agent's heap
      // snapshot. Encoding the id per packet costs a 2-byte allocation.
      writeCache: false,
      ...(o.username !== undefined ? { username: o.username } : {}),
      ...(o.password !== undefined ? { password: o.password } : {}),
      ...(o.ca !== undefined ? { ca: o.ca } : {}),
      ...(o.cert !== undefined ? { cert: o.cert } : {}),
      ...(o.key !== undefined ? { key: o.key } : {}),
      ...(o.rejectUnauthorized !== undefined ? { rejectUnauthorized: o.rejectUnauthorized } : {}),
      ...(o.will ? { will: { ...o.will } } : {}),
    };
    const client = o.streamBuilder ? new MqttClient(o.streamBuilder, options) : connect(o.url, options);
    this.client = client;
    let gotConnack = false;
    let refusedVersion = false;
    client.on('connect', (connack) => {
      gotConnack = true;
      // Requests are small and latency-bound: no Nagle delay on our side of the socket.
      (client.stream as { setNoDelay?: (v: boolean) => void } | undefined)?.setNoDelay?.(true);
      this.attempt = 0;
      this.connected = true;
      this.refused = undefined;
      this.connects++;
      this.lastError = undefined;
      const mps = connack.properties?.maximumPacketSize;
      this.maxPacket = typeof mps === 'number' && mps > 0 ? mps : DEFAULT_MAX_PACKET;
      o.log.info({ broker: o.url, mqtt: this.version, maxPacket: this.maxPacket }, 'mqtt connected');
      for (const [filter, qos] of this.subs) this.subscribeNow(client, filter, qos);
      this.emit('connect');
    });
    // not emit(): a listener that throws must drop its message, not crash the process (guard.ts)
    client.on('message', (topic, payload) => {
      for (const c of this.claims)
        if (c.match(topic)) {
          deliverGuarded([c.handler], topic, payload, o.log);
          return;
        }
      deliverGuarded(this.rawListeners('message') as MessageListener[], topic, payload, o.log);
    });
    client.on('error', (err) => {
      const code = (err as { code?: number | string }).code;
      if (
        o.protocolVersion === 'auto' &&
        this.version === 5 &&
        typeof code === 'number' &&
        REFUSED_VERSION.has(code)
      ) {
        // Normal against 3.1.1-only brokers (aedes, old Mosquitto): not worth a warning.
        refusedVersion = true;
        o.log.debug({ broker: o.url, code }, 'broker refused MQTT 5; using MQTT 3.1.1');
        return;
      }
      this.lastError = err.message;
      o.log.warn({ broker: o.url, err: err.message, code }, 'mqtt error');
      // 3.1.1: 4 bad user name or password, 5 not authorised; MQTT 5: 134, 135
      if (code === 4 || code === 5 || code === 134 || code === 135) this.refused = err.message;
    });
    client.on('close', () => {
      if (this.client !== client) return;
      const bytesWritten = (client.stream as { bytesWritten?: number } | undefined)?.bytesWritten ?? 0;
      // Brokers that only speak 3.1.1 either refuse with a code (above) or drop an MQTT 5 CONNECT
      // without any CONNACK; a broker that was never reached (nothing written) says nothing about it.
      const silentDrop = !gotConnack && bytesWritten > 0 && this.connects === 0;
      const fallback = o.protocolVersion === 'auto' && this.version === 5 && (refusedVersion || silentDrop);
      if (fallback) {
        this.version = 4;
        if (!refusedVersion) o.log.debug({ broker: o.url }, 'no CONNACK to MQTT 5; using MQTT 3.1.1');
      }
      const was = this.connected;
      this.connected = false;
      for (const fail of [...this.unsettled]) fail(unavailable(`MQTT connection to ${o.url} lost`));
      client.removeAllListeners();
      client.on('error', () => undefined);
      client.end(true);
      this.client = undefined;
      if (was) o.log.warn({ broker: o.url }, 'mqtt disconnected');
      this.emit('disconnect');
      if (this.closed) return;
      if (fallback) this.dial();
      else this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    const delay = backoffDelay(this.attempt++, this.opts.backoff ?? { initialMs: 200, maxMs: 30_000 });
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.dial();
    }, delay);
  }

  private subscribeNow(client: MqttClient, filter: string, qos: 0 | 1): void {
    client.subscribe(filter, { qos }, (err) => {
      if (err) this.opts.log.warn({ filter, err: err.message }, 'mqtt subscribe failed');
    });
  }

  /**
   * Messages on topics `match` accepts go to `handler` alone, not to `message` listeners: the handler
   * owns the payload (the blob fetcher hands chunk frames to its worker without copying them).
   * Returns the function that ends the claim.
   */
  claim(match: (topic: string) => boolean, handler: MessageHandler): () => void {
    const c = { match, handler };
    this.claims.add(c);
    return () => this.claims.delete(c);
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
      const fail = (err: Error) => {
        this.unsettled.delete(fail);
        reject(err);
      };
      this.unsettled.add(fail);
      client.publish(topic, payload, po, (err) => {
        if (!this.unsettled.delete(fail)) return; // already failed with its connection
        if (err) reject(unavailable(err.message, err));
        else resolve();
      });
    });
  }

  /** Close. `graceful` sends DISCONNECT (no last will); otherwise the socket is just dropped. */
  async close(graceful = true): Promise<void> {
    this.closed = true;
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    const client = this.client;
    this.client = undefined;
    const was = this.connected;
    this.connected = false;
    if (!was) this.emit('disconnect'); // wake waiters: a closed connection never comes up
    if (client) await new Promise<void>((resolve) => client.end(!graceful, {}, () => resolve()));
    // whatever the end did not settle never will
    for (const fail of [...this.unsettled]) fail(unavailable(`MQTT connection to ${this.opts.url} closed`));
  }
}
