/**
 * Fixtures for driving OCI runtimes (berth-runtime and runc) directly: a busybox rootfs, runtime-spec
 * configs, bundles in temp dirs, unique ids / state roots / cgroup paths, all removed in teardown.
 */

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { type ExecResult, exec } from '../../src/lib/exec.js';
import { nativeArch } from '../../src/lib/native.js';

export type Json = Record<string, unknown>;
export type OciConfig = Json & {
  process: Json & { args: string[]; env: string[]; capabilities?: Json; user: Json };
  linux: Json & { namespaces: { type: string; path?: string }[]; resources: Json };
  mounts: Json[];
};

const ROOT = path.resolve(import.meta.dirname, '..', '..');

/** The berth-runtime binary under test; BERTH_RUNTIME_ASAN=1 (or asan: true) picks the sanitizer build. */
export function berthRuntimeBinary(asan = process.env.BERTH_RUNTIME_ASAN === '1'): string {
  const dir = path.join(ROOT, 'native', 'build', `${nativeArch()}${asan ? '-asan' : ''}`);
  return path.join(dir, 'berth-runtime');
}

let built: Promise<void> | undefined;
/** Build the native runtime (plain and ASan) once per test process. */
export function buildNativeRuntime(): Promise<void> {
  built ??= (async () => {
    await exec('make', ['-C', path.join(ROOT, 'native')], { timeoutMs: 300_000 });
    await exec('make', ['-C', path.join(ROOT, 'native'), 'SANITIZE=1'], { timeoutMs: 300_000 });
  })();
  return built;
}

export const uniq = (prefix: string) => `${prefix}-${randomBytes(5).toString('hex')}`;

const sharedDirs: string[] = [];
/**
 * A test file's `before`: build the runtime and make the busybox rootfs its tests share (as root; ''
 * otherwise, the tests then skip). `removeSharedRootfs` in `after.always` deletes it.
 */
export async function sharedRootfs(): Promise<string> {
  if (process.getuid?.() !== 0) return '';
  await buildNativeRuntime();
  const dir = await mkdtemp(path.join(tmpdir(), 'berth-rootfs-'));
  sharedDirs.push(dir);
  await chmod(dir, 0o755); // user-namespace cases reach the rootfs as a mapped uid
  return makeBusyboxRootfs(dir);
}

export async function removeSharedRootfs(): Promise<void> {
  for (const dir of sharedDirs.splice(0)) await rm(dir, { recursive: true, force: true });
}

/** A busybox-static rootfs (/bin/busybox + applet symlinks + the usual empty dirs). */
export async function makeBusyboxRootfs(dir: string): Promise<string> {
  const rootfs = path.join(dir, 'rootfs');
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'root', 'mnt'])
    await mkdir(path.join(rootfs, d), { recursive: true });
  await copyFile('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
  await chmod(path.join(rootfs, 'bin', 'busybox'), 0o755);
  await chmod(path.join(rootfs, 'tmp'), 0o1777);
  const { stdout } = await exec('/bin/busybox', ['--list']);
  for (const applet of stdout.split('\n').filter((a) => a && a !== 'busybox')) {
    await symlink('busybox', path.join(rootfs, 'bin', applet));
  }
  await writeFile(
    path.join(rootfs, 'etc', 'passwd'),
    'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n',
  );
  await writeFile(path.join(rootfs, 'etc', 'group'), 'root:x:0:\ntty:x:5:\nnobody:x:65534:\n');
  return rootfs;
}

