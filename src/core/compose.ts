/**
 * docker-compose → target app. Only the subset the target schema covers is accepted; any other key is an
 * error that names its path (`services.web.build`), because silently dropping `build:` or `secrets:` would
 * deploy something other than what the operator wrote. `x-*` extension keys are ignored, as compose does.
 *
 * Differences from compose, on purpose: restart defaults to "always" (a device app should come back after
 * a reboot, as balena does); update behaviour comes from labels `berth.update.strategy`,
 * `berth.update.handover-timeout` and `berth.update.override-lock`.
 */
import { invalidInput } from '../lib/errors.js';
import { DEFAULT_MAX_DEPTH, parseJsonOrThrow } from '../lib/json-bounds.js';
import { parseYamlBounded } from '../lib/yaml-bounds.js';
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

function fail(path: string, msg: string): never {
  throw invalidInput(`compose file: ${path}: ${msg}`);
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, path: string): Obj {
  if (!isObj(v)) fail(path, 'expected a mapping');
  return v;
}

function checkKeys(o: Obj, allowed: readonly string[], path: string): void {
  for (const k of Object.keys(o)) {
    if (k.startsWith('x-')) continue;
    if (!allowed.includes(k)) fail(`${path}.${k}`, 'unsupported key');
  }
}

function str(v: unknown, path: string): string {
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (typeof v !== 'string') fail(path, 'expected a string');
  return v;
}

function strList(v: unknown, path: string): string[] {
  if (!Array.isArray(v)) fail(path, 'expected a list');
  return v.map((x, i) => str(x, `${path}[${i}]`));
}

/** POSIX-shell-like word splitting for string commands (quotes and backslashes; no expansion). */
export function splitCommand(s: string, path = 'command'): string[] {
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

function command(v: unknown, path: string): string[] {
  return typeof v === 'string' ? splitCommand(v, path) : strList(v, path);
}

const UNITS: Record<string, number> = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** "512m", "1g", "100000" (bytes), "1.5gb" → bytes. */
export function parseBytes(v: unknown, path: string): number {
  if (typeof v === 'number' && Number.isInteger(v) && v > 0) return v;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bkmgt])?b?\s*$/i.exec(String(v));
  if (!m) fail(path, `invalid size ${JSON.stringify(v)} (e.g. 512m, 1g)`);
  const n = Math.floor(Number(m[1]) * UNITS[(m[2] ?? 'b').toLowerCase()]!);
  if (n <= 0) fail(path, 'size must be positive');
  return n;
}

const DUR: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** compose durations "1m30s", "500ms", "10s" (and bare numbers as seconds) → milliseconds. */
export function parseDuration(v: unknown, path: string): number {
  if (typeof v === 'number' && v >= 0) return Math.round(v * 1000);
  const s = String(v).trim();
  if (!/^(\d+(\.\d+)?(us|ms|s|m|h))+$/.test(s))
    fail(path, `invalid duration ${JSON.stringify(v)} (e.g. 30s, 1m30s)`);
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(us|ms|s|m|h)/g)) total += Number(m[1]) * DUR[m[2]!]!;
  return Math.round(total);
}

function keyValues(v: unknown, path: string): Record<string, string> {
  if (Array.isArray(v)) {
    const out: Record<string, string> = {};
    v.forEach((item, i) => {
      const s = str(item, `${path}[${i}]`);
      const eq = s.indexOf('=');
      // compose: "KEY" without "=" takes the value from the deploying shell; a device has none of it.
      if (eq <= 0) fail(`${path}[${i}]`, `expected KEY=VALUE, got ${JSON.stringify(s)}`);
      out[s.slice(0, eq)] = s.slice(eq + 1);
    });
    return out;
  }
  const o = obj(v, path);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(o)) {
    if (x === null || x === undefined) fail(`${path}.${k}`, 'a value is required');
    out[k] = str(x, `${path}.${k}`);
  }
  return out;
}

