/**
 * The fleet API's wire shapes (zod v4): the server validates requests with them, openapi.ts documents
 * them, and the HTTP client takes its types from them. Times are ISO-8601 strings; versions are the
 * operator's (`{kind, id, version}` → "device 3", "group g1 7"), never an internal number.
 */
import { z } from 'zod/v4';
import { VERSION_PATTERN } from '../../core/self-update.js';
import { ROLES } from '../identity/roles.js';
import { ROLLOUT_STATES } from '../rollouts/machine.js';
import { MAX_REDEPLOY_REASON } from '../services/redeploy.js';
import { DEVICE_SORTS } from '../store/devices.js';
import { DEVICE_STATUSES, PROGRESS_STATES } from '../view.js';
import { components } from './openapi.js';

export const named = <T extends z.ZodType>(id: string, schema: T, description?: string): T => {
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

// ---- agent releases (docs/self-update.md) -----------------------------------------------------------
export const ReleaseSchema = named(
  'Release',
  z.strictObject({
    version: z.string(),
    manifest: z.strictObject({ digest: z.string(), size: z.number().int() }),
    artifacts: z.record(
      z.string(),
      z.strictObject({ digest: z.string(), size: z.number().int(), node: z.string().optional() }),
    ),
    database: z.strictObject({ schema: z.number().int(), minSchema: z.number().int() }),
    config: z.strictObject({ format: z.number().int(), minFormat: z.number().int() }),
    createdAt: Iso,
    createdBy: z.string().nullable(),
  }),
  'an agent release: one executable per platform and the signed manifest targets pin',
);
export const ReleaseList = z.strictObject({ items: z.array(ReleaseSchema) });
export const ReleaseParams = z.strictObject({
  version: z.string().max(64).regex(VERSION_PATTERN, 'expected a version like 1.2.3'),
});
export const ImagePushQuery = z.strictObject({ tag: ImageName });
export const ImageParams = z.strictObject({ name: ImageName });

// ---- commands ---------------------------------------------------------------------------------------
export const CommandRequest = z.strictObject({
  kind: z.enum(['restart', 'logs', 'report', 'purgeVolume', 'retry']),
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
    /** the latest self-update the device reported (docs/self-update.md) */
    agentUpdate: z
      .strictObject({ version: z.string(), phase: z.string(), reason: z.string().optional() })
      .nullable(),
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
    retry: z
      .strictObject({
        at: Iso.describe("when the agent tries again (the device's clock)"),
        attempt: z
          .number()
          .int()
          .describe('consecutive failed or waiting reconcile runs (1: the first retry)'),
        lastError: z.string().nullable().describe('the last failure, `Code: message` (null: the runs wait)'),
      })
      .nullable()
      .describe(
        'the reconcile retry the device reports pending (its `target.retry`, docs/agent.md); null: none. The `retry` command runs it now',
      ),
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
    redeployOf: z
      .number()
      .int()
      .nullable()
      .describe('a redeploy: the id of the earlier deployment whose release it published again'),
    current: z
      .boolean()
      .optional()
      .describe("in lists: this is its scope's current target (what the broker retains for the scope)"),
    rolloutId: z
      .number()
      .int()
      .optional()
      .describe('a group deploy: the one-phase rollout that published it and follows its devices'),
  }),
);
export const RedeployRequest = z.strictObject({
  device: SafeName.optional().describe(
    'the scope the caller means: refused (409) when the deployment is not of it',
  ),
  group: SafeName.optional(),
  reason: z
    .string()
    .max(MAX_REDEPLOY_REASON)
    .optional()
    .describe('why, for the audit log (at most 500 characters)'),
});
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
    agent: z
      .strictObject({
        version: z.string().max(64).regex(VERSION_PATTERN, 'expected a version like 1.2.3'),
        allowDowngrade: z.boolean().optional(),
      })
      .optional()
      .describe(
        'the agent release the devices run (docs/self-update.md); alone (no apps, no file): the current apps stay',
      ),
  })
  .refine((r) => (r.device === undefined) !== (r.group === undefined), {
    message: 'give exactly one of device or group',
    path: ['device'],
  })
  .refine(
    (r) =>
      (r.file === undefined) !== (r.apps === undefined) ||
      (r.file === undefined && r.apps === undefined && r.agent !== undefined),
    {
      message: 'give apps (+ images) or file, not both (or only agent)',
      path: ['apps'],
    },
  );
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
export type Release = z.output<typeof ReleaseSchema>;
export type DeploymentQueryInput = z.output<typeof DeploymentQuery>;
export type RedeployRequestBody = z.output<typeof RedeployRequest>;
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

