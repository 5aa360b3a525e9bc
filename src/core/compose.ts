/**
 * docker-compose → target app. Only the subset the target schema covers is accepted; any other key is an
 * error that names its path (`services.web.build`), because silently dropping `build:` or `secrets:` would
 * deploy something other than what the operator wrote. `x-*` extension keys are ignored, as compose does.
 * Every problem is reported at once, in the compose file's words with its line (`compose.yml:7:5:
 * services.web.ports[0]: …`), a misspelled key with "did you mean" (see source-issues.ts).
 *
 * Differences from compose, on purpose: restart defaults to "always" (a device app should come back after
 * a reboot, as balena does); update behaviour comes from labels `berth.update.strategy`,
 * `berth.update.handover-timeout` and `berth.update.override-lock`.
 */
import { BerthError, invalidInput } from '../lib/errors.js';
import { DEFAULT_MAX_DEPTH, parseJsonBounded } from '../lib/json-bounds.js';
import {
  formatPath,
  type IssuePath,
  type ParsedSource,
  parseSource,
  type SourceIssue,
  throwIssues,
  unknownKeyMessage,
  zodSourceIssues,
} from './source-issues.js';
import {
  type App,
  type AppInput,
  type DependencyCondition,
  type Healthcheck,
  type Port,
  parseTarget,
  type ServiceInput,
  type Target,
  TargetSchema,
  UPDATE_STRATEGIES,
  type UpdateStrategy,
  type VolumeMount,
} from './target.js';

type Obj = Record<string, unknown>;

const TOP_KEYS = ['version', 'name', 'services', 'volumes', 'networks'];
const SERVICE_KEYS = [
  'image',
  'command',
  'entrypoint',
  'environment',
  'working_dir',
  'user',
  'volumes',
  'ports',
  'network_mode',
  'networks',
  'mem_limit',
  'cpus',
  'pids_limit',
  'deploy',
  'restart',
  'healthcheck',
  'depends_on',
  'labels',
  'privileged',
  'cap_add',
  'cap_drop',
  'devices',
  'read_only',
  'stop_signal',
  'stop_grace_period',
  'hostname',
];

/** compose keys berth knows and refuses (with why, where there is more to say than "not supported") */
const NOT_SUPPORTED: Record<string, string> = {
  build: 'berth does not build images on the device; build elsewhere and `berth fleet push` the image',
  secrets: '',
  configs: '',
  env_file: 'the file is not on the device; put the variables under environment:',
  extends: '',
  profiles: '',
  include: '',
  container_name: 'berth names containers <app>_<service>_<hash>',
  links: 'services of an app find each other by service name',
  external_links: '',
  extra_hosts: '',
  dns: '',
  dns_search: '',
  tmpfs: '',
  ulimits: '',
  logging: '',
  sysctls: '',
  shm_size: '',
  expose: '',
  init: '',
  ipc: '',
  pid: '',
  security_opt: '',
  stdin_open: '',
  tty: '',
  domainname: '',
  mac_address: '',
  platform: 'the device picks the platform of multi-arch images itself',
  pull_policy: '',
  runtime: '',
  userns_mode: '',
  group_add: '',
  cgroup_parent: '',
  cpu_shares: '',
  cpuset: '',
  cpu_quota: '',
  cpu_period: '',
  mem_reservation: '',
  memswap_limit: '',
  oom_score_adj: '',
  volumes_from: '',
  device_cgroup_rules: '',
  scale: '',
  replicas: '',
  placement: '',
  update_config: 'use the label berth.update.strategy',
  rollback_config: '',
  restart_policy: 'use restart: at the service level',
  mode: '',
  reservations: '',
  endpoint_mode: '',
  driver: '',
  driver_opts: '',
  external: '',
  ipam: '',
  attachable: '',
  enable_ipv6: '',
};

/**
 * A problem found while converting; `attempt` records it and the conversion goes on with the next key.
 * Thrown out of an exported helper (parseBytes…), it is an ordinary InvalidInput naming the path.
 */
class Problem extends BerthError {
  constructor(
    readonly path: IssuePath,
    readonly problem: string,
    readonly atKey = false,
  ) {
    super('InvalidInput', `${formatPath(path)}: ${problem}`);
  }
}

