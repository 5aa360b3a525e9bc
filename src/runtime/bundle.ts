/**
 * The bundle builder: OCI image config + the app's spec → runtime-spec config.json. Pure: everything that
 * needs the filesystem (user lookup in the rootfs, device numbers, netns paths) is resolved by the caller
 * (users.ts, containers.ts) and handed in as data, so every rule here is a plain-data unit test.
 *
 * Docker's rules where docker has them: an app `entrypoint` replaces the image Entrypoint AND drops the
 * image Cmd; an app `command` replaces only Cmd; env merges by key (app wins); User/WorkingDir/StopSignal
 * come from the app, else the image. Secure defaults are Docker's: its 14 default capabilities, masked and
 * read-only /proc and /sys paths, the default seccomp profile, plus no_new_privs.
 */
import { invalidInput } from '../lib/errors.js';
import type { ImageConfig } from '../oci/types.js';
import { renderDefaultSeccomp } from './seccomp-default.js';
import type { LinuxDevice, Mount, RuntimeSpec } from './spec.js';

export type NetworkMode = 'none' | 'host' | 'bridge';
export type RestartPolicy = 'no' | 'always' | 'on-failure' | 'unless-stopped';

export interface BindVolume {
  /** Absolute host path. */
  source: string;
  /** Absolute path inside the container. */
  target: string;
  readOnly?: boolean;
  /**
   * A directory berth owns on a tmpfs (the app's update lock dir): made again when missing at create
   * and start — after a reboot — instead of failing like any other missing bind source.
   */
  ensure?: boolean;
}

/** What the app asks for (compose service / `berth run` flags), already validated at the edge. */
export interface AppSpec {
  entrypoint?: string[];
  command?: string[];
  env?: Record<string, string>;
  workingDir?: string;
  user?: string;
  hostname?: string;
  volumes?: BindVolume[];
  resources?: { memoryBytes?: number; cpus?: number; pidsLimit?: number };
  network?: NetworkMode;
  restart?: RestartPolicy;
  capAdd?: string[];
  capDrop?: string[];
  privileged?: boolean;
  readOnlyRootfs?: boolean;
  /** Host devices to expose, with numbers resolved by the caller (statDevice in containers.ts). */
  devices?: LinuxDevice[];
  labels?: Record<string, string>;
  stopSignal?: string;
}

/** A user resolved against the rootfs' /etc/passwd and /etc/group (see users.ts). */
export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home?: string;
}

export interface BundleInput {
  id: string;
  image: ImageConfig['config'] | undefined;
  /** OCI platform architecture: amd64, arm64, arm, ppc64le… (selects the seccomp arch list). */
  arch: string;
  app: AppSpec;
  user: ResolvedUser;
  /** Absolute rootfs path, or relative to the bundle. */
  rootfs: string;
  /** Joined by path in bridge mode (a netns prepared by the network manager). */
  netnsPath?: string;
  /** Where anonymous volumes (image Volumes not covered by a bind) live, one dir per target. */
  volumesDir: string;
  /** Generated /etc files bind-mounted into the container (hosts, hostname, resolv.conf). */
  etcFiles?: { hosts?: string; hostname?: string; resolvConf?: string };
  cgroupParent?: string;
}

export interface BundleResult {
  spec: RuntimeSpec;
  stopSignal: string;
  anonymousVolumes: Array<{ source: string; target: string }>;
}

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Docker's default capability set (moby oci/caps/defaults.go). */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
] as const;

/** Every capability Linux 5.9+ knows, for --privileged and `--cap-add ALL`. */
export const ALL_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
] as const;

/** Docker's masked paths (moby oci/defaults.go). */
export const MASKED_PATHS = [
  '/proc/asound',
  '/proc/acpi',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];
export const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGWINCH: 28,
  SIGPWR: 30,
};

/** "term", "SIGTERM", "15" → "SIGTERM" (numbers without a name stay numeric strings). */
export function normalizeSignal(sig: string): string {
  const s = sig.trim().toUpperCase();
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    const name = Object.entries(SIGNALS).find(([, v]) => v === n)?.[0];
    if (name) return name;
    if (n >= 1 && n <= 64) return String(n);
  } else {
    const name = s.startsWith('SIG') ? s : `SIG${s}`;
    if (name in SIGNALS) return name;
    if (/^SIGRTMIN(\+\d+)?$|^SIGRTMAX(-\d+)?$/.test(name)) return name;
  }
  throw invalidInput(`unknown signal ${JSON.stringify(sig)}`);
}

export function signalNumber(sig: string): number {
  const n = normalizeSignal(sig);
  return SIGNALS[n] ?? Number(n);
}