/** runc's `runc spec` default, non-terminal, with a unique cgroup path. */
export function baseConfig(rootfs: string, args: string[], cgroupsPath: string): OciConfig {
  const caps = ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'];
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'TERM=xterm'],
      cwd: '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps, ambient: caps },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: rootfs, readonly: true },
    hostname: 'berth-test',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
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
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      {
        destination: '/dev/mqueue',
        type: 'mqueue',
        source: 'mqueue',
        options: ['nosuid', 'noexec', 'nodev'],
      },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      {
        destination: '/sys/fs/cgroup',
        type: 'cgroup',
        source: 'cgroup',
        options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
      },
    ],
    linux: {
      cgroupsPath,
      resources: { devices: [{ allow: false, access: 'rwm' }] },
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/sys/firmware',
        '/proc/scsi',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

export interface RuntimeEnv {
  dir: string;
  rootfs: string;
  /** Per-runtime state roots, removed (with any container left) in teardown. */
  stateRoot: (runtime: string) => string;
  /** Write a bundle (config.json referencing the shared rootfs) and return its directory. */
  bundle: (config: OciConfig) => Promise<string>;
  /** A cgroup path unique to this test, deleted from every hierarchy in teardown. */
  cgroup: () => string;
}

const V1 = '/sys/fs/cgroup';

/**
 * Remove a cgroup path from every v1 hierarchy and the unified one. A process a failed test left in it
 * (a container init still waiting for `start`) is killed first, so nothing outlives the test.
 */
export async function removeCgroup(cgPath: string): Promise<void> {
  const hierarchies = existsSync(V1) ? await readdir(V1) : [];
  for (const h of hierarchies) {
    const dir = path.join(V1, h, cgPath);
    if (!existsSync(dir)) continue;
    for (let attempt = 0; attempt < 50; attempt++) {
      const procs = await readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
      const pids = procs.split('\n').filter(Boolean).map(Number);
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      if (pids.length === 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await rm(dir, { recursive: false }).catch(async () => exec('rmdir', [dir], { allowFailure: true }));
  }
}

export async function cgroupExists(cgPath: string): Promise<boolean> {
  const hierarchies = existsSync(V1) ? await readdir(V1) : [];
  return hierarchies.some((h) => existsSync(path.join(V1, h, cgPath)));
}

/** A temp dir with a busybox rootfs, torn down with everything the test made. */
export async function runtimeEnv(t: ExecutionContext, rootfsShared?: string): Promise<RuntimeEnv> {
  const dir = await mkdtemp(path.join(tmpdir(), 'berth-rt-'));
  await chmod(dir, 0o755);
  const rootfs = rootfsShared ?? (await makeBusyboxRootfs(dir));
  const cgroups: string[] = [];
  const roots = new Map<string, string>();
  t.teardown(async () => {
    for (const [runtime, root] of roots) {
      if (!existsSync(root)) continue;
      for (const id of await readdir(root)) {
        const bin = runtime === 'runc' ? 'runc' : berthRuntimeBinary();
        await exec(bin, ['--root', root, 'delete', '--force', id], { allowFailure: true, timeoutMs: 20_000 });
      }
    }
    for (const cg of cgroups) await removeCgroup(cg);
    await rm(dir, { recursive: true, force: true });
  });
  let n = 0;
  return {
    dir,
    rootfs,
    stateRoot: (runtime) => {
      let root = roots.get(runtime);
      if (!root) {
        root = path.join(dir, `state-${runtime}`);
        roots.set(runtime, root);
      }
      return root;
    },
    bundle: async (config) => {
      const b = path.join(dir, `bundle-${n++}`);
      await mkdir(b, { recursive: true });
      await writeFile(path.join(b, 'config.json'), JSON.stringify(config, null, 2));
      return b;
    },
    cgroup: () => {
      const cg = `/${uniq('berth-test')}`;
      cgroups.push(cg);
      return cg;
    },
  };
}

export type RuntimeName = 'berth' | 'runc';

/** Run a verb of a runtime with its state root. */
export function runtimeExec(
  env: RuntimeEnv,
  runtime: RuntimeName,
  args: string[],
  opts: { timeoutMs?: number; binary?: string; env?: Record<string, string> } = {},
): Promise<ExecResult> {
  const bin = runtime === 'runc' ? 'runc' : (opts.binary ?? berthRuntimeBinary());
  return exec(bin, ['--root', env.stateRoot(runtime), ...args], {
    allowFailure: true,
    timeoutMs: opts.timeoutMs ?? 60_000,
    env: {
      ...process.env,
      ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0',
      UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
      ...opts.env,
    },
  });
}

/**
 * Run a verb whose children outlive it (`create`, `run --detach`): the container inherits the runtime's
 * stdio, so stdout/stderr go to files and we wait for the runtime's exit, not for the pipes to close.
 * Returns the runtime's exit code and its stderr; the container's output lands in `<dir>/<id>.out`.
 */
export async function runtimeSpawn(
  env: RuntimeEnv,
  runtime: RuntimeName,
  args: string[],
  id: string,
  opts: { binary?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; stderr: string; out: string }> {
  const bin = runtime === 'runc' ? 'runc' : (opts.binary ?? berthRuntimeBinary());
  const out = path.join(env.dir, `${id}.out`);
  const errFile = path.join(env.dir, `${id}.${Date.now()}.err`);
  const outFd = openSync(out, 'a');
  const errFd = openSync(errFile, 'w');
  try {
    const child = spawn(bin, ['--root', env.stateRoot(runtime), ...args], {
      stdio: ['ignore', outFd, errFd],
      env: { ...process.env, ...opts.env },
    });
    const code = await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (c, sig) => resolve(c ?? 128 + (sig ? 9 : 0)));
    });
    return { code, stderr: await readFile(errFile, 'utf8'), out };
  } finally {
    closeSync(outFd);
    closeSync(errFd);
  }
}

/** Create a bundle from config and `run` it to completion under a runtime. */
export async function runBundle(
  env: RuntimeEnv,
  runtime: RuntimeName,
  config: OciConfig,
  opts: { binary?: string } = {},
): Promise<ExecResult & { id: string }> {
  const bundle = await env.bundle(config);
  const id = uniq(runtime);
  const r = await runtimeExec(env, runtime, ['run', '--bundle', bundle, id], opts);
  return { ...r, id };
}

export function clone<T>(v: T): T {
  return structuredClone(v);
}