const asPath = (p: IssuePath | string): IssuePath => (typeof p === 'string' ? [p] : p);

function fail(path: IssuePath | string, msg: string, atKey = false): never {
  throw new Problem(asPath(path), msg, atKey);
}

/** Collects every problem of a conversion instead of stopping at the first one. */
class Issues {
  readonly list: SourceIssue[] = [];
  add(path: IssuePath, message: string, atKey = false): void {
    this.list.push({ path, message, ...(atKey ? { atKey } : {}) });
  }
  /** run `fn`; a Problem is recorded and undefined returned */
  attempt<T>(fn: () => T): T | undefined {
    try {
      return fn();
    } catch (err) {
      if (!(err instanceof Problem)) throw err;
      this.add(err.path, err.problem, err.atKey);
      return undefined;
    }
  }
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, path: IssuePath): Obj {
  if (!isObj(v)) fail(path, 'expected a mapping');
  return v;
}

/** Every key not in `allowed` is an issue (all of them, each at its own line); x-* keys are ignored. */
function checkKeys(o: Obj, allowed: readonly string[], path: IssuePath, issues: Issues): void {
  for (const k of Object.keys(o)) {
    if (k.startsWith('x-') || allowed.includes(k)) continue;
    const why = NOT_SUPPORTED[k];
    const msg =
      why === undefined
        ? unknownKeyMessage(k, allowed)
        : `unsupported key${why ? `: ${why}` : ' (a compose key berth does not support)'}`;
    issues.add([...path, k], msg, true);
  }
}

function str(v: unknown, path: IssuePath): string {
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (typeof v !== 'string') fail(path, 'expected a string');
  return v;
}

function strList(v: unknown, path: IssuePath): string[] {
  if (!Array.isArray(v)) fail(path, 'expected a list');
  return v.map((x, i) => str(x, [...path, i]));
}

function num(
  v: unknown,
  path: IssuePath,
  what: string,
  opts: { integer?: boolean; min?: number } = {},
): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : Number.NaN;
  if (!Number.isFinite(n) || (opts.integer && !Number.isInteger(n)))
    fail(path, `expected ${opts.integer ? 'an integer' : 'a number'} (${what}), got ${JSON.stringify(v)}`);
  if (opts.min !== undefined && n < opts.min) fail(path, `${what} must be at least ${opts.min}, got ${n}`);
  return n;
}

/** POSIX-shell-like word splitting for string commands (quotes and backslashes; no expansion). */
export function splitCommand(s: string, path: IssuePath | string = 'command'): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else cur += c;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === '\\' && i + 1 < s.length && '"\\$`'.includes(s[i + 1]!)) cur += s[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < s.length) {
      cur += s[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) fail(path, 'unterminated quote');
  if (inWord) out.push(cur);
  return out;
}

function command(v: unknown, path: IssuePath): string[] {
  return typeof v === 'string' ? splitCommand(v, path) : strList(v, path);
}

const UNITS: Record<string, number> = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** "512m", "1g", "100000" (bytes), "1.5gb" → bytes. */
export function parseBytes(v: unknown, path: IssuePath | string): number {
  if (typeof v === 'number' && Number.isInteger(v) && v > 0) return v;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bkmgt])?b?\s*$/i.exec(String(v));
  if (!m) fail(path, `invalid size ${JSON.stringify(v)} (e.g. 512m, 1g)`);
  const n = Math.floor(Number(m[1]) * UNITS[(m[2] ?? 'b').toLowerCase()]!);
  if (n <= 0) fail(path, 'size must be positive');
  return n;
}

const DUR: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** compose durations "1m30s", "500ms", "10s" (and bare numbers as seconds) → milliseconds. */
export function parseDuration(v: unknown, path: IssuePath | string): number {
  if (typeof v === 'number' && v >= 0) return Math.round(v * 1000);
  const s = String(v).trim();
  if (!/^(\d+(\.\d+)?(us|ms|s|m|h))+$/.test(s))
    fail(path, `invalid duration ${JSON.stringify(v)} (e.g. 30s, 1m30s)`);
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(us|ms|s|m|h)/g)) total += Number(m[1]) * DUR[m[2]!]!;
  return Math.round(total);
}