function parseVolume(v: unknown, path: string, declared: Set<string>): VolumeMount {
  if (typeof v === 'string') {
    const parts = v.split(':');
    if (parts.length === 1) fail(path, 'anonymous volumes are not supported; name the volume (name:/path)');
    if (parts.length > 3) fail(path, `invalid volume ${JSON.stringify(v)}`);
    const [source, target, mode] = parts as [string, string, string | undefined];
    if (mode !== undefined && !['ro', 'rw'].includes(mode)) fail(path, `unsupported volume mode ${mode}`);
    const readOnly = mode === 'ro';
    if (source.startsWith('/')) return { type: 'bind', source, target, readOnly };
    if (source.startsWith('.')) fail(path, 'relative bind mounts are not supported on a device');
    if (!declared.has(source)) fail(path, `volume ${JSON.stringify(source)} is not declared under volumes:`);
    return { type: 'volume', source, target, readOnly };
  }
  const o = obj(v, path);
  checkKeys(o, ['type', 'source', 'target', 'read_only'], path);
  const type = str(o.type, `${path}.type`);
  if (type !== 'volume' && type !== 'bind' && type !== 'tmpfs')
    fail(`${path}.type`, `unsupported type ${type}`);
  const source = o.source === undefined ? undefined : str(o.source, `${path}.source`);
  if (type === 'volume' && source !== undefined && !declared.has(source))
    fail(`${path}.source`, `volume ${JSON.stringify(source)} is not declared under volumes:`);
  return {
    type,
    ...(source !== undefined ? { source } : {}),
    target: str(o.target, `${path}.target`),
    readOnly: o.read_only === true,
  };
}

function parsePort(v: unknown, path: string): Port[] {
  if (typeof v === 'number') return [{ containerPort: v, protocol: 'tcp' }];
  if (typeof v === 'string') {
    const m =
      /^(?:(?:(\[[^\]]+\]|\d+\.\d+\.\d+\.\d+):)?(\d+)(?:-(\d+))?:)?(\d+)(?:-(\d+))?(?:\/(tcp|udp))?$/.exec(v);
    if (!m) fail(path, `invalid port ${JSON.stringify(v)} (e.g. 8080:80, 127.0.0.1:53:53/udp)`);
    const [, ip, hFrom, hTo, cFrom, cTo, proto] = m;
    const protocol = (proto ?? 'tcp') as 'tcp' | 'udp';
    const c0 = Number(cFrom);
    const c1 = Number(cTo ?? cFrom);
    const h0 = hFrom === undefined ? undefined : Number(hFrom);
    const h1 = hFrom === undefined ? undefined : Number(hTo ?? hFrom);
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
  checkKeys(o, ['target', 'published', 'host_ip', 'protocol'], path);
  const protocol = o.protocol === undefined ? 'tcp' : str(o.protocol, `${path}.protocol`);
  if (protocol !== 'tcp' && protocol !== 'udp') fail(`${path}.protocol`, `unsupported protocol ${protocol}`);
  return [
    {
      containerPort: Number(o.target),
      ...(o.published !== undefined ? { hostPort: Number(o.published) } : {}),
      ...(o.host_ip !== undefined ? { hostIp: str(o.host_ip, `${path}.host_ip`) } : {}),
      protocol,
    },
  ];
}

function parseHealthcheck(v: unknown, path: string): Healthcheck | undefined {
  const o = obj(v, path);
  checkKeys(o, ['test', 'interval', 'timeout', 'retries', 'start_period', 'disable'], path);
  const timing = {
    intervalMs: o.interval === undefined ? 30_000 : parseDuration(o.interval, `${path}.interval`),
    timeoutMs: o.timeout === undefined ? 30_000 : parseDuration(o.timeout, `${path}.timeout`),
    retries: o.retries === undefined ? 3 : Number(o.retries),
    startPeriodMs: o.start_period === undefined ? 0 : parseDuration(o.start_period, `${path}.start_period`),
  };
  if (o.disable === true) return { probe: { type: 'none' }, ...timing };
  if (o.test === undefined) fail(`${path}.test`, 'required unless disable: true');
  if (typeof o.test === 'string') return { probe: { type: 'shell', command: o.test }, ...timing };
  const test = strList(o.test, `${path}.test`);
  const [kind, ...rest] = test;
  if (kind === 'NONE') return { probe: { type: 'none' }, ...timing };
  if (kind === 'CMD' && rest.length > 0) return { probe: { type: 'exec', command: rest }, ...timing };
  if (kind === 'CMD-SHELL' && rest.length === 1)
    return { probe: { type: 'shell', command: rest[0]! }, ...timing };
  fail(`${path}.test`, 'expected ["CMD", …], ["CMD-SHELL", "…"], ["NONE"] or a string');
}