// ---- rollouts ----------------------------------------------------------------------------------------
const Percent = z.number().min(0).max(100);
export const RolloutStateSchema = named('RolloutState', z.enum(ROLLOUT_STATES));
export const RolloutOutcomeSchema = named(
  'RolloutOutcome',
  z.enum(['queued', 'pending', 'converged', 'failed', 'superseded']),
  'queued: not sent yet; pending: sent, no answer (applying, in its health window, offline); converged: past its health window; failed: rolled back or refused; superseded: another target applies to it now',
);
const PhaseInput = z.union([
  z.number().int().min(1).describe('a device count'),
  z
    .string()
    .regex(/^\d{1,3}(\.\d{1,3})?%$|^\d{1,9}$/, 'a count (5) or a percentage ("10%")')
    .describe('a percentage ("10%") or a count'),
]);
const RolloutFields = {
  name: z
    .string()
    .regex(/^[A-Za-z0-9_][A-Za-z0-9 _.:@/+-]{0,63}$/, 'use 1-64 of [A-Za-z0-9 _.:@/+-]')
    .optional(),
  apps: z
    .unknown()
    .optional()
    .describe("the agent's target apps (with images), as POST /deployments takes them"),
  images: z.array(ImageName).max(256).optional(),
  file: z
    .strictObject({ name: z.string().max(255), text: z.string().max(1024 * 1024) })
    .optional()
    .describe('a docker-compose file, a target JSON or a deploy file, as text'),
  app: SafeName.optional().describe('app name for a compose file'),
  group: SafeName.optional().describe('select the devices of a group (its target is set by the last phase)'),
  selector: z.string().max(1024).optional().describe('select by labels: "site=berlin,tier!=lab"'),
  devices: z.array(SafeName).min(1).max(10_000).optional().describe('select these devices'),
  all: z.literal(true).optional().describe('select every device of the fleet'),
  phases: z
    .array(PhaseInput)
    .min(1)
    .max(32)
    .optional()
    .describe('cumulative sizes, the last "100%" (default ["100%"]): [1, "10%", "100%"]'),
  canaries: z.array(SafeName).max(1000).optional().describe('devices put first (in this order)'),
  successThreshold: Percent.optional().describe(
    '% of a phase converged and healthy before the next (default 100)',
  ),
  errorThreshold: Percent.optional().describe(
    '% of the devices so far that may fail; above it: abort (default 0)',
  ),
  maxPending: Percent.optional().describe(
    '% of a phase that may still be pending when it is judged (default 0)',
  ),
  soakMs: z
    .number()
    .int()
    .min(0)
    .max(30 * 86_400_000)
    .optional()
    .describe('a phase holds its threshold this long'),
  phaseTimeoutMs: z
    .number()
    .int()
    .min(1000)
    .max(30 * 86_400_000)
    .nullable()
    .optional()
    .describe('a phase that has not passed by then aborts the rollout (null: never)'),
  approval: z.boolean().optional().describe('an operator approves each phase after the first'),
  rollback: z
    .boolean()
    .optional()
    .describe('an abort gives moved devices their previous target (default true)'),
};
const oneSelection = (r: { group?: unknown; selector?: unknown; devices?: unknown; all?: unknown }) =>
  [r.group, r.selector, r.devices, r.all].filter((x) => x !== undefined).length === 1;
const oneTarget = (r: { file?: unknown; apps?: unknown }) =>
  (r.file === undefined) !== (r.apps === undefined);
export const RolloutCreate = named(
  'RolloutCreate',
  z
    .strictObject({
      ...RolloutFields,
      draft: z.boolean().optional().describe('store it without starting it'),
    })
    .refine(oneSelection, { message: 'give exactly one of group, selector, devices, all', path: ['group'] })
    .refine(oneTarget, { message: 'give apps (+ images) or file, not both', path: ['apps'] }),
);
export const RolloutValidate = z
  .strictObject(RolloutFields)
  .refine(oneSelection, { message: 'give exactly one of group, selector, devices, all', path: ['group'] })
  .refine(oneTarget, { message: 'give apps (+ images) or file, not both', path: ['apps'] });
