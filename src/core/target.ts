/**
 * The target state: what the fleet wants a device to run. A target is a versioned set of apps; an app is a
 * set of services (containers) plus the volumes and networks they share. The fleet signs and publishes a
 * target; the agent validates it here (schema + cross references), stores it, and the planner converges
 * the device to it.
 *
 * Times are milliseconds, sizes bytes, so the planner never parses units; compose.ts converts "30s"/"512m".
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { invalidInput } from '../lib/errors.js';
import { formatIssues } from '../oci/validate.js';

/** Names that become path components, container names and topic levels (see lib/ids.ts). */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
export const NameSchema = z
  .string()
  .regex(SAFE_NAME, 'use 1-63 of [A-Za-z0-9_.-], starting with a letter or digit');

export const UPDATE_STRATEGIES = [
  'download-then-kill',
  'kill-then-download',
  'delete-then-download',
  'hand-over',
] as const;
export type UpdateStrategy = (typeof UPDATE_STRATEGIES)[number];

export const RESTART_POLICIES = ['no', 'always', 'on-failure', 'unless-stopped'] as const;
export type RestartPolicyName = (typeof RESTART_POLICIES)[number];

const ms = z.number().int().nonnegative();

export const VolumeMountSchema = z
  .object({
    type: z.enum(['volume', 'bind', 'tmpfs']),
    /** volume name (type volume), absolute host path (bind); unused for tmpfs */
    source: z.string().optional(),
    target: z.string().startsWith('/', 'container path must be absolute'),
    readOnly: z.boolean().default(false),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.type === 'volume' && !(m.source && SAFE_NAME.test(m.source)))
      ctx.addIssue({ code: 'custom', path: ['source'], message: 'a volume mount needs a volume name' });
    if (m.type === 'bind' && !m.source?.startsWith('/'))
      ctx.addIssue({ code: 'custom', path: ['source'], message: 'a bind mount needs an absolute host path' });
  });
export type VolumeMount = z.infer<typeof VolumeMountSchema>;

export const PortSchema = z
  .object({
    containerPort: z.number().int().min(1).max(65535),
    hostPort: z.number().int().min(1).max(65535).optional(),
    hostIp: z.string().optional(),
    protocol: z.enum(['tcp', 'udp']).default('tcp'),
  })
  .strict();
export type Port = z.infer<typeof PortSchema>;

export const ProbeSchema = z.discriminatedUnion('type', [
  /** argv run inside the container through the engine's exec; healthy when it exits 0 */
  z.object({ type: z.literal('exec'), command: z.array(z.string()).min(1) }).strict(),
  /** `/bin/sh -c <command>` inside the container */
  z.object({ type: z.literal('shell'), command: z.string().min(1) }).strict(),
  z
    .object({ type: z.literal('tcp'), port: z.number().int().min(1).max(65535), host: z.string().optional() })
    .strict(),
  z
    .object({
      type: z.literal('http'),
      port: z.number().int().min(1).max(65535),
      path: z.string().startsWith('/').default('/'),
      host: z.string().optional(),
    })
    .strict(),
  /** healthy while the container keeps running */
  z.object({ type: z.literal('running') }).strict(),
  /** no health check at all (compose `disable: true` / `test: ["NONE"]`) */
  z.object({ type: z.literal('none') }).strict(),
]);
export type Probe = z.infer<typeof ProbeSchema>;

export const HealthcheckSchema = z
  .object({
    probe: ProbeSchema,
    intervalMs: ms.min(100).default(30_000),
    timeoutMs: ms.min(100).default(30_000),
    retries: z.number().int().min(1).default(3),
    startPeriodMs: ms.default(0),
  })
  .strict();
export type Healthcheck = z.infer<typeof HealthcheckSchema>;

export const RestartSchema = z
  .object({
    policy: z.enum(RESTART_POLICIES).default('always'),
    /** on-failure only: give up after this many restarts (0 = unlimited) */
    maxRetries: z.number().int().nonnegative().default(0),
  })
  .strict();
export type RestartPolicy = z.infer<typeof RestartSchema>;

export const ResourcesSchema = z
  .object({
    memoryBytes: z.number().int().positive().optional(),
    cpus: z.number().positive().max(1024).optional(),
    pids: z.number().int().positive().optional(),
  })
  .strict();
export type Resources = z.infer<typeof ResourcesSchema>;