function parseDependsOn(v: unknown, path: string): Record<string, DependencyCondition> {
  if (Array.isArray(v)) return Object.fromEntries(strList(v, path).map((n) => [n, 'started' as const]));
  const out: Record<string, DependencyCondition> = {};
  for (const [name, cond] of Object.entries(obj(v, path))) {
    const c = obj(cond, `${path}.${name}`);
    checkKeys(c, ['condition'], `${path}.${name}`);
    const condition =
      c.condition === undefined ? 'service_started' : str(c.condition, `${path}.${name}.condition`);
    if (condition === 'service_started') out[name] = 'started';
    else if (condition === 'service_healthy') out[name] = 'healthy';
    else fail(`${path}.${name}.condition`, `unsupported condition ${condition}`);
  }
  return out;
}

function parseRestart(v: unknown, path: string): ServiceInput['restart'] {
  const s = str(v, path);
  const m = /^(no|always|unless-stopped|on-failure)(?::(\d+))?$/.exec(s);
  if (!m || (m[2] !== undefined && m[1] !== 'on-failure'))
    fail(path, `invalid restart policy ${JSON.stringify(s)}`);
  return {
    policy: m[1] as 'no' | 'always' | 'unless-stopped' | 'on-failure',
    maxRetries: m[2] ? Number(m[2]) : 0,
  };
}

function parseDeploy(v: unknown, path: string): { memoryBytes?: number; cpus?: number; pids?: number } {
  const o = obj(v, path);
  checkKeys(o, ['resources'], path);
  if (o.resources === undefined) return {};
  const r = obj(o.resources, `${path}.resources`);
  checkKeys(r, ['limits'], `${path}.resources`);
  if (r.limits === undefined) return {};
  const l = obj(r.limits, `${path}.resources.limits`);
  const at = `${path}.resources.limits`;
  checkKeys(l, ['memory', 'cpus', 'pids'], at);
  return {
    ...(l.memory !== undefined ? { memoryBytes: parseBytes(l.memory, `${at}.memory`) } : {}),
    ...(l.cpus !== undefined ? { cpus: Number(l.cpus) } : {}),
    ...(l.pids !== undefined ? { pids: Number(l.pids) } : {}),
  };
}

