/**
 * The fleet API's request pipeline, the same for every route (see route.ts):
 *   credentials (Bearer token or session cookie) → role → CSRF (cookie callers, unsafe methods) →
 *   path/query/body parsed and checked against the route's schemas → handler → JSON (or SSE) →
 *   audit row for every call of an audited route, refused ones included.
 * Errors are `{code, message, details}` with the berth error code and its HTTP status (HTTP_STATUS).
 */
import type { IncomingMessage } from 'node:http';
import type { HttpBindings } from '@hono/node-server';
import { type Context, Hono } from 'hono';
import type { z } from 'zod/v4';
import {
  BerthError,
  errorMessage,
  HTTP_STATUS,
  invalidInput,
  notFound,
  permissionDenied,
  unauthenticated,
} from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import type { ConsoleAssets } from '../console/assets.js';
import { roleAllows } from '../identity/roles.js';
import { safeEqual } from '../identity/secrets.js';
import { type Actor, ANONYMOUS, actorLabel, type IdentityService } from '../identity/service.js';
import { DEFAULT_MAX_BODY, parseJsonBody, readBody } from './json.js';
import type { RouteSpec } from './route.js';

export const API_PREFIX = '/api/v1';
export const SESSION_COOKIE = 'berth_session';
export const CSRF_HEADER = 'x-csrf-token';

export interface AppOptions {
  identity: IdentityService;
  log: Logger;
  /** check every response against its schema (tests): a mismatch is a 500 */
  validateResponses?: boolean;
  /** the web console's files, served outside /api (src/fleet/console/) */
  console?: ConsoleAssets | undefined;
}

type Env = { Bindings: HttpBindings };

const UNSAFE = new Set(['post', 'put', 'patch', 'delete']);

export function buildApp(routes: RouteSpec[], opts: AppOptions): Hono<Env> {
  const app = new Hono<Env>();
  for (const spec of routes) {
    if (UNSAFE.has(spec.method) && !spec.audit && spec.auth !== 'public')
      throw new Error(`route ${spec.method} ${spec.path} changes the fleet but writes no audit row`);
    app.on(spec.method.toUpperCase(), API_PREFIX + spec.path.replace(/\{(\w+)\}/g, ':$1'), (c) =>
      handle(c, spec, opts),
    );
  }
  app.all('*', (c) => {
    const pathname = new URL(c.req.url).pathname;
    if (opts.console && !pathname.startsWith(`${API_PREFIX}/`)) {
      const page = opts.console.respond(c.req.method, pathname, c.req.raw.headers);
      if (page) return page;
    }
    return errorResponse(c, notFound(`no such API route: ${c.req.method} ${pathname}`));
  });
  return app;
}

async function handle(c: Context<Env>, spec: RouteSpec, opts: AppOptions): Promise<Response> {
  const incoming = c.env.incoming;
  const source = incoming.socket?.remoteAddress ?? 'unknown';
  const extra = new Headers();
  let actor: Actor = ANONYMOUS;
  let target: string | undefined = c.req.param('id') ?? c.req.param('name');
  let note: string | null = null;
  let status = 500;
  let failure: BerthError | undefined;
  const ac = new AbortController();
  incoming.once('close', () => {
    if (!incoming.complete) ac.abort();
  });
  c.env.outgoing.once('close', () => ac.abort());
  try {
    const auth = authenticate(incoming, opts.identity);
    actor = auth.actor;
    if (spec.auth !== 'public') {
      if (auth.error) throw auth.error;
      if (!actor.role)
        throw unauthenticated('no credentials: send Authorization: Bearer <token>, or log in for a session');
      if (!roleAllows(actor.role, spec.auth))
        throw permissionDenied(
          `${actorLabel(actor)} (${actor.role}) may not do this: it needs the ${spec.auth} role`,
        );
      if (auth.via === 'cookie' && UNSAFE.has(spec.method)) checkCsrf(incoming, actor);
    }
    const params = parse(spec.params, c.req.param(), 'path');
    const query = parse(spec.query, queryObject(c), 'query');
    let body: unknown;
    if (spec.body) {
      requireJson(incoming);
      body = parse(
        spec.body,
        parseJsonBody(await readBody(incoming, spec.maxBody ?? DEFAULT_MAX_BODY)),
        'body',
      );
    }
    const out = await spec.handler({
      params,
      query,
      body,
      actor,
      source,
      incoming,
      header: (name, value) => extra.append(name, value),
      auditTarget: (t) => {
        target = t;
      },
      auditNote: (n) => {
        note = n;
      },
      signal: ac.signal,
    });
    status = spec.status ?? 200;
    if (out instanceof Response) return out;
    if (opts.validateResponses && status !== 204) {
      const r = spec.response.safeParse(out);
      if (!r.success)
        throw new BerthError(
          'Internal',
          `response of ${spec.method} ${spec.path} breaks its schema: ${r.error.message}`,
        );
    }
    extra.set('cache-control', 'no-store');
    if (status === 204) return c.body(null, 204, headersObject(extra));
    return c.json(out as object, status as 200, headersObject(extra));
  } catch (err) {
    failure = toBerthError(err, opts.log, spec);
    status = HTTP_STATUS[failure.code];
    return errorResponse(c, failure, extra);
  } finally {
    if (spec.audit) {
      try {
        opts.identity.audit({
          actor: actorLabel(actor),
          role: actor.role,
          action: spec.audit,
          target: target ?? null,
          source,
          result: failure ? failure.code : 'ok',
          status,
          message: failure ? failure.message : note,
        });
      } catch (err) {
        opts.log.error({ err: errorMessage(err), action: spec.audit }, 'audit row not written');
      }
    }
  }
}