function keyValues(v: unknown, path: IssuePath): Record<string, string> {
  if (Array.isArray(v)) {
    const out: Record<string, string> = {};
    v.forEach((item, i) => {
      const s = str(item, [...path, i]);
      const eq = s.indexOf('=');
      // compose: "KEY" without "=" takes the value from the deploying shell; a device has none of it.
      if (eq <= 0) fail([...path, i], `expected KEY=VALUE, got ${JSON.stringify(s)}`);
      out[s.slice(0, eq)] = s.slice(eq + 1);
    });
    return out;
  }
  const o = obj(v, path);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(o)) {
    if (x === null || x === undefined) fail([...path, k], 'a value is required');
    out[k] = str(x, [...path, k]);
  }
  return out;
}

function parseVolume(v: unknown, path: IssuePath, declared: Set<string>, issues: Issues): VolumeMount {
  if (typeof v === 'string') {
    const parts = v.split(':');
    if (parts.length === 1) fail(path, 'anonymous volumes are not supported; name the volume (name:/path)');
    if (parts.length > 3) fail(path, `invalid volume ${JSON.stringify(v)}`);
    const [source, target, mode] = parts as [string, string, string | undefined];
    if (mode !== undefined && !['ro', 'rw'].includes(mode)) fail(path, `unsupported volume mode ${mode}`);
    if (!target.startsWith('/')) fail(path, `the container path ${JSON.stringify(target)} must be absolute`);
    const readOnly = mode === 'ro';
    if (source.startsWith('/')) return { type: 'bind', source, target, readOnly };
    if (source.startsWith('.')) fail(path, 'relative bind mounts are not supported on a device');
    if (!declared.has(source)) fail(path, `volume ${JSON.stringify(source)} is not declared under volumes:`);
    return { type: 'volume', source, target, readOnly };
  }
  const o = obj(v, path);
  checkKeys(o, ['type', 'source', 'target', 'read_only'], path, issues);
  const type = str(o.type, [...path, 'type']);
  if (type !== 'volume' && type !== 'bind' && type !== 'tmpfs')
    fail([...path, 'type'], `unsupported type ${type}`);
  const source = o.source === undefined ? undefined : str(o.source, [...path, 'source']);
  if (type === 'volume' && source !== undefined && !declared.has(source))
    fail([...path, 'source'], `volume ${JSON.stringify(source)} is not declared under volumes:`);
  if (type === 'bind' && !source?.startsWith('/'))
    fail([...path, 'source'], 'a bind mount needs an absolute host path');
  const target = str(o.target, [...path, 'target']);
  if (!target.startsWith('/')) fail([...path, 'target'], 'the container path must be absolute');
  return {
    type,
    ...(source !== undefined ? { source } : {}),
    target,
    readOnly: o.read_only === true,
  };
}

function portNumber(v: unknown, path: IssuePath): number {
  const n = num(v, path, 'a port', { integer: true, min: 1 });
  if (n > 65535) fail(path, `port ${n} out of range (1-65535)`);
  return n;
}

function parsePort(v: unknown, path: IssuePath, issues: Issues): Port[] {
  if (typeof v === 'number') return [{ containerPort: portNumber(v, path), protocol: 'tcp' }];
  if (typeof v === 'string') {
    const m =
      /^(?:(?:(\[[^\]]+\]|\d+\.\d+\.\d+\.\d+):)?(\d+)(?:-(\d+))?:)?(\d+)(?:-(\d+))?(?:\/(tcp|udp))?$/.exec(v);
    if (!m) fail(path, `invalid port ${JSON.stringify(v)} (e.g. 8080:80, 127.0.0.1:53:53/udp)`);
    const [, ip, hFrom, hTo, cFrom, cTo, proto] = m;
    const protocol = (proto ?? 'tcp') as 'tcp' | 'udp';
    const c0 = portNumber(cFrom, path);
    const c1 = portNumber(cTo ?? cFrom, path);
    const h0 = hFrom === undefined ? undefined : portNumber(hFrom, path);
    const h1 = hFrom === undefined ? undefined : portNumber(hTo ?? hFrom, path);
    if (c1 < c0 || (h0 !== undefined && h1! - h0 !== c1 - c0)) fail(path, `mismatched port range ${v}`);
    const out: Port[] = [];
    for (let i = 0; i <= c1 - c0; i++) {
      out.push({
        containerPort: c0 + i,
        ...(h0 !== undefined ? { hostPort: h0 + i } : {}),
        ...(ip ? { hostIp: ip.replace(/^\[|\]$/g, '') } : {}),
        protocol,
      });
    }
    return out;
  }
  const o = obj(v, path);
  checkKeys(o, ['target', 'published', 'host_ip', 'protocol'], path, issues);
  const protocol = o.protocol === undefined ? 'tcp' : str(o.protocol, [...path, 'protocol']);
  if (protocol !== 'tcp' && protocol !== 'udp')
    fail([...path, 'protocol'], `unsupported protocol ${protocol}`);
  if (o.target === undefined) fail([...path, 'target'], 'required: the container port');
  return [
    {
      containerPort: portNumber(o.target, [...path, 'target']),
      ...(o.published !== undefined ? { hostPort: portNumber(o.published, [...path, 'published']) } : {}),
      ...(o.host_ip !== undefined ? { hostIp: str(o.host_ip, [...path, 'host_ip']) } : {}),
      protocol,
    },
  ];
}