export const UpdateSchema = z
  .object({
    strategy: z.enum(UPDATE_STRATEGIES).default('download-then-kill'),
    /** hand-over: the old container is killed this long after the new one started, if not healthy before */
    handoverTimeoutMs: ms.default(60_000),
    /** kill even while the app holds its update lock */
    overrideLock: z.boolean().default(false),
  })
  .strict();
export type UpdatePolicy = z.infer<typeof UpdateSchema>;

export const DEPENDENCY_CONDITIONS = ['started', 'healthy'] as const;
export type DependencyCondition = (typeof DEPENDENCY_CONDITIONS)[number];

const DependsOnSchema = z
  .union([z.array(NameSchema), z.record(NameSchema, z.enum(DEPENDENCY_CONDITIONS))])
  .transform(
    (v): Record<string, DependencyCondition> =>
      Array.isArray(v) ? Object.fromEntries(v.map((n) => [n, 'started' as const])) : v,
  );

export const ServiceSchema = z
  .object({
    /** "name:tag", "name@sha256:…" or a bare "sha256:…" image id */
    image: z.string().min(1),
    command: z.array(z.string()).optional(),
    entrypoint: z.array(z.string()).optional(),
    env: z.record(z.string()).default({}),
    workingDir: z.string().optional(),
    user: z.string().optional(),
    volumes: z.array(VolumeMountSchema).default([]),
    ports: z.array(PortSchema).default([]),
    networkMode: z.enum(['bridge', 'host', 'none']).default('bridge'),
    /** app networks to join (bridge mode); empty = the app's "default" network */
    networks: z.array(NameSchema).default([]),
    resources: ResourcesSchema.default({}),
    restart: RestartSchema.default({}),
    /** absent: the image's Healthcheck, else "stays running" */
    healthcheck: HealthcheckSchema.optional(),
    update: UpdateSchema.default({}),
    dependsOn: DependsOnSchema.default({}),
    labels: z.record(z.string()).default({}),
    privileged: z.boolean().default(false),
    capAdd: z.array(z.string()).default([]),
    capDrop: z.array(z.string()).default([]),
    devices: z
      .array(
        z
          .object({
            hostPath: z.string().startsWith('/'),
            containerPath: z.string().startsWith('/'),
            permissions: z
              .string()
              .regex(/^[rwm]{1,3}$/)
              .default('rwm'),
          })
          .strict(),
      )
      .default([]),
    readOnly: z.boolean().default(false),
    stopSignal: z.string().optional(),
    stopTimeoutMs: ms.default(10_000),
    hostname: z.string().optional(),
  })
  .strict();
export type Service = z.infer<typeof ServiceSchema>;
export type ServiceInput = z.input<typeof ServiceSchema>;

export const VolumeSchema = z.object({ labels: z.record(z.string()).default({}) }).strict();
export const NetworkSchema = z
  .object({ labels: z.record(z.string()).default({}), internal: z.boolean().default(false) })
  .strict();

export const AppSchema = z
  .object({
    services: z.record(NameSchema, ServiceSchema),
    volumes: z.record(NameSchema, VolumeSchema).default({}),
    networks: z.record(NameSchema, NetworkSchema).default({}),
  })
  .strict();
export type App = z.infer<typeof AppSchema>;
export type AppInput = z.input<typeof AppSchema>;

/**
 * Where a target came from, in the operator's terms: the device's own target, or one of its groups', at the
 * version the operator deployed for that scope. `version` of the target itself is the agent's own counter
 * (it only grows, whichever scope applies); reports, events and the fleet show the origin instead.
 */
export const TargetOriginSchema = z
  .object({
    kind: z.enum(['device', 'group', 'local']),
    id: z.string().max(128),
    version: z.number().int().nonnegative(),
  })
  .strict();
export type TargetOrigin = z.infer<typeof TargetOriginSchema>;