function parseService(name: string, v: unknown, volumes: Set<string>): ServiceInput {
  const path = `services.${name}`;
  const o = obj(v, path);
  checkKeys(o, SERVICE_KEYS, path);
  if (o.image === undefined) fail(`${path}.image`, 'required (berth does not build images on the device)');
  const labels = o.labels === undefined ? {} : keyValues(o.labels, `${path}.labels`);

  const update: { strategy?: UpdateStrategy; handoverTimeoutMs?: number; overrideLock?: boolean } = {};
  const strategy = labels['berth.update.strategy'];
  if (strategy !== undefined) {
    if (!(UPDATE_STRATEGIES as readonly string[]).includes(strategy))
      fail(
        `${path}.labels.berth.update.strategy`,
        `unknown strategy ${strategy}; one of ${UPDATE_STRATEGIES.join(', ')}`,
      );
    update.strategy = strategy as UpdateStrategy;
  }
  const handover = labels['berth.update.handover-timeout'];
  if (handover !== undefined)
    update.handoverTimeoutMs = parseDuration(handover, `${path}.labels.berth.update.handover-timeout`);
  const override = labels['berth.update.override-lock'];
  if (override !== undefined) update.overrideLock = override === 'true' || override === '1';

  const resources = {
    ...(o.mem_limit !== undefined ? { memoryBytes: parseBytes(o.mem_limit, `${path}.mem_limit`) } : {}),
    ...(o.cpus !== undefined ? { cpus: Number(o.cpus) } : {}),
    ...(o.pids_limit !== undefined ? { pids: Number(o.pids_limit) } : {}),
    ...(o.deploy !== undefined ? parseDeploy(o.deploy, `${path}.deploy`) : {}),
  };

  let networkMode: 'bridge' | 'host' | 'none' = 'bridge';
  if (o.network_mode !== undefined) {
    const nm = str(o.network_mode, `${path}.network_mode`);
    if (nm !== 'bridge' && nm !== 'host' && nm !== 'none')
      fail(`${path}.network_mode`, `unsupported mode ${nm}`);
    networkMode = nm;
  }
  let networks: string[] = [];
  if (o.networks !== undefined) {
    if (Array.isArray(o.networks)) networks = strList(o.networks, `${path}.networks`);
    else {
      const n = obj(o.networks, `${path}.networks`);
      for (const [k, x] of Object.entries(n))
        if (x !== null && !(isObj(x) && Object.keys(x).length === 0))
          fail(`${path}.networks.${k}`, 'per-network options are not supported');
      networks = Object.keys(n);
    }
  }

  const devices = (o.devices === undefined ? [] : strList(o.devices, `${path}.devices`)).map((d, i) => {
    const [hostPath, containerPath, permissions] = d.split(':');
    if (!hostPath?.startsWith('/')) fail(`${path}.devices[${i}]`, `invalid device ${JSON.stringify(d)}`);
    return { hostPath, containerPath: containerPath ?? hostPath, ...(permissions ? { permissions } : {}) };
  });

  const out: ServiceInput = {
    image: str(o.image, `${path}.image`),
    ...(o.command !== undefined ? { command: command(o.command, `${path}.command`) } : {}),
    ...(o.entrypoint !== undefined ? { entrypoint: command(o.entrypoint, `${path}.entrypoint`) } : {}),
    env: o.environment === undefined ? {} : keyValues(o.environment, `${path}.environment`),
    ...(o.working_dir !== undefined ? { workingDir: str(o.working_dir, `${path}.working_dir`) } : {}),
    ...(o.user !== undefined ? { user: str(o.user, `${path}.user`) } : {}),
    volumes: (o.volumes === undefined ? [] : (o.volumes as unknown[])).map((x, i) =>
      parseVolume(x, `${path}.volumes[${i}]`, volumes),
    ),
    ports: Array.isArray(o.ports)
      ? o.ports.flatMap((p, i) => parsePort(p, `${path}.ports[${i}]`))
      : o.ports === undefined
        ? []
        : fail(`${path}.ports`, 'expected a list'),
    networkMode,
    networks,
    resources,
    restart: o.restart === undefined ? { policy: 'always' } : parseRestart(o.restart, `${path}.restart`),
    ...(o.healthcheck !== undefined
      ? { healthcheck: parseHealthcheck(o.healthcheck, `${path}.healthcheck`) }
      : {}),
    update,
    dependsOn: o.depends_on === undefined ? {} : parseDependsOn(o.depends_on, `${path}.depends_on`),
    labels,
    privileged: o.privileged === true,
    capAdd: o.cap_add === undefined ? [] : strList(o.cap_add, `${path}.cap_add`),
    capDrop: o.cap_drop === undefined ? [] : strList(o.cap_drop, `${path}.cap_drop`),
    devices,
    readOnly: o.read_only === true,
    ...(o.stop_signal !== undefined ? { stopSignal: str(o.stop_signal, `${path}.stop_signal`) } : {}),
    ...(o.stop_grace_period !== undefined
      ? { stopTimeoutMs: parseDuration(o.stop_grace_period, `${path}.stop_grace_period`) }
      : {}),
    ...(o.hostname !== undefined ? { hostname: str(o.hostname, `${path}.hostname`) } : {}),
  };
  if (o.volumes !== undefined && !Array.isArray(o.volumes)) fail(`${path}.volumes`, 'expected a list');
  return out;
}