function parseHealthcheck(v: unknown, path: IssuePath, issues: Issues): Healthcheck | undefined {
  const o = obj(v, path);
  checkKeys(o, ['test', 'interval', 'timeout', 'retries', 'start_period', 'disable'], path, issues);
  const ms = (key: string, dflt: number, min: number) => {
    if (o[key] === undefined) return dflt;
    const n = parseDuration(o[key], [...path, key]);
    if (n < min) fail([...path, key], `must be at least ${min} ms`);
    return n;
  };
  const timing = {
    intervalMs: issues.attempt(() => ms('interval', 30_000, 100)) ?? 30_000,
    timeoutMs: issues.attempt(() => ms('timeout', 30_000, 100)) ?? 30_000,
    retries:
      issues.attempt(() =>
        o.retries === undefined
          ? 3
          : num(o.retries, [...path, 'retries'], 'retries', { integer: true, min: 1 }),
      ) ?? 3,
    startPeriodMs: issues.attempt(() => ms('start_period', 0, 0)) ?? 0,
  };
  if (o.disable === true) return { probe: { type: 'none' }, ...timing };
  if (o.test === undefined) fail([...path, 'test'], 'required unless disable: true');
  if (typeof o.test === 'string') return { probe: { type: 'shell', command: o.test }, ...timing };
  const test = strList(o.test, [...path, 'test']);
  const [kind, ...rest] = test;
  if (kind === 'NONE') return { probe: { type: 'none' }, ...timing };
  if (kind === 'CMD' && rest.length > 0) return { probe: { type: 'exec', command: rest }, ...timing };
  if (kind === 'CMD-SHELL' && rest.length === 1)
    return { probe: { type: 'shell', command: rest[0]! }, ...timing };
  fail([...path, 'test'], 'expected ["CMD", …], ["CMD-SHELL", "…"], ["NONE"] or a string');
}

function parseDependsOn(
  v: unknown,
  path: IssuePath,
  services: readonly string[],
  issues: Issues,
): Record<string, DependencyCondition> {
  const known = (name: string, at: IssuePath) => {
    if (!services.includes(name)) fail(at, `depends on unknown service ${JSON.stringify(name)}`);
  };
  if (Array.isArray(v)) {
    const names = strList(v, path);
    names.forEach((n, i) => {
      known(n, [...path, i]);
    });
    return Object.fromEntries(names.map((n) => [n, 'started' as const]));
  }
  const out: Record<string, DependencyCondition> = {};
  for (const [name, cond] of Object.entries(obj(v, path))) {
    known(name, [...path, name]);
    const c = obj(cond, [...path, name]);
    checkKeys(c, ['condition'], [...path, name], issues);
    const condition =
      c.condition === undefined ? 'service_started' : str(c.condition, [...path, name, 'condition']);
    if (condition === 'service_started') out[name] = 'started';
    else if (condition === 'service_healthy') out[name] = 'healthy';
    else fail([...path, name, 'condition'], `unsupported condition ${condition}`);
  }
  return out;
}

