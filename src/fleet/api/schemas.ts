/**
 * The fleet API's wire shapes (zod v4): the server validates requests with them, openapi.ts documents
 * them, and the HTTP client takes its types from them. Times are ISO-8601 strings; versions are the
 * operator's (`{kind, id, version}` → "device 3", "group g1 7"), never an internal number.
 */
import { z } from 'zod/v4';
import { ROLES } from '../identity/roles.js';
import { DEVICE_SORTS } from '../store/devices.js';
import { DEVICE_STATUSES, PROGRESS_STATES } from '../view.js';
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
    user: z.string().nullable().describe('the user; null for an API token made on the server'),
    token: z.string().nullable().describe('the API token’s name when the call came with one'),
    role: RoleSchema,
    via: z.enum(['session', 'token', 'local']),
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
  cursor: z
    .string()
    .regex(/^\d{1,16}$/, 'a cursor from the previous page')
    .optional(),
  actor: z.string().max(200).optional(),
  action: z.string().max(100).optional(),
  failed: boolQuery.optional(),
});
export const AuditPage = z.strictObject({ items: z.array(AuditSchema), next: z.string().nullable() });

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

// ---- devices ---------------------------------------------------------------------------------------
export const TargetRefSchema = named(
  'TargetRef',
  z.strictObject({
    kind: z.enum(['device', 'group', 'local']),
    id: z.string(),
    version: z.number().int(),
    text: z.string().describe('as shown to operators: "device 3", "group g1 7"'),
  }),
  'a target version the operator deployed for a scope',
);
export const DeviceStatusSchema = named('DeviceStatus', z.enum(DEVICE_STATUSES));
export const DeviceSchema = named(
  'Device',
  z.strictObject({
    id: z.string(),
    online: z.boolean(),
    status: DeviceStatusSchema,
    applied: TargetRefSchema.nullable().describe('what the device reports it runs'),
    expected: TargetRefSchema.nullable().describe(
      'the deployment that applies to it now (its own, else its first group with one); null: none or cleared',
    ),
    previous: TargetRefSchema.nullable(),
    targetStatus: z.string().nullable(),
    lastError: z.string().nullable(),
    lastErrorAt: Iso.nullable(),
    rejection: z
      .strictObject({
        kind: z.enum(['device', 'group']),
        id: z.string(),
        version: z.number().int().nullable(),
        at: Iso,
      })
      .nullable()
      .describe('the last target the device refused (wrong key, schema)'),
    platform: z.string().nullable(),
    agentVersion: z.string().nullable(),
    keyId: z.string().nullable().describe('fleet key id the agent trusts'),
    groups: z.array(z.string()).describe('in priority order'),
    labels: z.record(z.string(), z.string()),
    firstSeen: Iso.nullable(),
    lastSeen: Iso.nullable(),
    stateAt: Iso.nullable(),
    enrolledAt: Iso.nullable(),
    revokedAt: Iso.nullable(),
  }),
);
export const ServiceSchema = named(
  'ServiceState',
  z.strictObject({
    app: z.string(),
    service: z.string(),
    image: z.string(),
    state: z.string(),
    health: z.string(),
    restarts: z.number().int(),
    containerId: z.string().nullable(),
    exitCode: z.number().int().nullable(),
    lastError: z.string().nullable(),
    appStatus: z.string(),
  }),
);
export const DeviceDetailSchema = named(
  'DeviceDetail',
  DeviceSchema.extend({
    expected: TargetRefSchema.nullable().describe(
      'the deployment that applies to it now (its own, else its first group with one)',
    ),
    services: z.array(ServiceSchema),
    state: z.unknown().describe('the reported state as the device sent it'),
    info: z.unknown().describe('device info as the device sent it'),
  }),
);
const multi = z
  .union([z.string(), z.array(z.string())])
  .transform((v) => (Array.isArray(v) ? v : [v]))
  .pipe(z.array(z.string().max(200)).max(16));
export const DeviceQuery = z.strictObject({
  online: boolQuery.optional(),
  status: DeviceStatusSchema.optional(),
  group: SafeName.optional(),
  label: multi.optional().describe('key=value (must match) or key (must have); repeatable'),
  platform: z.string().max(64).optional(),
  prefix: z.string().max(128).optional().describe('device id prefix'),
  image: ImageName.optional().describe('devices whose reported state runs this image'),
  revoked: boolQuery.optional(),
  sort: z.enum(DEVICE_SORTS).default('id'),
  order: z.enum(['asc', 'desc']).default('asc'),
  limit: limitQuery(500, 50),
  cursor: z.string().max(512).optional().describe('next from the previous page'),
});
export const DevicePage = named(
  'DevicePage',
  z.strictObject({
    items: z.array(DeviceSchema),
    total: z.number().int().nullable(),
    next: z.string().nullable().describe('pass as cursor for the next page'),
  }),
);