interface Auth {
  actor: Actor;
  via: 'bearer' | 'cookie' | 'none';
  /** credentials were sent but are not valid (a route that needs them answers 401 with this) */
  error?: BerthError;
}

export function authenticate(req: IncomingMessage, identity: IdentityService): Auth {
  const header = req.headers.authorization;
  if (header !== undefined) {
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    const actor = m ? identity.tokenActor(m[1]!) : undefined;
    if (!actor)
      return {
        actor: ANONYMOUS,
        via: 'bearer',
        error: unauthenticated('API token not valid (unknown, expired or revoked)'),
      };
    return { actor, via: 'bearer' };
  }
  const cookie = readCookie(req.headers.cookie, SESSION_COOKIE);
  if (cookie) {
    const actor = identity.sessionActor(cookie);
    if (!actor)
      return { actor: ANONYMOUS, via: 'cookie', error: unauthenticated('session expired: log in again') };
    return { actor, via: 'cookie' };
  }
  return { actor: ANONYMOUS, via: 'none' };
}

/** Synchronizer token: the session's CSRF token (GET /api/v1/session) must come back in a header. */
function checkCsrf(req: IncomingMessage, actor: Actor): void {
  const sent = req.headers[CSRF_HEADER];
  if (typeof sent !== 'string' || !actor.csrf || !safeEqual(sent, actor.csrf))
    throw permissionDenied(
      `CSRF token missing or wrong: send the ${CSRF_HEADER} header with the token from GET ${API_PREFIX}/session`,
    );
}

export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header || header.length > 8192) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

function requireJson(req: IncomingMessage): void {
  const type = req.headers['content-type'];
  const length = req.headers['content-length'];
  if (type === undefined && (length === undefined || length === '0')) return; // no body: {}
  if (!type || !/^application\/json\s*(;|$)/i.test(type))
    throw invalidInput(`content-type: expected application/json, got ${type ?? 'none'}`);
}

function queryObject(c: Context<Env>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(c.req.queries())) out[k] = v.length === 1 ? v[0]! : v;
  return out;
}

/** Validate `value` against `schema`; issues become one InvalidInput naming each field (`body.role`). */
export function parse(schema: z.ZodType | undefined, value: unknown, where: string): unknown {
  if (!schema) return undefined;
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issues = r.error.issues.slice(0, 20).map((i) => {
    const path = [where, ...i.path.map(String)].join('.');
    if (i.code === 'unrecognized_keys')
      return {
        path,
        message: `unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => JSON.stringify(k)).join(', ')}`,
      };
    return { path, message: i.message };
  });
  throw new BerthError('InvalidInput', issues.map((i) => `${i.path}: ${i.message}`).join('; '), {
    details: { issues },
  });
}

function toBerthError(err: unknown, log: Logger, spec: RouteSpec): BerthError {
  if (err instanceof BerthError) return err;
  log.error(
    { err: errorMessage(err), stack: (err as Error)?.stack, route: `${spec.method} ${spec.path}` },
    'API handler failed',
  );
  return new BerthError('Internal', 'internal error (see the fleet server log)');
}

export function errorResponse(c: Context<Env>, e: BerthError, extra = new Headers()): Response {
  extra.set('cache-control', 'no-store');
  const retry = e.details?.retryAfterSeconds;
  if (typeof retry === 'number') extra.set('retry-after', String(retry));
  return c.json(
    { code: e.code, message: e.message, details: e.details ?? {} },
    HTTP_STATUS[e.code] as 400,
    headersObject(extra),
  );
}

function headersObject(h: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of h.entries()) {
    if (k === 'set-cookie') out[k] = h.getSetCookie();
    else out[k] = v;
  }
  return out;
}