function parseTopLevelSet(
  v: unknown,
  path: string,
  allowed: readonly string[],
): Record<string, { labels: Obj }> {
  if (v === undefined) return {};
  const out: Record<string, { labels: Obj }> = {};
  for (const [name, x] of Object.entries(obj(v, path))) {
    if (x === null || x === undefined) {
      out[name] = { labels: {} };
      continue;
    }
    const o = obj(x, `${path}.${name}`);
    checkKeys(o, allowed, `${path}.${name}`);
    out[name] = { labels: o.labels === undefined ? {} : keyValues(o.labels, `${path}.${name}.labels`) };
  }
  return out;
}

/**
 * How big a compose or target file may be: parsing costs (the yaml library takes seconds per MiB here),
 * and the agent refuses targets over 1 MiB on the wire anyway. Nesting and alias expansion are bounded
 * too (lib/yaml-bounds.ts), before anything recursive runs.
 */
export const MAX_TARGET_FILE_BYTES = 4 * 1024 * 1024;

function parseComposeYaml(text: string, merge: boolean): unknown {
  return parseYamlBounded(text, { maxBytes: MAX_TARGET_FILE_BYTES }, 'compose file', { merge });
}

/** Parse compose YAML text into one app of a target (validated against the target schema). */
export function composeToApp(text: string): App {
  const doc = parseComposeYaml(text, true);
  const top = obj(doc, '(root)');
  for (const k of Object.keys(top)) {
    if (!k.startsWith('x-') && !TOP_KEYS.includes(k)) fail(k, 'unsupported key');
  }
  const volumes = parseTopLevelSet(top.volumes, 'volumes', ['labels']);
  const networks = parseTopLevelSet(top.networks, 'networks', ['labels', 'internal']);
  const services: Record<string, ServiceInput> = {};
  const declared = new Set(Object.keys(volumes));
  for (const [name, s] of Object.entries(obj(top.services, 'services'))) {
    services[name] = parseService(name, s, declared);
  }
  const netsOut: Record<string, { labels: Record<string, string>; internal: boolean }> = {};
  const rawNets = top.networks === undefined ? {} : obj(top.networks, 'networks');
  for (const [name, n] of Object.entries(networks)) {
    const raw = rawNets[name];
    netsOut[name] = {
      labels: n.labels as Record<string, string>,
      internal: isObj(raw) && raw.internal === true,
    };
  }
  const input: AppInput = {
    services,
    volumes: volumes as AppInput['volumes'],
    networks: netsOut,
  };
  // Validate as a one-app target so cross references (depends_on, networks, cycles) are checked too.
  const res = TargetSchema.safeParse({ version: 0, apps: { app: input } });
  if (!res.success) {
    const i = res.error.issues[0]!;
    const p = i.path.slice(2).join('.'); // drop "apps.app"
    throw invalidInput(`compose file: ${p || '(root)'}: ${i.message}`);
  }
  return res.data.apps.app!;
}

/** The app name compose would use: the file's `name:` key, if any. */
export function composeProjectName(text: string): string | undefined {
  const doc = parseComposeYaml(text, false);
  return isObj(doc) && typeof doc.name === 'string' ? doc.name : undefined;
}

/** A one-app target from a compose file (what `berth fleet deploy compose.yml` publishes). */
export function targetFromCompose(text: string, app: string, version: number): Target {
  return parseTarget({ version, apps: { [app]: composeToApp(text) } }, 'target from compose file');
}

/**
 * A target from a file's text: compose YAML (by extension .yml/.yaml) or target JSON. `app` names the app
 * a compose file becomes (default: its `name:` key).
 */
export function loadTargetText(
  text: string,
  fileName: string,
  opts: { app?: string; version?: number } = {},
): Target {
  if (/\.ya?ml$/i.test(fileName)) {
    const app = opts.app ?? composeProjectName(text);
    if (!app) throw invalidInput(`${fileName}: name the app (--app) or give the compose file a name: key`);
    return targetFromCompose(text, app, opts.version ?? 0);
  }
  let raw = parseJsonOrThrow(
    text,
    { maxBytes: MAX_TARGET_FILE_BYTES, maxDepth: DEFAULT_MAX_DEPTH },
    fileName,
  );
  if (opts.version !== undefined && raw && typeof raw === 'object') raw = { ...raw, version: opts.version };
  return parseTarget(raw, fileName);
}
