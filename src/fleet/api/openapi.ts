/**
 * The OpenAPI 3.1 document of the fleet API, generated from the routes' own zod (v4) schemas
 * (`z.toJSONSchema`, JSON Schema 2020-12 — OpenAPI 3.1's dialect). Schemas registered in `components`
 * (with an id) become `#/components/schemas/<id>` references; everything else is inlined.
 */
import { z } from 'zod/v4';
import { API_PREFIX, CSRF_HEADER, SESSION_COOKIE } from './app.js';
import type { RouteSpec } from './route.js';

/** Named schemas: `components.add(schema, { id: 'Device' })` in schemas.ts. */
export const components = z.registry<{ id: string; description?: string }>();

type Json = Record<string, unknown>;

const ERROR_STATUSES: Record<string, string> = {
  '400': 'invalid input: malformed JSON, a body over its limit, unknown or bad fields (named in the message)',
  '401': 'no credentials, or an unknown, expired or revoked token / session',
  '403': 'the caller’s role is not enough, or a cookie call without the CSRF header',
  '404': 'not found',
  '409': 'conflict with the current state',
  '429': 'too many attempts; see Retry-After',
};

export function openApiDocument(routes: RouteSpec[], info: { version: string }): Json {
  const defs: Record<string, Json> = {};
  const convert = (schema: z.ZodType, io: 'input' | 'output'): Json => {
    const json = z.toJSONSchema(schema, {
      target: 'draft-2020-12',
      metadata: components,
      io,
      unrepresentable: 'any',
      reused: 'inline',
    }) as Json;
    const local = (json.$defs ?? {}) as Record<string, Json>;
    for (const [id, def] of Object.entries(local)) defs[id] ??= rewriteRefs(clean(def)) as Json;
    delete json.$defs;
    delete json.$schema;
    return rewriteRefs(clean(json)) as Json;
  };
  const paths: Record<string, Record<string, Json>> = {};
  for (const r of routes) {
    const parameters: Json[] = [];
    for (const [where, schema] of [
      ['path', r.params],
      ['query', r.query],
    ] as const) {
      if (!schema) continue;
      const obj = convert(schema, 'input') as { properties?: Record<string, Json>; required?: string[] };
      for (const [name, s] of Object.entries(obj.properties ?? {})) {
        const { description, ...rest } = s;
        parameters.push({
          name,
          in: where,
          required: where === 'path' || (obj.required ?? []).includes(name),
          ...(description ? { description } : {}),
          schema: rest,
        });
      }
    }
    const op: Json = {
      operationId: operationId(r),
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      tags: [r.tag],
      ...(parameters.length ? { parameters } : {}),
      security: r.auth === 'public' ? [] : [{ bearerAuth: [] }, { sessionCookie: [], csrfHeader: [] }],
      'x-berth-role': r.auth,
      ...(r.audit ? { 'x-berth-audit': r.audit } : {}),
      responses: {
        [String(r.status ?? 200)]: r.stream
          ? {
              description: 'Server-Sent Events',
              content: { 'text/event-stream': { schema: { type: 'string' } } },
            }
          : r.status === 204
            ? { description: 'done' }
            : {
                description: 'ok',
                content: { 'application/json': { schema: convert(r.response, 'output') } },
              },
        ...Object.fromEntries(
          Object.entries(ERROR_STATUSES)
            .filter(
              ([s]) => !(r.auth === 'public' && (s === '401' || s === '403')) || r.audit === 'user.login',
            )
            .map(([s, d]) => [
              s,
              {
                description: d,
                content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
              },
            ]),
        ),
      },
    };
    if (r.body)
      op.requestBody = {
        required: true,
        content: { 'application/json': { schema: convert(r.body, 'input') } },
      };
    if (r.upload)
      op.requestBody = {
        required: true,
        description: r.upload.description,
        content: Object.fromEntries(
          r.upload.contentTypes.map((t) => [t, { schema: { type: 'string', contentMediaType: t } }]),
        ),
      };
    const p = API_PREFIX + r.path;
    paths[p] ??= {};
    paths[p][r.method] = op;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'berth fleet API',
      version: info.version,
      description:
        'Management API of a berth fleet server. Authenticate with `Authorization: Bearer <API token>` ' +
        `or a session cookie (${SESSION_COOKIE}, from POST ${API_PREFIX}/session) plus the ${CSRF_HEADER} header on ` +
        'changing calls. Errors are {code, message, details}.',
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    paths,
    components: {
      schemas: {
        ...defs,
        Error: {
          type: 'object',
          required: ['code', 'message', 'details'],
          properties: {
            code: { type: 'string', description: 'berth error code: NotFound, InvalidInput, Conflict, …' },
            message: { type: 'string' },
            details: { type: 'object' },
          },
        },
      },
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', description: 'API token (berth fleet token create)' },
        sessionCookie: { type: 'apiKey', in: 'cookie', name: SESSION_COOKIE },
        csrfHeader: { type: 'apiKey', in: 'header', name: CSRF_HEADER },
      },
    },
  };
}

function operationId(r: RouteSpec): string {
  const words = r.path
    .split('/')
    .filter(Boolean)
    .map((w) => w.replace(/[{}]/g, '').replace(/-(\w)/g, (_, ch: string) => ch.toUpperCase()));
  return [r.method, ...words.map((w) => w[0]!.toUpperCase() + w.slice(1))].join('');
}

/** zod's `id` metadata is not a JSON Schema keyword; drop it. */
function clean(s: Json): Json {
  const { id: _id, ...rest } = s;
  return rest;
}

function rewriteRefs(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(rewriteRefs);
  if (v && typeof v === 'object') {
    const out: Json = {};
    for (const [k, x] of Object.entries(v))
      out[k] =
        k === '$ref' && typeof x === 'string'
          ? x.replace('#/$defs/', '#/components/schemas/')
          : rewriteRefs(x);
    return out;
  }
  return v;
}