function parseRestart(v: unknown, path: IssuePath): ServiceInput['restart'] {
  const s = str(v, path);
  const m = /^(no|always|unless-stopped|on-failure)(?::(\d+))?$/.exec(s);
  if (!m || (m[2] !== undefined && m[1] !== 'on-failure'))
    fail(path, `invalid restart policy ${JSON.stringify(s)} (no, always, unless-stopped, on-failure[:N])`);
  return {
    policy: m[1] as 'no' | 'always' | 'unless-stopped' | 'on-failure',
    maxRetries: m[2] ? Number(m[2]) : 0,
  };
}

type Resources = { memoryBytes?: number; cpus?: number; pids?: number };

function cpus(v: unknown, path: IssuePath): number {
  const n = num(v, path, 'CPUs');
  if (!(n > 0) || n > 1024) fail(path, `CPUs must be more than 0 and at most 1024, got ${n}`);
  return n;
}

function pids(v: unknown, path: IssuePath): number {
  return num(v, path, 'a number of processes', { integer: true, min: 1 });
}

function parseDeploy(v: unknown, path: IssuePath, issues: Issues): Resources {
  const o = obj(v, path);
  checkKeys(o, ['resources'], path, issues);
  if (o.resources === undefined) return {};
  const r = obj(o.resources, [...path, 'resources']);
  checkKeys(r, ['limits'], [...path, 'resources'], issues);
  if (r.limits === undefined) return {};
  const at = [...path, 'resources', 'limits'];
  const l = obj(r.limits, at);
  checkKeys(l, ['memory', 'cpus', 'pids'], at, issues);
  const out: Resources = {};
  if (l.memory !== undefined) {
    const m = issues.attempt(() => parseBytes(l.memory, [...at, 'memory']));
    if (m !== undefined) out.memoryBytes = m;
  }
  if (l.cpus !== undefined) {
    const c = issues.attempt(() => cpus(l.cpus, [...at, 'cpus']));
    if (c !== undefined) out.cpus = c;
  }
  if (l.pids !== undefined) {
    const p = issues.attempt(() => pids(l.pids, [...at, 'pids']));
    if (p !== undefined) out.pids = p;
  }
  return out;
}

/** Where a converted service's fields came from in the compose file, for errors found after conversion. */
interface ServiceOrigin {
  /** expanded port index → index in the compose ports list (ranges expand) */
  ports: number[];
}