// ---- events, metrics --------------------------------------------------------------------------------
export const EventSchema = named(
  'DeviceEvent',
  z.strictObject({
    id: z.number().int(),
    deviceId: z.string(),
    type: z.string(),
    at: Iso,
    receivedAt: Iso,
    event: z.record(z.string(), z.unknown()),
  }),
);
export const EventQuery = z.strictObject({
  device: SafeName.optional(),
  type: z
    .string()
    .regex(/^[a-z][a-z0-9-]{0,63}$/)
    .optional(),
  since: z.iso.datetime({ offset: true }).optional(),
  limit: limitQuery(500, 50),
  cursor: z
    .string()
    .regex(/^\d{1,16}$/, 'a cursor from the previous page')
    .optional(),
});
export const EventStreamQuery = z.strictObject({
  type: multi.optional().describe('only these event types (repeatable)'),
  device: SafeName.optional().describe('only this device'),
});
export const EventPage = z.strictObject({
  items: z.array(EventSchema),
  total: z.number().int().nullable(),
  next: z.string().nullable(),
});
export const MetricQuery = z.strictObject({
  series: multi.optional().describe('series names (default: all the device has in the range)'),
  from: z.iso.datetime({ offset: true }).optional().describe('default: 1 h before to'),
  to: z.iso.datetime({ offset: true }).optional().describe('default: now'),
  resolution: z.coerce.number().int().positive().optional().describe('bucket width in ms'),
});
export const MetricsSchema = named(
  'DeviceMetrics',
  z.strictObject({
    deviceId: z.string(),
    from: Iso,
    to: Iso,
    series: z.array(
      z.strictObject({
        series: z.string(),
        resolutionMs: z.number().int(),
        points: z.array(
          z.strictObject({
            t: z.number().int().describe('bucket start, ms since the epoch'),
            avg: z.number(),
            min: z.number(),
            max: z.number(),
            last: z.number(),
            count: z.number().int(),
          }),
        ),
      }),
    ),
  }),
);

// ---- deployments (read side) ---------------------------------------------------------------------
export const ScopeSchema = z.strictObject({ kind: z.enum(['device', 'group']), id: z.string() });
export const DeploymentSchema = named(
  'Deployment',
  z.strictObject({
    id: z.number().int(),
    scope: ScopeSchema,
    version: z.number().int(),
    text: z.string(),
    cleared: z.boolean().describe('a signed "no target here": a cleared device override'),
    state: z.enum(['pending', 'published', 'failed']),
    images: z.array(z.strictObject({ name: z.string(), digest: z.string() })),
    createdAt: Iso,
    createdBy: z.string().nullable(),
  }),
);
export const DeploymentQuery = z.strictObject({
  device: SafeName.optional(),
  group: SafeName.optional(),
  limit: limitQuery(500, 50),
  cursor: z
    .string()
    .regex(/^\d{1,16}$/, 'a cursor from the previous page')
    .optional(),
});
export const DeploymentPage = z.strictObject({
  items: z.array(DeploymentSchema),
  total: z.number().int().nullable(),
  next: z.string().nullable(),
});

// ---- changes: labels, deploy, enrollment -------------------------------------------------------------
export const LabelKey = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$/,
    'a label key: 1-63 of [A-Za-z0-9_./-], starting with a letter or digit',
  );
export const LabelValue = z
  .string()
  .regex(/^[A-Za-z0-9_.:/@+-]{0,128}$/, 'a label value: up to 128 of [A-Za-z0-9_.:/@+-]');
export const LabelsPatch = z.strictObject({
  set: z.record(LabelKey, LabelValue).optional(),
  remove: z.array(LabelKey).max(64).optional(),
});
export const LabelsSchema = z.strictObject({ labels: z.record(z.string(), z.string()) });

