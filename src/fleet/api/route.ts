/**
 * One route of the fleet API, declared once: method, path, the role it needs, the audit action it writes,
 * and the zod (v4) schemas of its path params, query, body and response. The same declaration drives
 * request validation (app.ts) and the OpenAPI 3.1 document (openapi.ts), so the two cannot drift.
 */
import type { IncomingMessage } from 'node:http';
import type { z } from 'zod/v4';
import type { Role } from '../identity/roles.js';
import type { Actor } from '../identity/service.js';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';

export interface RouteInput<P, Q, B> {
  params: P;
  query: Q;
  body: B;
  actor: Actor;
  /** remote address of the caller */
  source: string;
  /** the raw request, for streamed uploads (`upload` routes) */
  incoming: IncomingMessage;
  /** add a response header (Set-Cookie …) */
  header(name: string, value: string): void;
  /** name what the call acts on, for the audit row, when the path does not say it */
  auditTarget(target: string): void;
  /** a note for the audit row when the call succeeds (a failure's row holds its error instead) */
  auditNote(note: string): void;
  signal: AbortSignal;
}

export interface RouteSpec<
  P extends z.ZodType = z.ZodType,
  Q extends z.ZodType = z.ZodType,
  B extends z.ZodType = z.ZodType,
  R extends z.ZodType = z.ZodType,
> {
  method: Method;
  /** under /api/v1, OpenAPI style: `/devices/{id}` */
  path: string;
  summary: string;
  description?: string;
  tag: string;
  /** the least role that may call it; `public` needs no credentials */
  auth: Role | 'public';
  /** audit action written for every call (success or failure); every non-GET route has one */
  audit?: string;
  params?: P;
  query?: Q;
  body?: B;
  /** a raw streamed request body instead of JSON (image upload): its content types and size cap */
  upload?: { contentTypes: string[]; description: string };
  /** JSON body cap in bytes (default 1 MiB) */
  maxBody?: number;
  response: R;
  /** success status; 204 sends no body */
  status?: 200 | 201 | 202 | 204;
  /** `text/event-stream` (SSE) instead of JSON: the handler returns a Response */
  stream?: boolean;
  handler(
    input: RouteInput<z.output<P>, z.output<Q>, z.output<B>>,
  ): Promise<z.input<R> | Response> | z.input<R> | Response;
}

/** Identity function that keeps each route's schema types tied to its handler. */
export function route<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType, R extends z.ZodType>(
  spec: RouteSpec<P, Q, B, R>,
): RouteSpec {
  return spec as unknown as RouteSpec;
}
