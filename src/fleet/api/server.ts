/**
 * The HTTP(S) listener of the fleet API: node's http/https server handing requests to the hono app.
 * Bounded: 16 KiB of headers, 30 s to send them, uploads may take up to an hour; `close()` ends open SSE
 * streams too. Nothing listens until `startHttpServer` is called.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { withContext } from '../../lib/errors.js';

export interface HttpListen {
  host: string;
  port: number;
  /** PEM certificate chain and key: HTTPS */
  tls?: { cert: Buffer; key: Buffer } | undefined;
}

export interface HttpServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Anything with a fetch handler (the hono app). */
export interface FetchApp {
  fetch: Parameters<typeof getRequestListener>[0];
}

export async function startHttpServer(app: FetchApp, listen: HttpListen): Promise<HttpServer> {
  const listener = getRequestListener(app.fetch, {
    overrideGlobalObjects: false,
  });
  const common: http.ServerOptions = {
    maxHeaderSize: 16 * 1024,
    headersTimeout: 30_000,
    requestTimeout: 3600_000,
    keepAliveTimeout: 5_000,
  };
  const server = listen.tls
    ? https.createServer({ ...common, cert: listen.tls.cert, key: listen.tls.key }, listener)
    : http.createServer(common, listener);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(withContext(`cannot listen on ${listen.host}:${listen.port}`, err)));
    server.listen(listen.port, listen.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  const shown = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host === '::' ? '[::1]' : host;
  return {
    url: `${listen.tls ? 'https' : 'http'}://${shown}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