export const RolloutAbort = z.strictObject({
  reason: z.string().max(500).optional(),
  rollback: z
    .boolean()
    .optional()
    .describe("default: the rollout's policy (true unless created with rollback false)"),
});
export const RolloutParams = z.strictObject({ id: z.coerce.number().int().positive() });
export const RolloutQuery = z.strictObject({
  state: RolloutStateSchema.optional(),
  active: boolQuery.optional().describe('running, waiting-approval or paused'),
  limit: limitQuery(500, 50),
  cursor: z
    .string()
    .regex(/^\d{1,16}$/, 'a cursor from the previous page')
    .optional(),
});
export const RolloutDeviceQuery = z.strictObject({
  phase: z.coerce.number().int().min(1).max(32).optional(),
  outcome: RolloutOutcomeSchema.optional(),
  limit: limitQuery(500, 100),
  cursor: z
    .string()
    .regex(/^\d{1,16}$/, 'a cursor from the previous page')
    .optional(),
});
export const PolicySchema = named(
  'RolloutPolicy',
  z.strictObject({
    successThreshold: z.number(),
    errorThreshold: z.number(),
    maxPending: z.number(),
    soakMs: z.number().int(),
    phaseTimeoutMs: z.number().int().nullable(),
    approval: z.boolean(),
    rollback: z.boolean(),
  }),
);
export const RolloutPhaseSchema = named(
  'RolloutPhase',
  z.strictObject({
    index: z.number().int().describe('1-based'),
    spec: z.string().describe('as given: "10%" or "5"'),
    size: z.number().int().describe('devices in this phase'),
    state: z.enum(['queued', 'running', 'soaking', 'passed', 'waiting-approval', 'failed', 'stopped']),
    startedAt: Iso.nullable(),
    passedAt: Iso.nullable(),
    queued: z.number().int(),
    pending: z.number().int(),
    offline: z.number().int().describe('of pending'),
    converged: z.number().int(),
    failed: z.number().int(),
    superseded: z.number().int(),
  }),
);
export const RolloutSchema = named(
  'Rollout',
  z.strictObject({
    id: z.number().int(),
    name: z.string().nullable(),
    state: RolloutStateSchema,
    reason: z.string().nullable().describe('why it was aborted, superseded or paused'),
    selection: z.strictObject({
      kind: z.enum(['group', 'selector', 'devices', 'all']),
      group: z.string().optional(),
      selector: z.string().optional(),
      devices: z.number().int().optional().describe('how many ids were given'),
    }),
    excluded: z.number().int().describe('group devices left out: another target applies to them'),
    target: z.strictObject({
      apps: z.array(z.string()),
      images: z.array(z.strictObject({ name: z.string(), digest: z.string() })),
      agent: z.string().optional().describe('the agent release the target names'),
    }),
    policy: PolicySchema,
    phase: z.number().int().describe('the current phase, 1-based; 0 before it started'),
    phases: z.array(RolloutPhaseSchema),
    total: z.number().int(),
    done: z.number().int().describe('converged + failed + superseded'),
    converged: z.number().int(),
    failed: z.number().int(),
    pending: z.number().int(),
    group: z
      .strictObject({ id: z.string(), deployment: TargetRefSchema.nullable() })
      .nullable()
      .describe('a group rollout: its group and the group target its last phase set'),
    rollback: z.strictObject({
      state: z.enum(['none', 'pending', 'sent', 'done']),
      moved: z.number().int().describe('devices the rollback concerns'),
      returned: z.number().int().describe('of them, reported back on their previous target'),
    }),
    settle: z
      .enum(['none', 'pending', 'done'])
      .describe("after success: the earlier phases' overrides cleared"),
    supersededBy: z.number().int().nullable(),
    createdAt: Iso,
    createdBy: z.string().nullable(),
    startedAt: Iso.nullable(),
    finishedAt: Iso.nullable(),
    updatedAt: Iso,
  }),
);
export const RolloutPage = named(
  'RolloutPage',
  z.strictObject({
    items: z.array(RolloutSchema),
    total: z.number().int().nullable(),
    next: z.string().nullable(),
  }),
);
export const RolloutDeviceSchema = named(
  'RolloutDevice',
  z.strictObject({
    deviceId: z.string(),
    phase: z.number().int(),
    canary: z.boolean(),
    outcome: RolloutOutcomeSchema,
    online: z.boolean(),
    detail: z.string().nullable(),
    target: TargetRefSchema.nullable().describe('what the rollout sent it'),
    previous: TargetRefSchema.nullable().describe('what applied to it before (what a rollback gives back)'),
    publishedAt: Iso.nullable(),
    rollback: z.strictObject({
      state: z.enum(['none', 'pending', 'published', 'returned', 'kept']),
      target: TargetRefSchema.nullable(),
    }),
  }),
);
export const RolloutDevicePage = z.strictObject({
  items: z.array(RolloutDeviceSchema),
  total: z.number().int().nullable(),
  next: z.string().nullable(),
});
export const RolloutPreviewSchema = named(
  'RolloutPreview',
  z.strictObject({
    ok: z.literal(true),
    selection: z.string().describe('as understood: "group g1", "labels site=berlin,tier!=lab"'),
    devices: z.number().int(),
    phases: z.array(z.strictObject({ index: z.number().int(), spec: z.string(), size: z.number().int() })),
    excluded: z
      .array(z.strictObject({ deviceId: z.string(), reason: z.string() }))
      .describe('group devices left out (at most 100 listed)'),
    excludedTotal: z.number().int(),
    images: z.array(z.strictObject({ name: z.string(), digest: z.string() })),
    apps: z.array(z.string()),
    bytes: z.number().int(),
    policy: PolicySchema,
  }),
);

export type RolloutWire = z.output<typeof RolloutSchema>;
export type RolloutDeviceWire = z.output<typeof RolloutDeviceSchema>;
export type RolloutPreview = z.output<typeof RolloutPreviewSchema>;
export type RolloutCreateBody = z.input<typeof RolloutCreate>;
export type RolloutQueryInput = z.output<typeof RolloutQuery>;
export type RolloutDeviceQueryInput = z.output<typeof RolloutDeviceQuery>;
export type RolloutAbortBody = z.input<typeof RolloutAbort>;