function parseService(
  name: string,
  v: unknown,
  volumes: Set<string>,
  networks: Set<string>,
  services: readonly string[],
  issues: Issues,
  origin: ServiceOrigin,
): ServiceInput | undefined {
  const path = ['services', name];
  const o = obj(v, path);
  checkKeys(o, SERVICE_KEYS, path, issues);
  const at = (k: string): IssuePath => [...path, k];
  const field = <T>(k: string, fn: (v: unknown, p: IssuePath) => T): T | undefined =>
    o[k] === undefined ? undefined : issues.attempt(() => fn(o[k], at(k)));

  if (o.image === undefined) issues.add(at('image'), 'required (berth does not build images on the device)');
  const image = field('image', str);
  const labels = field('labels', keyValues) ?? {};

  const update: { strategy?: UpdateStrategy; handoverTimeoutMs?: number; overrideLock?: boolean } = {};
  const labelAt = (l: string): IssuePath => [...path, 'labels', l];
  const strategy = labels['berth.update.strategy'];
  if (strategy !== undefined) {
    if (!(UPDATE_STRATEGIES as readonly string[]).includes(strategy))
      issues.add(
        labelAt('berth.update.strategy'),
        `unknown strategy ${strategy}; one of ${UPDATE_STRATEGIES.join(', ')}`,
      );
    else update.strategy = strategy as UpdateStrategy;
  }
  const handover = labels['berth.update.handover-timeout'];
  if (handover !== undefined) {
    const ms = issues.attempt(() => parseDuration(handover, labelAt('berth.update.handover-timeout')));
    if (ms !== undefined) update.handoverTimeoutMs = ms;
  }
  const override = labels['berth.update.override-lock'];
  if (override !== undefined) update.overrideLock = override === 'true' || override === '1';

  const memoryBytes = field('mem_limit', parseBytes);
  const cpuCount = field('cpus', cpus);
  const pidCount = field('pids_limit', pids);
  const resources: Resources = {
    ...(memoryBytes !== undefined ? { memoryBytes } : {}),
    ...(cpuCount !== undefined ? { cpus: cpuCount } : {}),
    ...(pidCount !== undefined ? { pids: pidCount } : {}),
    ...(field('deploy', (x, p) => parseDeploy(x, p, issues)) ?? {}),
  };

  const networkMode =
    field('network_mode', (x, p) => {
      const nm = str(x, p);
      if (nm !== 'bridge' && nm !== 'host' && nm !== 'none')
        fail(p, `unsupported mode ${nm} (bridge, host or none)`);
      return nm;
    }) ?? 'bridge';
  const serviceNetworks =
    field('networks', (x, p) => {
      let list: string[];
      if (Array.isArray(x)) list = strList(x, p);
      else {
        const n = obj(x, p);
        for (const [k, y] of Object.entries(n))
          if (y !== null && !(isObj(y) && Object.keys(y).length === 0))
            issues.add([...p, k], 'per-network options are not supported');
        list = Object.keys(n);
      }
      list.forEach((n, i) => {
        if (n !== 'default' && !networks.has(n))
          issues.add(
            Array.isArray(x) ? [...p, i] : [...p, n],
            `network ${JSON.stringify(n)} is not declared under networks:`,
          );
      });
      return list;
    }) ?? [];

  const devices =
    field('devices', (x, p) =>
      strList(x, p).map((d, i) => {
        const [hostPath, containerPath, permissions] = d.split(':');
        if (!hostPath?.startsWith('/')) fail([...p, i], `invalid device ${JSON.stringify(d)}`);
        if (permissions !== undefined && !/^[rwm]{1,3}$/.test(permissions))
          fail([...p, i], `invalid device permissions ${JSON.stringify(permissions)} (r, w, m)`);
        return {
          hostPath,
          containerPath: containerPath ?? hostPath,
          ...(permissions ? { permissions } : {}),
        };
      }),
    ) ?? [];

  const serviceVolumes =
    field('volumes', (x, p) => {
      if (!Array.isArray(x)) fail(p, 'expected a list');
      return x.map((y, i) => issues.attempt(() => parseVolume(y, [...p, i], volumes, issues)));
    }) ?? [];
  const ports =
    field('ports', (x, p) => {
      if (!Array.isArray(x)) fail(p, 'expected a list');
      const out: Port[] = [];
      x.forEach((y, i) => {
        for (const port of issues.attempt(() => parsePort(y, [...p, i], issues)) ?? []) {
          out.push(port);
          origin.ports.push(i);
        }
      });
      return out;
    }) ?? [];

  const bool = (x: unknown, p: IssuePath) => {
    if (typeof x !== 'boolean') fail(p, `expected true or false, got ${JSON.stringify(x)}`);
    return x;
  };
  const out: ServiceInput = {
    image: image ?? '',
    ...(o.command !== undefined ? { command: field('command', command) ?? [] } : {}),
    ...(o.entrypoint !== undefined ? { entrypoint: field('entrypoint', command) ?? [] } : {}),
    env: field('environment', keyValues) ?? {},
    ...(o.working_dir !== undefined ? { workingDir: field('working_dir', str) ?? '' } : {}),
    ...(o.user !== undefined ? { user: field('user', str) ?? '' } : {}),
    volumes: serviceVolumes.filter((x): x is VolumeMount => x !== undefined),
    ports,
    networkMode,
    networks: serviceNetworks,
    resources,
    restart: field('restart', parseRestart) ?? { policy: 'always' },
    ...(o.healthcheck !== undefined
      ? { healthcheck: field('healthcheck', (x, p) => parseHealthcheck(x, p, issues)) }
      : {}),
    update,
    dependsOn: field('depends_on', (x, p) => parseDependsOn(x, p, services, issues)) ?? {},
    labels,
    privileged: field('privileged', bool) ?? false,
    capAdd: field('cap_add', strList) ?? [],
    capDrop: field('cap_drop', strList) ?? [],
    devices,
    readOnly: field('read_only', bool) ?? false,
    ...(o.stop_signal !== undefined ? { stopSignal: field('stop_signal', str) } : {}),
    ...(o.stop_grace_period !== undefined
      ? { stopTimeoutMs: field('stop_grace_period', parseDuration) }
      : {}),
    ...(o.hostname !== undefined ? { hostname: field('hostname', str) } : {}),
  };
  return out;
}