function normalizeCap(c: string): string {
  const u = c.trim().toUpperCase();
  if (u === 'ALL') return 'ALL';
  const name = u.startsWith('CAP_') ? u : `CAP_${u}`;
  if (!(ALL_CAPABILITIES as readonly string[]).includes(name)) throw invalidInput(`unknown capability ${c}`);
  return name;
}

/** Docker's cap-add/cap-drop arithmetic: drop ALL first, then add; add ALL wins over everything. */
export function resolveCapabilities(app: Pick<AppSpec, 'capAdd' | 'capDrop' | 'privileged'>): string[] {
  if (app.privileged) return [...ALL_CAPABILITIES];
  const add = (app.capAdd ?? []).map(normalizeCap);
  const drop = (app.capDrop ?? []).map(normalizeCap);
  if (add.includes('ALL')) return [...ALL_CAPABILITIES].filter((c) => !drop.includes(c));
  const base = drop.includes('ALL') ? [] : DEFAULT_CAPABILITIES.filter((c) => !drop.includes(c));
  const out = new Set<string>(base);
  for (const c of add) out.add(c);
  return ALL_CAPABILITIES.filter((c) => out.has(c));
}

/** Image env then app env, merged by key in order of first appearance; PATH defaulted like docker. */
export function mergeEnv(
  imageEnv: readonly string[],
  appEnv: Record<string, string>,
  extra: string[] = [],
): string[] {
  const map = new Map<string, string>();
  for (const kv of [...imageEnv, ...extra]) {
    const i = kv.indexOf('=');
    const k = i < 0 ? kv : kv.slice(0, i);
    if (k) map.set(k, i < 0 ? '' : kv.slice(i + 1));
  }
  for (const [k, v] of Object.entries(appEnv)) {
    if (!k || k.includes('=')) throw invalidInput(`invalid environment variable name ${JSON.stringify(k)}`);
    map.set(k, v);
  }
  if (!map.has('PATH')) map.set('PATH', DEFAULT_PATH.slice('PATH='.length));
  return [...map].map(([k, v]) => `${k}=${v}`);
}

/** Docker's entrypoint/cmd rule. */
export function resolveArgs(image: BundleInput['image'], app: AppSpec): string[] {
  let args: string[];
  if (app.entrypoint !== undefined) args = [...app.entrypoint, ...(app.command ?? [])];
  else args = [...(image?.Entrypoint ?? []), ...(app.command ?? image?.Cmd ?? [])];
  if (args.length === 0 || !args[0])
    throw invalidInput('no command: the image has no Entrypoint/Cmd and none was given');
  return args;
}

function assertAbsolute(kind: string, p: string): void {
  if (!p.startsWith('/') || p.split('/').includes('..'))
    throw invalidInput(`${kind} ${JSON.stringify(p)} must be an absolute path without ..`);
}

