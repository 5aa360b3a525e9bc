/**
 * The fleet API's composition: routes over the operations, the hono app, the OpenAPI document and the
 * HTTP(S) listener. Loaded only by `berth fleet serve` (dynamic import), so neither hono nor this code is
 * ever evaluated by `berth agent` or the docker-like commands.
 */
import { z } from 'zod/v4';
import { unavailable } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { ConsoleAssets, type EmbeddedAsset } from '../console/assets.js';
import type { IdentityService } from '../identity/service.js';
import type { FleetOperations, FleetOperationsDeps } from '../operations.js';
import { buildApp } from './app.js';
import type { ApiDeps } from './deps.js';
import { openApiDocument } from './openapi.js';
import type { RouteSpec } from './route.js';
import { route } from './route.js';
import { changeRoutes } from './routes/changes.js';
import { commandRoutes } from './routes/commands.js';
import { fleetReadRoutes } from './routes/fleet.js';
import { identityRoutes } from './routes/identity.js';
import { releaseRoutes } from './routes/releases.js';
import { rolloutRoutes } from './routes/rollouts.js';
import { sessionRoutes } from './routes/session.js';
import { summaryRoutes } from './routes/summary.js';
import { type HttpListen, type HttpServer, startHttpServer } from './server.js';
import { type EventBusLike, SseHub, type SseOptions } from './sse.js';

export interface FleetApiOptions {
  ops: FleetOperations;
  identity: IdentityService;
  log: Logger;
  version: string;
  listen: HttpListen;
  /** the largest image upload (default 4 GiB) */
  maxUploadBytes?: number | undefined;
  /** the fleet's event bus, for the SSE stream */
  bus?: EventBusLike | undefined;
  sse?: SseOptions | undefined;
  /** the web console served at `/` (default: the one embedded in this build; none when run from source) */
  console?: EmbeddedAsset[] | undefined;
  /** tests: check every response against its schema */
  validateResponses?: boolean;
}

export function fleetRoutes(d: ApiDeps): RouteSpec[] {
  const routes: RouteSpec[] = [
    ...sessionRoutes(d),
    ...identityRoutes(d),
    ...fleetReadRoutes(d),
    ...releaseRoutes(d),
    ...changeRoutes(d),
    ...commandRoutes(d),
    ...summaryRoutes(d),
    ...rolloutRoutes(d),
  ];
  let doc: Record<string, unknown> | undefined;
  routes.push(
    route({
      method: 'get',
      path: '/openapi.json',
      tag: 'meta',
      summary: 'This API as an OpenAPI 3.1 document',
      auth: 'public',
      response: z.record(z.string(), z.unknown()),
      handler: () => {
        doc ??= openApiDocument(routes, { version: d.version });
        return doc;
      },
    }),
    route({
      method: 'get',
      path: '/health',
      tag: 'meta',
      summary: 'Liveness and version (no credentials)',
      auth: 'public',
      response: z.strictObject({ ok: z.literal(true), version: z.string() }),
      handler: () => ({ ok: true as const, version: d.version }),
    }),
  );
  return routes;
}

export async function startFleetApi(o: FleetApiOptions): Promise<HttpServer> {
  const deps: ApiDeps = {
    ops: o.ops,
    identity: o.identity,
    log: o.log,
    secureCookies: o.listen.tls !== undefined,
    version: o.version,
    events: o.bus ? new SseHub(o.bus, o.sse) : undefined,
    maxUploadBytes: o.maxUploadBytes ?? 4 * 1024 * 1024 * 1024,
  };
  const files = o.console ?? (await import('../console/embedded.js')).EMBEDDED_CONSOLE;
  const app = buildApp(fleetRoutes(deps), {
    identity: o.identity,
    log: o.log,
    console: files.length ? new ConsoleAssets(files) : undefined,
    validateResponses: o.validateResponses ?? false,
  });
  const server = await startHttpServer(app, o.listen);
  const housekeeping = setInterval(() => {
    try {
      o.identity.prune();
    } catch (err) {
      o.log.warn({ err: (err as Error).message }, 'identity housekeeping failed');
    }
  }, 3600_000);
  housekeeping.unref();
  return {
    ...server,
    close: async () => {
      clearInterval(housekeeping);
      await server.close();
    },
  };
}

/** What `fleet serve` hands the HTTP side: its running server's parts. */
export interface ServedFleet {
  fleet: string;
  stores: import('../store/index.js').FleetStores;
  services: import('../services/index.js').FleetServices;
  bus: EventBusLike;
  conn: import('../commands.js').CommandLink | undefined;
}

/**
 * The HTTP side of `berth fleet serve`, over a started FleetServer: identity on the same fleet.db, the
 * operations over its services, signed commands on its MQTT connection, SSE from its bus. While the
 * fleet has no user, a one-time setup token is made (the caller prints it).
 */
export async function serveFleetApi(o: {
  served: ServedFleet;
  privateKey: import('node:crypto').KeyObject;
  content: FleetOperationsDeps['content'];
  log: Logger;
  version: string;
  listen: HttpListen;
  maxUploadBytes?: number | undefined;
  /** the web console's files (default: the ones embedded in this build) */
  console?: EmbeddedAsset[] | undefined;
}): Promise<{ server: HttpServer; setupToken: string | undefined }> {
  const { IdentityService } = await import('../identity/service.js');
  const { IdentityStore } = await import('../identity/store.js');
  const { FleetOperations } = await import('../operations.js');
  const { CommandService } = await import('../commands.js');
  const { served } = o;
  const identity = new IdentityService(new IdentityStore(served.stores.db));
  let commands: InstanceType<typeof CommandService> | undefined;
  const ops = new FleetOperations({
    identity,
    stores: served.stores,
    services: () => served.services,
    content: o.content,
    commands: async () => {
      if (!served.conn) throw unavailable('the fleet server is not connected to its broker');
      commands ??= new CommandService({
        fleet: served.fleet,
        link: served.conn,
        privateKey: o.privateKey,
        log: o.log,
      });
      await commands.start();
      return commands;
    },
  });
  const server = await startFleetApi({
    ops,
    identity,
    log: o.log,
    version: o.version,
    listen: o.listen,
    bus: served.bus,
    maxUploadBytes: o.maxUploadBytes,
    console: o.console,
  });
  return {
    server: {
      ...server,
      close: async () => {
        commands?.stop();
        await server.close();
      },
    },
    setupToken: identity.beginSetup(),
  };
}