function parseTopLevelSet(
  v: unknown,
  path: string,
  allowed: readonly string[],
  issues: Issues,
): Record<string, { labels: Record<string, string>; internal: boolean }> {
  if (v === undefined) return {};
  const out: Record<string, { labels: Record<string, string>; internal: boolean }> = {};
  const set = issues.attempt(() => obj(v, [path])) ?? {};
  for (const [name, x] of Object.entries(set)) {
    if (!SAFE_NAME.test(name)) issues.add([path, name], `invalid name: ${SAFE_NAME_RULE}`, true);
    if (x === null || x === undefined) {
      out[name] = { labels: {}, internal: false };
      continue;
    }
    const o = issues.attempt(() => obj(x, [path, name]));
    if (!o) continue;
    checkKeys(o, allowed, [path, name], issues);
    out[name] = {
      labels:
        (o.labels === undefined ? {} : issues.attempt(() => keyValues(o.labels, [path, name, 'labels']))) ??
        {},
      internal: o.internal === true,
    };
  }
  return out;
}

/**
 * How big a compose or target file may be: parsing costs (the yaml library takes seconds per MiB here),
 * and the agent refuses targets over 1 MiB on the wire anyway. Nesting and alias expansion are bounded
 * too (lib/yaml-bounds.ts), before anything recursive runs.
 */
export const MAX_TARGET_FILE_BYTES = 4 * 1024 * 1024;
const FILE_LIMITS = { maxBytes: MAX_TARGET_FILE_BYTES };

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const SAFE_NAME_RULE = 'use 1-63 of [A-Za-z0-9_.-], starting with a letter or digit';

/** Target schema field → compose key, for problems the schema finds after conversion. */
const COMPOSE_KEY: Record<string, string> = {
  env: 'environment',
  workingDir: 'working_dir',
  networkMode: 'network_mode',
  dependsOn: 'depends_on',
  capAdd: 'cap_add',
  capDrop: 'cap_drop',
  readOnly: 'read_only',
  stopSignal: 'stop_signal',
  stopTimeoutMs: 'stop_grace_period',
  update: 'labels',
};
const HEALTH_KEY: Record<string, string> = {
  intervalMs: 'interval',
  timeoutMs: 'timeout',
  startPeriodMs: 'start_period',
  probe: 'test',
};
const RESOURCE_KEY: Record<string, string> = { memoryBytes: 'mem_limit', cpus: 'cpus', pids: 'pids_limit' };

/** A target-schema path (apps.app.services.web.resources.cpus) in the compose file's words. */
function composePath(p: IssuePath, origins: Record<string, ServiceOrigin>): IssuePath {
  const [, , kind, name, fieldName, ...rest] = p as Array<string | number>;
  if (kind !== 'services' || name === undefined) return p.slice(2);
  const base = ['services', name];
  if (fieldName === undefined) return base;
  const f = String(fieldName);
  if (f === 'resources') return [...base, RESOURCE_KEY[String(rest[0])] ?? 'deploy'];
  if (f === 'healthcheck')
    return [
      ...base,
      'healthcheck',
      ...(rest[0] !== undefined ? [HEALTH_KEY[String(rest[0])] ?? rest[0]!] : []),
    ];
  if (f === 'ports') {
    const i = typeof rest[0] === 'number' ? origins[String(name)]?.ports[rest[0]] : undefined;
    return [...base, 'ports', ...(i !== undefined ? [i] : [])];
  }
  if (f === 'volumes' || f === 'devices')
    return [...base, f, ...(typeof rest[0] === 'number' ? [rest[0]] : [])];
  return [...base, COMPOSE_KEY[f] ?? f, ...(f === 'dependsOn' ? rest.slice(0, 1) : [])];
}

/** Parse compose YAML text into one app of a target, every problem at once with its line. */
export function composeToApp(text: string, file = 'compose file'): App {
  return composeSourceToApp(parseSource(text, file, FILE_LIMITS));
}