/** Docker's default mounts; sysfs and the cgroup tree read-only unless privileged. */
export function defaultMounts(privileged: boolean): Mount[] {
  const ro = privileged ? [] : ['ro'];
  return [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', ...ro] },
    {
      destination: '/sys/fs/cgroup',
      type: 'cgroup',
      source: 'cgroup',
      options: ['nosuid', 'noexec', 'nodev', 'relatime', ...ro],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
  ];
}

/** Anonymous volume directory name for a container path: "/var/lib/data" → "var_lib_data". */
export function volumeDirName(target: string): string {
  return (
    target
      .replace(/^\/+/, '')
      .replace(/\/+$/, '')
      .replace(/[^A-Za-z0-9_.-]/g, '_') || 'root'
  );
}

export function buildBundleConfig(input: BundleInput): BundleResult {
  const { app, image, user } = input;
  const privileged = app.privileged === true;
  const args = resolveArgs(image, app);
  const hostname = app.hostname ?? input.id.slice(0, 12);
  const extraEnv = [`HOSTNAME=${hostname}`];
  if (user.home && !(image?.Env ?? []).some((e) => e.startsWith('HOME='))) extraEnv.push(`HOME=${user.home}`);
  const env = mergeEnv(image?.Env ?? [], app.env ?? {}, extraEnv);
  const cwd = app.workingDir || image?.WorkingDir || '/';
  assertAbsolute('working directory', cwd);
  const caps = resolveCapabilities(app);
  const stopSignal = normalizeSignal(app.stopSignal ?? image?.StopSignal ?? 'SIGTERM');

  const mounts = defaultMounts(privileged);
  const binds = app.volumes ?? [];
  for (const v of binds) {
    assertAbsolute('volume source', v.source);
    assertAbsolute('volume target', v.target);
    mounts.push({
      destination: v.target,
      type: 'bind',
      source: v.source,
      options: ['rbind', 'rprivate', ...(v.readOnly ? ['ro'] : [])],
    });
  }
  const anonymousVolumes: BundleResult['anonymousVolumes'] = [];
  for (const target of Object.keys(image?.Volumes ?? {}).sort()) {
    assertAbsolute('image volume', target);
    if (binds.some((b) => b.target.replace(/\/+$/, '') === target.replace(/\/+$/, ''))) continue;
    const source = `${input.volumesDir}/${volumeDirName(target)}`;
    anonymousVolumes.push({ source, target });
    mounts.push({ destination: target, type: 'bind', source, options: ['rbind', 'rprivate'] });
  }
  const etc = input.etcFiles ?? {};
  for (const [dest, src] of [
    ['/etc/hosts', etc.hosts],
    ['/etc/hostname', etc.hostname],
    ['/etc/resolv.conf', etc.resolvConf],
  ] as const) {
    if (src) mounts.push({ destination: dest, type: 'bind', source: src, options: ['rbind', 'rprivate'] });
  }

  const network = app.network ?? 'none';
  const namespaces: RuntimeSpec['linux']['namespaces'] = [
    { type: 'pid' },
    { type: 'ipc' },
    { type: 'uts' },
    { type: 'mount' },
  ];
  if (network === 'bridge') {
    if (!input.netnsPath) throw invalidInput('bridge network needs a prepared network namespace');
    namespaces.push({ type: 'network', path: input.netnsPath });
  } else if (network === 'none') {
    namespaces.push({ type: 'network' });
  }

  const resources: NonNullable<RuntimeSpec['linux']['resources']> = {
    devices: privileged
      ? [{ allow: true, access: 'rwm' }]
      : [
          { allow: false, access: 'rwm' },
          { allow: true, type: 'c', access: 'm' },
          { allow: true, type: 'b', access: 'm' },
          ...(
            [
              [1, 3],
              [1, 5],
              [1, 7],
              [1, 8],
              [1, 9],
              [5, 0],
              [5, 1],
              [5, 2],
            ] as const
          ).map(([major, minor]) => ({ allow: true, type: 'c' as const, major, minor, access: 'rwm' })),
          { allow: true, type: 'c', major: 136, access: 'rwm' },
          ...(app.devices ?? []).map((d) => ({
            allow: true,
            type: d.type === 'b' ? ('b' as const) : ('c' as const),
            major: d.major,
            minor: d.minor,
            access: 'rwm',
          })),
        ],
  };
  const r = app.resources ?? {};
  if (r.memoryBytes !== undefined) {
    if (!Number.isInteger(r.memoryBytes) || r.memoryBytes < 4 * 1024 * 1024)
      throw invalidInput(`memory limit ${r.memoryBytes} is below the minimum of 4 MiB`);
    resources.memory = { limit: r.memoryBytes, swap: r.memoryBytes };
  }
  if (r.cpus !== undefined) {
    if (!(r.cpus > 0)) throw invalidInput(`cpus ${r.cpus} must be > 0`);
    resources.cpu = { period: 100000, quota: Math.round(r.cpus * 100000) };
  }
  if (r.pidsLimit !== undefined) {
    if (!Number.isInteger(r.pidsLimit) || r.pidsLimit < 1)
      throw invalidInput(`pids limit ${r.pidsLimit} must be >= 1`);
    resources.pids = { limit: r.pidsLimit };
  }

  const annotations: Record<string, string> = { 'org.berth.container.id': input.id };
  for (const [k, v] of Object.entries({ ...(image?.Labels ?? {}), ...(app.labels ?? {}) }))
    annotations[k] = v;

  const spec: RuntimeSpec = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: {
        uid: user.uid,
        gid: user.gid,
        ...(user.additionalGids.length ? { additionalGids: user.additionalGids } : {}),
      },
      args,
      env,
      cwd,
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      noNewPrivileges: !privileged,
    },
    root: { path: input.rootfs, readonly: app.readOnlyRootfs === true },
    hostname,
    mounts,
    annotations,
    linux: {
      namespaces,
      resources,
      cgroupsPath: `${input.cgroupParent ?? '/berth'}/${input.id}`,
      ...(app.devices?.length ? { devices: app.devices } : {}),
      ...(privileged
        ? {}
        : {
            seccomp: renderDefaultSeccomp(new Set(caps), input.arch),
            maskedPaths: [...MASKED_PATHS],
            readonlyPaths: [...READONLY_PATHS],
          }),
    },
  };
  return { spec, stopSignal, anonymousVolumes };
}
