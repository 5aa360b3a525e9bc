import { createServer, type Server } from 'node:net';
import { Aedes } from 'aedes';
import type { Logger } from '../lib/logger.js';

/**
 * The embedded broker (aedes, MQTT 3.1.1) for a one-machine fleet or a demo: in-memory retained
 * messages, no ACLs. The fleet server republishes its current targets at start, so a restart loses
 * nothing that matters. Production fleets point `--broker` at Mosquitto/EMQX/HiveMQ instead.
 */
export interface EmbeddedBroker {
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function startEmbeddedBroker(opts: {
  host?: string;
  port?: number;
  log: Logger;
}): Promise<EmbeddedBroker> {
  const aedes = await Aedes.createBroker();
  aedes.on('clientError', (client, err) =>
    opts.log.debug({ client: client?.id, err: err.message }, 'broker client error'),
  );
  const sockets = new Set<import('node:net').Socket>();
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
  opts.log.info({ host, port }, 'embedded MQTT broker listening');
  return {
    url: `mqtt://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`,
    port,
    close: async () => {
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