function composeSourceToApp(src: ParsedSource): App {
  const issues = new Issues();
  const top = issues.attempt(() => obj(src.value, [])) ?? {};
  checkKeys(top, TOP_KEYS, [], issues);
  const volumes = parseTopLevelSet(top.volumes, 'volumes', ['labels'], issues);
  const networks = parseTopLevelSet(top.networks, 'networks', ['labels', 'internal'], issues);
  const services: Record<string, ServiceInput> = {};
  const origins: Record<string, ServiceOrigin> = {};
  if (top.services === undefined) issues.add(['services'], 'required: the services to run');
  const rawServices =
    top.services === undefined ? {} : (issues.attempt(() => obj(top.services, ['services'])) ?? {});
  const names = Object.keys(rawServices);
  for (const [name, s] of Object.entries(rawServices)) {
    if (!SAFE_NAME.test(name))
      issues.add(['services', name], `invalid service name: ${SAFE_NAME_RULE}`, true);
    origins[name] = { ports: [] };
    const svc = issues.attempt(() =>
      parseService(
        name,
        s,
        new Set(Object.keys(volumes)),
        new Set(Object.keys(networks)),
        names,
        issues,
        origins[name]!,
      ),
    );
    if (svc) services[name] = svc;
  }
  if (issues.list.length > 0) throwIssues(src, issues.list);
  const input: AppInput = {
    services,
    volumes: Object.fromEntries(Object.entries(volumes).map(([k, v]) => [k, { labels: v.labels }])),
    networks,
  };
  // Validate as a one-app target so what the schema alone knows (cycles…) is checked too.
  const res = TargetSchema.safeParse({ version: 0, apps: { app: input } });
  if (!res.success)
    throwIssues(
      src,
      zodSourceIssues(res.error, TargetSchema, (p) => composePath(p, origins)),
    );
  return res.data.apps.app!;
}

/** The app name compose would use: the file's `name:` key, if any. */
export function composeProjectName(src: ParsedSource): string | undefined {
  const doc = src.value;
  return isObj(doc) && typeof doc.name === 'string' ? doc.name : undefined;
}

/** A one-app target from a compose file (what `berth fleet deploy compose.yml` publishes). */
export function targetFromCompose(text: string, app: string, version: number, file = 'compose file'): Target {
  return parseTarget({ version, apps: { [app]: composeToApp(text, file) } }, 'target from compose file');
}

/**
 * A target from a file's text: compose YAML (by extension .yml/.yaml) or target JSON. `app` names the app
 * a compose file becomes (default: its `name:` key). Problems are reported all at once, each with the
 * file, line and column.
 */
export function loadTargetText(
  text: string,
  fileName: string,
  opts: { app?: string; version?: number } = {},
): Target {
  if (/\.ya?ml$/i.test(fileName)) {
    const src = parseSource(text, fileName, FILE_LIMITS);
    const app = opts.app ?? composeProjectName(src);
    if (!app) throw invalidInput(`${fileName}: name the app (--app) or give the compose file a name: key`);
    if (!SAFE_NAME.test(app))
      throw invalidInput(`${fileName}: app name ${JSON.stringify(app)}: ${SAFE_NAME_RULE}`);
    return parseTarget({ version: opts.version ?? 0, apps: { [app]: composeSourceToApp(src) } }, fileName);
  }
  // JSON: the bounded fast parser; the YAML one (slower, but with positions) only to say where problems are
  const parsed = parseJsonBounded(text, { ...FILE_LIMITS, maxDepth: DEFAULT_MAX_DEPTH });
  if (!parsed.ok) {
    const at = /position (\d+)/.exec(parsed.reason);
    throw invalidInput(`${fileName}${at ? `:${lineCol(text, Number(at[1]))}` : ''}: ${parsed.reason}`);
  }
  let raw = parsed.value;
  if (opts.version !== undefined && raw && typeof raw === 'object') raw = { ...raw, version: opts.version };
  const res = TargetSchema.safeParse(raw);
  if (!res.success)
    throwIssues(parseSource(text, fileName, FILE_LIMITS), zodSourceIssues(res.error, TargetSchema));
  return res.data;
}

/** "line:col" (1-based) of a character offset in `text`. */
function lineCol(text: string, offset: number): string {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  return `${line}:${offset - before.lastIndexOf('\n')}`;
}