export const DeployRequest = z
  .strictObject({
    device: SafeName.optional().describe('deploy to one device (its own target, an override)'),
    group: SafeName.optional().describe('deploy to every device of a group'),
    apps: z.unknown().optional().describe("the agent's target apps (with images)"),
    images: z
      .array(ImageName)
      .max(256)
      .optional()
      .describe('name:tag the apps use (pinned to the fleet digests)'),
    file: z
      .strictObject({
        name: z
          .string()
          .max(255)
          .describe('its name decides the format: .yml/.yaml compose, else target JSON'),
        text: z.string().max(1024 * 1024),
      })
      .optional()
      .describe('a docker-compose file, a target JSON or a deploy file, as text'),
    app: SafeName.optional().describe('app name for a compose file (default: its name: key)'),
    allowUnknown: z.boolean().optional().describe('deploy to a device id the fleet has never seen'),
  })
  .refine((r) => (r.device === undefined) !== (r.group === undefined), {
    message: 'give exactly one of device or group',
    path: ['device'],
  })
  .refine((r) => (r.file === undefined) !== (r.apps === undefined), {
    message: 'give apps (+ images) or file, not both',
    path: ['apps'],
  });
export const ValidationSchema = named(
  'DeployValidation',
  z.strictObject({
    ok: z.literal(true),
    scope: ScopeSchema,
    images: z.array(z.strictObject({ name: z.string(), digest: z.string() })),
    apps: z.array(z.string()),
    bytes: z.number().int().describe('size of the signed target; the agent takes at most 1 MiB'),
  }),
);
export const DeploymentParams = z.strictObject({ id: z.coerce.number().int().positive() });
export const ProgressSchema = named(
  'DeploymentProgress',
  z.strictObject({
    deployment: DeploymentSchema,
    total: z.number().int(),
    converged: z.number().int(),
    pending: z.number().int(),
    failed: z.number().int(),
    done: z.boolean().describe('every device answered: converged, rejected, failed or superseded'),
    ok: z.boolean().describe('no device rejected or failed'),
    devices: z.array(
      z.strictObject({
        deviceId: z.string(),
        state: z.enum(PROGRESS_STATES),
        online: z.boolean(),
        reported: z.string(),
        detail: z.string().optional(),
      }),
    ),
  }),
);

export const EnrollmentTokenSchema = named(
  'EnrollmentToken',
  z.strictObject({
    id: z.string(),
    groups: z.array(z.string()),
    labels: z.record(z.string(), z.string()),
    expiresAt: Iso,
    maxUses: z.number().int().nullable(),
    uses: z.number().int(),
    createdAt: Iso,
    createdBy: z.string().nullable(),
    revokedAt: Iso.nullable(),
  }),
);
export const EnrollmentCreate = z.strictObject({
  groups: z.array(SafeName).max(16).optional(),
  labels: z.record(LabelKey, LabelValue).optional(),
  expiresInMs: z
    .number()
    .int()
    .min(1000)
    .max(365 * 24 * 3600_000),
  maxUses: z.number().int().min(1).max(1_000_000).optional(),
});
export const EnrollmentCreated = z.strictObject({
  token: z.string().describe('bet_<id>_<secret>: shown this once'),
  info: EnrollmentTokenSchema,
});
export const EnrollmentList = z.strictObject({ items: z.array(EnrollmentTokenSchema) });
export const EnrollmentParams = z.strictObject({
  id: z.string().regex(/^[0-9a-f]{6,32}$/, 'an enrollment token id'),
});

export type Device = z.output<typeof DeviceSchema>;
export type DeviceDetail = z.output<typeof DeviceDetailSchema>;
export type DevicePageT = z.output<typeof DevicePage>;
export type DeviceQueryInput = z.output<typeof DeviceQuery>;
export type DeviceEvent = z.output<typeof EventSchema>;
export type EventQueryInput = z.output<typeof EventQuery>;
export type Metrics = z.output<typeof MetricsSchema>;
export type MetricQueryInput = z.output<typeof MetricQuery>;
export type Deployment = z.output<typeof DeploymentSchema>;
export type DeploymentQueryInput = z.output<typeof DeploymentQuery>;
export type TargetRefWire = z.output<typeof TargetRefSchema>;
export type Page<T> = { items: T[]; total: number | null; next: string | null };
export type DeployRequestBody = z.input<typeof DeployRequest>;
export type DeployValidation = z.output<typeof ValidationSchema>;
export type DeploymentProgress = z.output<typeof ProgressSchema>;
export type EnrollmentToken = z.output<typeof EnrollmentTokenSchema>;
export type EnrollmentCreateBody = z.input<typeof EnrollmentCreate>;
export type User = z.output<typeof UserSchema>;
export type Session = z.output<typeof SessionSchema>;
export type ApiToken = z.output<typeof TokenSchema>;
export type AuditEntry = z.output<typeof AuditSchema>;
export type Image = z.output<typeof ImageSchema>;
export type CommandAnswer = z.output<typeof CommandAnswerSchema>;
export type CommandRequestBody = z.input<typeof CommandRequest>;
