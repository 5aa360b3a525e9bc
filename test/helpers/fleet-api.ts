/**
 * The fleet API on a loopback port (port 0) over a temp identity database, for tests that speak real
 * HTTP to it; plus small fetch helpers that keep cookies and the CSRF token like a browser would.
 */
import type { ExecutionContext } from 'ava';
import { openDatabase } from '../../src/db/database.js';
import { startFleetApi } from '../../src/fleet/api/index.js';
import type { BusEvent, EventBusLike, SseOptions } from '../../src/fleet/api/sse.js';
import type { CommandService } from '../../src/fleet/commands.js';
import { type IdentityOptions, IdentityService } from '../../src/fleet/identity/service.js';
import { IdentityStore } from '../../src/fleet/identity/store.js';
import { FleetOperations } from '../../src/fleet/operations.js';
import type { ReleaseService } from '../../src/fleet/services/releases.js';
import { type FleetStores, fleetStoresOn } from '../../src/fleet/store/index.js';
import { FLEET_MIGRATIONS } from '../../src/fleet/store/migrations.js';
import { testLog } from './fleet-harness.js';

export interface ApiSide {
  url: string;
  identity: IdentityService;
  ops: FleetOperations;
  stores: FleetStores;
}

export async function startApi(
  t: ExecutionContext,
  o: {
    identity?: IdentityOptions;
    commands?: () => Promise<CommandService>;
    bus?: EventBusLike;
    sse?: SseOptions;
    /** agent releases over the API's stores (DELETE /releases needs it) */
    releases?: (stores: FleetStores) => ReleaseService;
  } = {},
): Promise<ApiSide> {
  const db = openDatabase(':memory:', { migrations: FLEET_MIGRATIONS });
  const stores = fleetStoresOn(db);
  const identity = new IdentityService(new IdentityStore(db), o.identity);
  const ops = new FleetOperations({
    identity,
    stores,
    commands: o.commands ?? (() => Promise.reject(new Error('no MQTT in this test'))),
    ...(o.releases ? { releases: () => o.releases!(stores) } : {}),
  });
  const server = await startFleetApi({
    ops,
    identity,
    log: testLog(),
    version: 'test',
    listen: { host: '127.0.0.1', port: 0 },
    validateResponses: true,
    bus: o.bus,
    sse: o.sse,
  });
  t.teardown(async () => {
    await server.close();
    db.close();
  });
  return { url: server.url, identity, ops, stores };
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

/** A synchronous in-process bus for API tests that publish events themselves. */
export class TestBus implements EventBusLike {
  private readonly subs = new Set<(e: BusEvent) => void>();
  subscribe(fn: (e: BusEvent) => void): () => void {
    this.subs.add(fn);
    return () => this.subs.delete(fn);
  }
  publish(e: BusEvent): void {
    for (const fn of this.subs) fn(e);
  }
  get listeners(): number {
    return this.subs.size;
  }
}
