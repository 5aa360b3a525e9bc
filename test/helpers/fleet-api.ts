/**
 * The fleet API on a loopback port (port 0) over a temp identity database, for tests that speak real
 * HTTP to it; plus small fetch helpers that keep cookies and the CSRF token like a browser would.
 */
import { generateKeyPairSync } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { ContentStore } from '../../src/content/store.js';
import { type Db, openDatabase } from '../../src/db/database.js';
import { serveFleetApi, startFleetApi } from '../../src/fleet/api/index.js';
import type { SseOptions } from '../../src/fleet/api/sse.js';
import type { FleetBus } from '../../src/fleet/bus.js';
import type { CommandService } from '../../src/fleet/commands.js';
import type { EmbeddedAsset } from '../../src/fleet/console/assets.js';
import { type IdentityOptions, IdentityService } from '../../src/fleet/identity/service.js';
import { IdentityStore } from '../../src/fleet/identity/store.js';
import { loadFleetPrivateKey } from '../../src/fleet/keys.js';
import { FleetOperations } from '../../src/fleet/operations.js';
import { createFleetServices, type FleetServices } from '../../src/fleet/services/index.js';
import { type FleetStores, fleetStoresOn } from '../../src/fleet/store/index.js';
import { FLEET_MIGRATIONS } from '../../src/fleet/store/migrations.js';
import { FLEET, type FleetSide, testLog } from './fleet-harness.js';

/**
 * The API (and the console, when given) on a real fleet server, as `berth fleet serve --http` starts it — its
 * stores, services (the running rollout driver), bus (the SSE stream) and connection — on a loopback port.
 */
export async function serveApiOn(
  t: ExecutionContext,
  fleet: FleetSide,
  o: { console?: EmbeddedAsset[] } = {},
): Promise<Awaited<ReturnType<typeof serveFleetApi>>> {
  const api = await serveFleetApi({
    served: {
      fleet: FLEET,
      stores: fleet.stores,
      services: fleet.server.services,
      bus: fleet.server.bus,
      conn: fleet.server.conn,
    },
    privateKey: await loadFleetPrivateKey(fleet.dir),
    content: { store: fleet.store, db: fleet.db },
    log: testLog(),
    version: 'test',
    listen: { host: '127.0.0.1', port: 0 },
    ...(o.console ? { console: o.console } : {}),
  });
  t.teardown(() => api.server.close());
  return api;
}

export interface ApiSide {
  url: string;
  identity: IdentityService;
  ops: FleetOperations;
  stores: FleetStores;
  services: FleetServices;
  content: { store: ContentStore; db: Db };
  /** what the deploy service published */
  published: Array<{ topic: string; payload: Buffer; retain: boolean }>;
}

export async function startApi(
  t: ExecutionContext,
  o: {
    identity?: IdentityOptions;
    commands?: () => Promise<CommandService>;
    bus?: FleetBus;
    sse?: SseOptions;
    maxUploadBytes?: number;
    tls?: { cert: Buffer; key: Buffer };
  } = {},
): Promise<ApiSide> {
  const db = openDatabase(':memory:', { migrations: FLEET_MIGRATIONS });
  const stores = fleetStoresOn(db);
  const identity = new IdentityService(new IdentityStore(db), o.identity);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-api-'));
  const contentDb = openDatabase(path.join(dir, 'berth.db'));
  const content = { store: new ContentStore(path.join(dir, 'content')), db: contentDb };
  const published: Array<{ topic: string; payload: Buffer; retain: boolean }> = [];
  const services = createFleetServices({
    stores,
    store: content.store,
    fleet: FLEET,
    privateKey: generateKeyPairSync('ed25519').privateKey,
    // targets the API signs land here (no broker in these tests)
    publisher: () => ({
      publish: async (topic, payload, opts) => {
        published.push({ topic, payload, retain: opts.retain === true });
      },
    }),
    log: testLog(),
    ...(o.bus ? { bus: o.bus } : {}),
  });
  const ops = new FleetOperations({
    identity,
    stores,
    services: () => services,
    content,
    commands: o.commands ?? (() => Promise.reject(new Error('no MQTT in this test'))),
  });
  const server = await startFleetApi({
    ops,
    identity,
    log: testLog(),
    version: 'test',
    listen: { host: '127.0.0.1', port: 0, tls: o.tls },
    validateResponses: true,
    bus: o.bus,
    sse: o.sse,
    maxUploadBytes: o.maxUploadBytes,
  });
  t.teardown(async () => {
    await server.close();
    db.close();
    contentDb.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });
  return { url: server.url, identity, ops, stores, services, content, published };
}

export interface Answer {
  status: number;
  body: Record<string, unknown> & { code?: string; message?: string };
  headers: Headers;
}

/** One HTTP caller: a bearer token, or a cookie jar + CSRF token after login(). */
export class Caller {
  cookie: string | undefined;
  csrf: string | undefined;
  constructor(
    readonly base: string,
    public token?: string,
  ) {}

  async call(
    method: string,
    path: string,
    body?: unknown,
    o: { raw?: string | Buffer; headers?: Record<string, string>; csrf?: boolean } = {},
  ): Promise<Answer> {
    const headers: Record<string, string> = { ...o.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (this.cookie) headers.cookie = this.cookie;
    if (this.csrf && o.csrf !== false) headers['x-csrf-token'] = this.csrf;
    let payload: string | Buffer | undefined = o.raw;
    if (body !== undefined) payload = JSON.stringify(body);
    if (payload !== undefined) headers['content-type'] ??= 'application/json';
    const res = await fetch(`${this.base}/api/v1${path}`, { method, headers, body: payload });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : {}, headers: res.headers };
  }

  async login(name: string, password: string): Promise<Answer> {
    const r = await this.call('POST', '/session', { name, password });
    const set = r.headers.getSetCookie()[0];
    if (r.status === 200 && set) {
      this.cookie = set.split(';')[0];
      this.csrf = r.body.csrfToken as string;
    }
    return r;
  }
}
