/**
 * The fleet API's wire shapes (zod v4): the server validates requests with them, openapi.ts documents
 * them, and the HTTP client takes its types from them. Times are ISO-8601 strings; versions are the
 * operator's (`{kind, id, version}` → "device 3", "group g1 7"), never an internal number.
 */
import { z } from 'zod/v4';
import { ROLES } from '../identity/roles.js';
import { components } from './openapi.js';

const named = <T extends z.ZodType>(id: string, schema: T, description?: string): T => {
  components.add(schema, { id, ...(description ? { description } : {}) });
  return schema;
};

export const Iso = z.string().describe('ISO-8601 time');
export const RoleSchema = named('Role', z.enum(ROLES), 'viewer < operator < admin');

/** A safe name: topic level, path component (device id, group, app, service). */
export const SafeName = z
  .string()
  .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/, 'use 1-128 of [A-Za-z0-9_.-], not starting with . or -')
  .refine((s) => s !== '.' && s !== '..', 'not . or ..');

/** An image reference name[:tag] (docker grammar, lower-case repository): no `..`, no empty components. */
export const ImageName = z
  .string()
  .max(255)
  .regex(
    /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$/,
    'expected name[:tag]: lower-case components of [a-z0-9._-] separated by /',
  );

const boolQuery = z.enum(['true', 'false']).transform((v) => v === 'true');
export const limitQuery = (max: number, dflt: number) =>
  z.coerce.number().int().min(1).max(max).default(dflt).describe(`page size, 1-${max}`);

export const Empty = z.strictObject({});
export const Ok = named('Ok', z.strictObject({ ok: z.literal(true) }));

// ---- session, users, tokens, audit ---------------------------------------------------------------
export const UserSchema = named(
  'User',
  z.strictObject({ name: z.string(), role: RoleSchema, createdAt: Iso }),
);
export const UserList = z.strictObject({ items: z.array(UserSchema) });
export const UserName = z
  .string()
  .regex(/^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$/, 'use 1-64 of [A-Za-z0-9_.@-]');
export const Password = z.string().min(8, 'at least 8 characters').max(1024);
export const UserCreate = z.strictObject({ name: UserName, role: RoleSchema, password: Password });
export const UserUpdate = z.strictObject({
  role: RoleSchema.optional(),
  password: Password.optional(),
  /** a user changing their own password confirms the old one */
  currentPassword: z.string().max(1024).optional(),
});

export const SessionSchema = named(
  'Session',
  z.strictObject({
    user: z.string(),
    role: RoleSchema,
    via: z.enum(['session', 'token']),
    csrfToken: z.string().nullable().describe('send back in the X-CSRF-Token header on changing calls'),
    expiresAt: Iso.nullable(),
  }),
);
export const LoginRequest = z.strictObject({ name: z.string().max(64), password: z.string().max(1024) });
export const SetupRequest = z.strictObject({
  token: z.string().max(128),
  name: UserName,
  password: Password,
});

export const TokenSchema = named(
  'ApiToken',
  z.strictObject({
    id: z.string(),
    name: z.string(),
    role: RoleSchema,
    user: z.string().nullable().describe('creator; null: made on the server'),
    createdAt: Iso,
    expiresAt: Iso.nullable(),
    revokedAt: Iso.nullable(),
    lastUsedAt: Iso.nullable(),
    state: z.enum(['active', 'expired', 'revoked']),
  }),
);
export const TokenList = z.strictObject({ items: z.array(TokenSchema) });
export const TokenCreate = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.@ -]{0,63}$/, 'use 1-64 of [A-Za-z0-9_.@ -]'),
  role: RoleSchema,
  expiresAt: z.iso.datetime({ offset: true }).optional(),
});
export const TokenCreated = z.strictObject({
  token: z.string().describe('the secret: shown this once, stored hashed'),
  info: TokenSchema,
});

export const AuditSchema = named(
  'AuditEntry',
  z.strictObject({
    id: z.number().int(),
    at: Iso,
    actor: z.string(),
    role: RoleSchema.nullable(),
    action: z.string(),
    target: z.string().nullable(),
    source: z.string(),
    result: z.string().describe('ok, or the error code'),
    status: z.number().int().nullable(),
    message: z.string().nullable(),
  }),
);
export const AuditQuery = z.strictObject({
  limit: limitQuery(500, 100),
  before: z.coerce.number().int().positive().optional().describe('id of the last row of the previous page'),
  actor: z.string().max(200).optional(),
  action: z.string().max(100).optional(),
  failed: boolQuery.optional(),
});
export const AuditPage = z.strictObject({ items: z.array(AuditSchema), next: z.number().int().nullable() });

// ---- images ---------------------------------------------------------------------------------------
export const ImageSchema = named(
  'Image',
  z.strictObject({
    name: z.string(),
    digest: z.string(),
    mediaType: z.string(),
    size: z.number().int(),
    totalSize: z.number().int(),
    platforms: z.array(z.string()),
    pushedAt: Iso,
  }),
);
export const ImageList = z.strictObject({ items: z.array(ImageSchema) });
export const ImagePushQuery = z.strictObject({ tag: ImageName });
export const ImageParams = z.strictObject({ name: ImageName });

// ---- commands ---------------------------------------------------------------------------------------
export const CommandRequest = z.strictObject({
  kind: z.enum(['restart', 'logs', 'report', 'purgeVolume']),
  app: SafeName.optional(),
  service: SafeName.optional(),
  tail: z.number().int().min(1).max(10_000).optional(),
  volume: SafeName.optional(),
  force: z.boolean().optional(),
  timeoutMs: z.number().int().min(1).max(600_000).optional().describe('how long to wait for the answer'),
  expiresS: z.number().int().min(1).max(86_400).optional().describe('the device refuses it after this'),
});
export const CommandAnswerSchema = named(
  'CommandAnswer',
  z.strictObject({
    id: z.string(),
    deviceId: z.string(),
    kind: z.string(),
    ok: z.boolean(),
    result: z.unknown().optional(),
    error: z.strictObject({ code: z.string(), message: z.string() }).optional(),
  }),
);
export const DeviceParams = z.strictObject({ id: SafeName });

export type User = z.output<typeof UserSchema>;
export type Session = z.output<typeof SessionSchema>;
export type ApiToken = z.output<typeof TokenSchema>;
export type AuditEntry = z.output<typeof AuditSchema>;
export type Image = z.output<typeof ImageSchema>;
export type CommandAnswer = z.output<typeof CommandAnswerSchema>;
export type CommandRequestBody = z.input<typeof CommandRequest>;