export const TargetSchema = z
  .object({
    /** monotonically increasing per device; the agent ignores a target older than the one it applies */
    version: z.number().int().nonnegative(),
    apps: z.record(NameSchema, AppSchema).default({}),
    /** absent for a target from a file or a test: it is then `local <version>` */
    origin: TargetOriginSchema.optional(),
  })
  .strict()
  .superRefine((t, ctx) => {
    for (const [appName, app] of Object.entries(t.apps)) {
      for (const [svcName, svc] of Object.entries(app.services)) {
        const at = ['apps', appName, 'services', svcName];
        for (const [i, v] of svc.volumes.entries()) {
          if (v.type === 'volume' && v.source && !(v.source in app.volumes))
            ctx.addIssue({
              code: 'custom',
              path: [...at, 'volumes', i, 'source'],
              message: `volume ${JSON.stringify(v.source)} is not declared in app ${appName}`,
            });
        }
        for (const n of svc.networks) {
          if (n !== 'default' && !(n in app.networks))
            ctx.addIssue({
              code: 'custom',
              path: [...at, 'networks'],
              message: `network ${JSON.stringify(n)} is not declared in app ${appName}`,
            });
        }
        for (const dep of Object.keys(svc.dependsOn)) {
          if (!(dep in app.services))
            ctx.addIssue({
              code: 'custom',
              path: [...at, 'dependsOn', dep],
              message: `depends on unknown service ${JSON.stringify(dep)}`,
            });
        }
      }
      const cycle = findDependencyCycle(app);
      if (cycle)
        ctx.addIssue({
          code: 'custom',
          path: ['apps', appName, 'services'],
          message: `dependency cycle: ${cycle.join(' -> ')}`,
        });
    }
  });
export type Target = z.infer<typeof TargetSchema>;
export type TargetInput = z.input<typeof TargetSchema>;

/** Validate an untrusted target (from the fleet or a file); the error names the failing field. */
export function parseTarget(raw: unknown, what = 'target'): Target {
  const res = TargetSchema.safeParse(raw);
  if (!res.success) throw invalidInput(`${what} is invalid: ${formatIssues(res.error)}`);
  return res.data;
}

export const emptyTarget = (version = 0): Target => ({ version, apps: {} });

/** The operator's name for what a target is: its origin, or `local <version>` for one without. */
export function originOf(t: Pick<Target, 'version' | 'origin'>): TargetOrigin {
  return t.origin ?? { kind: 'local', id: 'local', version: t.version };
}

/** "device 3", "group g1 7", "local 5": how a target is named in reports, events and the fleet. */
export function originLabel(o: TargetOrigin): string {
  return o.kind === 'group' ? `group ${o.id} ${o.version}` : `${o.kind} ${o.version}`;
}

export function sameOrigin(a: TargetOrigin | undefined, b: TargetOrigin | undefined): boolean {
  return a !== undefined && b !== undefined && a.kind === b.kind && a.id === b.id && a.version === b.version;
}

/** A cycle in depends_on as [a, b, a], or undefined. */
export function findDependencyCycle(app: Pick<App, 'services'>): string[] | undefined {
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (name: string): string[] | undefined => {
    if (state.get(name) === 'done') return undefined;
    if (state.get(name) === 'visiting') return [...stack.slice(stack.indexOf(name)), name];
    state.set(name, 'visiting');
    stack.push(name);
    for (const dep of Object.keys(app.services[name]?.dependsOn ?? {})) {
      const c = visit(dep);
      if (c) return c;
    }
    stack.pop();
    state.set(name, 'done');
    return undefined;
  };
  for (const name of Object.keys(app.services)) {
    const c = visit(name);
    if (c) return c;
  }
  return undefined;
}

/** Every image a target references (deduplicated, in a stable order). */
export function targetImages(t: Target): string[] {
  const out = new Set<string>();
  for (const app of Object.values(t.apps)) for (const s of Object.values(app.services)) out.add(s.image);
  return [...out].sort();
}

/**
 * Canonical JSON (sorted keys) of a value: the identity of a service's spec. Two specs that serialize
 * the same produce the same container; any other change means a new container.
 */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/**
 * sha256 of the canonical spec, as hex: a stable fingerprint for container names and "is this container
 * current?". The target itself is signed; this is identity, not security.
 */
const hashes = new WeakMap<Service, string>();

export function specHash(service: Service): string {
  const hit = hashes.get(service);
  if (hit) return hit;
  const h = computeSpecHash(service);
  hashes.set(service, h);
  return h;
}

function computeSpecHash(service: Service): string {
  // The update policy changes how we roll out, and labels are berth metadata (updateMetadata step), not what
  // runs: editing either must not restart the container.
  const { update: _update, labels: _labels, ...runtime } = service;
  return createHash('sha256').update(canonicalJson(runtime)).digest('hex');
}

/** Container name of a service at a spec: `<app>_<service>_<hash12>`. */
export function containerName(app: string, service: string, hash: string): string {
  return `${app}_${service}_${hash.slice(0, 12)}`;
}
