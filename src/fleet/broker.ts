import { createServer, type Server, type Socket } from 'node:net';
import type { Aedes, Client } from 'aedes';
import { unavailable } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { mayPublish, maySubscribe, type Principal } from './acl.js';

/**
 * The embedded broker (aedes, MQTT 3.1.1) for a one-machine fleet or a demo: in-memory retained messages
 * (the fleet server republishes its current targets at start, so a restart loses nothing that matters).
 * Every client authenticates — devices with the credentials they got at enrollment, the fleet's own
 * connections with the fleet account — and every PUBLISH and SUBSCRIBE is checked against the rules in
 * acl.ts (the same as the Mosquitto ACL in docs/protocol.md). Anonymous clients are refused unless the
 * operator opts in for a lab (`allowAnonymous`, logged at start). Production fleets point `--broker` at
 * Mosquitto/EMQX/HiveMQ instead.
 *
 * aedes is loaded lazily (dynamic import): only `fleet serve` ever needs it, never `berth agent`.
 */
export interface EmbeddedBroker {
  url: string;
  port: number;
  /** Disconnect every client authenticated as this device (revocation). */
  disconnectDevice(deviceId: string): number;
  /**
   * Publish as the broker itself (the fleet's process hosts it): no MQTT client, no loopback socket, no
   * parse and copy of the payload on the way in. Resolves once every subscriber's socket took the message
   * (or, when one is full, once it drained), so a sender counting messages in flight is paced by the
   * slowest subscriber. The payload is referenced, not copied, until then.
   */
  publish(topic: string, payload: Buffer, qos: 0 | 1): Promise<void>;
  /** The retained messages on topics matching these filters, read from the broker's own store. */
  retained(filters: readonly string[]): Promise<Array<{ topic: string; payload: Buffer }>>;
  close(): Promise<void>;
}

export interface BrokerAuth {
  fleet: string;
  /** who a username/password is, or undefined to refuse */
  authenticate(username: string, password: Buffer): Principal | undefined;
  /** accept clients without credentials, as the fleet (a lab; never in production) */
  allowAnonymous: boolean;
}

interface RetainedSource {
  createRetainedStreamCombi(patterns: string[]): AsyncIterable<{ topic: string; payload: Buffer | string }>;
}

const PRINCIPAL = Symbol('berth.principal');
type AuthedClient = Client & { [PRINCIPAL]?: Principal };

export async function startEmbeddedBroker(opts: {
  host?: string;
  port?: number;
  log: Logger;
  auth: BrokerAuth;
}): Promise<EmbeddedBroker> {
  const { Aedes } = await import('aedes');
  const { auth, log } = opts;
  const byDevice = new Map<string, Set<AuthedClient>>();
  const who = (client: Client | null): Principal | undefined =>
    client ? (client as AuthedClient)[PRINCIPAL] : { kind: 'fleet' }; // null client: the broker itself

  const aedes: Aedes = await Aedes.createBroker({
    authenticate: (client, username, password, done) => {
      let p: Principal | undefined;
      if (username === undefined || username === '') {
        if (auth.allowAnonymous) p = { kind: 'anonymous' };
      } else {
        try {
          p = auth.authenticate(username, password ?? Buffer.alloc(0));
        } catch (err) {
          log.warn({ client: client.id, err: (err as Error).message }, 'broker authentication failed');
        }
      }
      if (!p) {
        log.info(
          { client: client.id, username: username ?? null },
          'broker refused a client: bad credentials',
        );
        const e = Object.assign(new Error('bad username or password'), { returnCode: 4 });
        done(e as Error & { returnCode: number }, false);
        return;
      }
      (client as AuthedClient)[PRINCIPAL] = p;
      if (p.kind === 'device') {
        const set = byDevice.get(p.deviceId) ?? new Set();
        set.add(client as AuthedClient);
        byDevice.set(p.deviceId, set);
      }
      done(null, true);
    },
    authorizePublish: (client, packet, done) => {
      const p = who(client);
      if (p && mayPublish(p, auth.fleet, packet.topic)) return done(null);
      log.info({ client: client?.id, topic: packet.topic }, 'broker refused a publish');
      done(new Error(`not allowed to publish on ${packet.topic}`));
    },
    authorizeSubscribe: (client, sub, done) => {
      const p = who(client);
      if (p && maySubscribe(p, auth.fleet, sub.topic)) return done(null, sub);
      log.info({ client: client?.id, filter: sub.topic }, 'broker refused a subscription');
      done(null, null); // SUBACK 0x80 for this filter; the connection stays
    },
  });
  aedes.on('clientError', (client, err) =>
    log.debug({ client: client?.id, err: err.message }, 'broker client error'),
  );
  aedes.on('clientDisconnect', (client) => {
    const p = (client as AuthedClient)[PRINCIPAL];
    if (p?.kind === 'device') byDevice.get(p.deviceId)?.delete(client as AuthedClient);
  });

  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    aedes.handle(sock);
  });
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 1883, host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : (opts.port ?? 1883);
  if (auth.allowAnonymous)
    log.warn({ host, port }, 'embedded MQTT broker accepts ANONYMOUS clients with full access (lab only)');
  log.info({ host, port }, 'embedded MQTT broker listening');
  return {
    url: `mqtt://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`,
    port,
    disconnectDevice: (deviceId) => {
      const set = byDevice.get(deviceId);
      if (!set) return 0;
      const n = set.size;
      for (const c of set) c.close();
      byDevice.delete(deviceId);
      return n;
    },
    publish: (topic, payload, qos) =>
      new Promise<void>((resolve, reject) => {
        aedes.publish({ cmd: 'publish', topic, payload, qos, retain: false, dup: false }, (err) =>
          err ? reject(unavailable(`embedded broker: ${err.message}`, err)) : resolve(),
        );
      }),
    retained: async (filters) => {
      const out: Array<{ topic: string; payload: Buffer }> = [];
      // the persistence aedes keeps retained messages in (memory: empty after a restart of the server)
      const store = (aedes as unknown as { persistence: RetainedSource }).persistence;
      for await (const p of store.createRetainedStreamCombi([...filters]))
        out.push({
          topic: p.topic,
          payload: Buffer.isBuffer(p.payload) ? p.payload : Buffer.from(p.payload),
        });
      return out;
    },
    close: async () => {
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
