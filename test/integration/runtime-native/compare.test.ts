/**
 * berth-runtime vs runc: each case is a config change; the same probe runs inside the container under
 * both runtimes (same bundle, same rootfs) and what the process sees must match section by section.
 * The sanitizer build of berth-runtime is used here, so leaks and UB in every config path fail the case.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import test from 'ava';
import { filesOfNewCgroup, v1Hierarchies } from '../../helpers/cgroup-probe.js';
import { needPrivileges } from '../../helpers/privileged.js';
import {
  baseConfig,
  berthRuntimeBinary,
  clone,
  type OciConfig,
  removeSharedRootfs,
  runBundle,
  runtimeEnv,
  sharedRootfs,
} from '../../helpers/runtime-native.js';

const PROBE = [
  'echo "== id"; id',
  'echo "== groups"; grep -E "^Groups" /proc/self/status',
  'echo "== hostname"; hostname; cat /proc/sys/kernel/domainname',
  'echo "== caps"; grep -E "^(Cap|NoNewPrivs)" /proc/self/status',
  'echo "== limits"; cat /proc/self/limits',
  'echo "== umask"; umask',
  'echo "== cwd"; pwd',
  'echo "== env"; env | grep -v -E "^(SHLVL|PWD|OLDPWD)=" | sort',
  'echo "== oom"; cat /proc/self/oom_score_adj',
  'echo "== mounts"; cut -d" " -f4- /proc/self/mountinfo | sed -E "s/(shared|master):[0-9]+/\\1:N/g" | sort',
  'echo "== dev"; stat -c "%n %F %a %u %g %t %T" /dev/* | sort; for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done',
].join('; ');

type Mutate = (c: OciConfig, ctx: { dir: string }) => Promise<void> | void;
interface Case {
  name: string;
  mutate: Mutate;
  /** extra shell run after the probe (a function when it depends on what the host offers) */
  extra?: string | (() => string);
  /** expected substring in berth's output (to prove the case exercised something) */
  expect?: RegExp;
  /** probe sections where runc 1.1.5 is known to differ (reason in the case) */
  skipSections?: string[];
}

const caps = (...names: string[]) => names.map((n) => `CAP_${n}`);

const cases: Case[] = [
  { name: 'runc spec defaults', mutate: () => {}, expect: /CapBnd:\s+0000000020000420/ },
  {
    name: 'process.user uid/gid/additionalGids',
    mutate: (c) => {
      c.process.user = { uid: 1000, gid: 1001, additionalGids: [10, 20, 30] };
    },
    expect: /uid=1000 gid=1001 groups=10,20,30/,
  },
  {
    name: 'five capability sets',
    mutate: (c) => {
      const set = caps('CHOWN', 'NET_RAW', 'SYS_ADMIN', 'SETUID');
      c.process.capabilities = {
        bounding: [...set, 'CAP_KILL'],
        effective: set,
        permitted: set,
        inheritable: caps('CHOWN', 'NET_RAW'),
        ambient: caps('CHOWN'),
      };
    },
    expect: /CapAmb:\s+0000000000000001/,
  },
  {
    name: 'rlimits',
    mutate: (c) => {
      c.process.rlimits = [
        { type: 'RLIMIT_NOFILE', soft: 512, hard: 2048 },
        { type: 'RLIMIT_NPROC', soft: 100, hard: 200 },
        { type: 'RLIMIT_CORE', soft: 0, hard: 0 },
        { type: 'RLIMIT_STACK', soft: 4194304, hard: 8388608 },
      ];
    },
    expect: /Max open files\s+512\s+2048/,
  },
  {
    name: 'hostname and domainname',
    mutate: (c) => {
      c.hostname = 'box-1';
      c.domainname = 'fleet.example';
    },
    skipSections: ['hostname'], // runc 1.1.5 predates domainname support: it leaves "(none)"
    expect: /box-1\nfleet\.example/,
  },
  {
    name: 'umask, cwd, env',
    mutate: (c) => {
      c.process.user = { uid: 0, gid: 0, umask: 0o027 };
      c.process.cwd = '/tmp';
      c.process.env = [...c.process.env, 'FOO=bar baz', 'EMPTY='];
    },
    expect: /0027\n== cwd\n\/tmp/,
  },
  {
    name: 'oomScoreAdj',
    mutate: (c) => {
      c.process.oomScoreAdj = 421;
    },
    expect: /== oom\n421/,
  },
  {
    name: 'noNewPrivileges off',
    mutate: (c) => {
      c.process.noNewPrivileges = false;
    },
    expect: /NoNewPrivs:\s+0/,
  },
  {
    name: 'sysctl in ipc and net namespaces',
    mutate: (c) => {
      c.linux.sysctl = { 'kernel.shm_rmid_forced': '1', 'net.ipv4.ip_forward': '1', 'kernel.msgmax': '4096' };
    },
    extra: 'cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax',
    expect: /\n1\n1\n4096\n?$/,
  },
  {
    name: 'readonly and masked paths',
    mutate: (c) => {
      c.linux.readonlyPaths = ['/proc/sys', '/tmp'];
      c.linux.maskedPaths = ['/proc/kcore', '/proc/acpi', '/etc/passwd', '/does/not/exist'];
      (c.root as { readonly: boolean }).readonly = false;
    },
    extra:
      'echo x > /tmp/f 2>&1 || echo tmp-readonly; wc -c < /etc/passwd; ls /proc/acpi | wc -l; echo 1 > /proc/sys/vm/swappiness || echo sys-readonly',
    expect: /tmp-readonly\n0\n0\n/,
  },
  {
    name: 'read-write root',
    mutate: (c) => {
      (c.root as { readonly: boolean }).readonly = false;
    },
    extra: 'touch /probe-file && echo writable && rm /probe-file',
    expect: /writable/,
  },
  {
    name: 'linux.devices',
    mutate: (c) => {
      c.linux.devices = [
        { path: '/dev/fuse', type: 'c', major: 10, minor: 229, fileMode: 0o640, uid: 0, gid: 5 },
        { path: '/dev/sub/loop-control', type: 'c', major: 10, minor: 237 },
      ];
      (c.linux.resources as { devices: unknown[] }).devices.push({
        allow: true,
        type: 'c',
        major: 10,
        minor: 229,
        access: 'rw',
      });
    },
    extra: 'stat -c "%n %a %g %t %T" /dev/fuse /dev/sub/loop-control',
    expect: /\/dev\/fuse 640 5 a e5/,
  },
  {
    name: 'mounts: tmpfs options, bind ro, rbind',
    mutate: async (c, { dir }) => {
      const src = path.join(dir, 'bind-src');
      await mkdir(path.join(src, 'sub'), { recursive: true });
      await writeFile(path.join(src, 'hello'), 'hello\n');
      c.mounts.push(
        {
          destination: '/mnt/t',
          type: 'tmpfs',
          source: 'tmpfs',
          options: ['nosuid', 'nodev', 'size=1m', 'mode=700'],
        },
        { destination: '/mnt/b', type: 'bind', source: src, options: ['bind', 'ro'] },
        { destination: '/mnt/r', type: 'none', source: src, options: ['rbind', 'nosuid', 'rprivate'] },
      );
    },
    extra: 'cat /mnt/b/hello; touch /mnt/b/x 2>/dev/null || echo bind-ro',
    expect: /hello\nbind-ro/,
  },
  {
    name: 'user namespace with uid/gid mappings',
    mutate: (c) => {
      c.linux.namespaces.push({ type: 'user' });
      c.linux.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
      c.linux.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
      // sysfs needs the container's own netns in a user namespace; /dev nodes come from bind mounts
      c.mounts = c.mounts.filter((m) => m.destination !== '/sys/fs/cgroup');
    },
    extra: 'cat /proc/self/uid_map /proc/self/gid_map',
    // runc mounts mqueue before entering the ipc namespace's owner userns: its root shows the overflow gid
    skipSections: ['dev'],
    expect: /0\s+100000\s+65536/,
  },
  {
    name: 'cgroup namespace',
    mutate: (c) => {
      c.linux.namespaces.push({ type: 'cgroup' });
    },
    extra: 'cat /proc/self/cgroup | grep -E "memory|pids"',
    expect: /:memory:\/\n/,
  },
  {
    name: 'rootfsPropagation private',
    mutate: (c) => {
      c.linux.rootfsPropagation = 'private';
    },
  },
  {
    name: 'cgroup v1 limits as seen inside',
    mutate: (c) => {
      c.linux.resources = {
        ...c.linux.resources,
        memory: { limit: 64 * 1024 * 1024, reservation: 32 * 1024 * 1024 },
        cpu: { shares: 512, quota: 50000, period: 100000, cpus: '0', mems: '0' },
        pids: { limit: 64 },
        // only where the kernel has an I/O scheduler with cgroup weights (BFQ, CFQ): both runtimes fail
        // without one (cgroup-v1.test.ts tests that error)
        ...(blkioWeightFile ? { blockIO: { weight: 300 } } : {}),
      };
    },
    extra: () =>
      `cd /sys/fs/cgroup; cat memory/memory.limit_in_bytes memory/memory.soft_limit_in_bytes cpu/cpu.shares cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpuset/cpuset.cpus pids/pids.max${blkioWeightFile ? ` blkio/${blkioWeightFile}` : ''}; sort devices/devices.list`,
    expect: /67108864\n33554432\n512\n50000\n100000\n0\n64\n/,
  },
  {
    name: 'seccomp: errno for syscalls by name, masked-eq on args, kill and trap',
    mutate: (c) => {
      (c.root as { readonly: boolean }).readonly = false;
      c.linux.seccomp = {
        defaultAction: 'SCMP_ACT_ALLOW',
        architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM', 'SCMP_ARCH_PPC64LE'],
        syscalls: [
          { names: ['mkdir', 'mkdirat', 'not_a_syscall_here'], action: 'SCMP_ACT_ERRNO' },
          // openat with O_TRUNC → EROFS; reads and plain writes still work
          {
            names: ['openat', 'open'],
            action: 'SCMP_ACT_ERRNO',
            errnoRet: 30,
            args: [{ index: 2, value: 0o1000, valueTwo: 0o1000, op: 'SCMP_CMP_MASKED_EQ' }],
            comment: 'index 2 is flags for openat; for open (index 1) the check never matches',
          },
          { names: ['setpriority'], action: 'SCMP_ACT_KILL_PROCESS' },
          { names: ['sync'], action: 'SCMP_ACT_TRAP' },
          { names: ['getpid'], action: 'SCMP_ACT_LOG' },
          // kill(pid, 0) is refused with EACCES only when the pid is above 4000000000 (64-bit compare)
          {
            names: ['kill'],
            action: 'SCMP_ACT_ERRNO',
            errnoRet: 13,
            args: [
              { index: 1, value: 0, op: 'SCMP_CMP_EQ' },
              { index: 0, value: 1000, op: 'SCMP_CMP_GT' },
            ],
          },
        ],
      };
    },
    extra:
      'mkdir /tmp/d 2>&1; echo "mkdir=$?"; echo x > /tmp/f 2>&1; echo "write=$?"; head -c 4 /etc/passwd; echo; nice -n 1 true; echo "nice=$?"; sync; echo "sync=$?"; kill -0 1; echo "kill1=$?"; kill -0 4000 2>&1; echo "kill4000=$?"; grep Seccomp: /proc/self/status',
    expect:
      /mkdir=1\n[\s\S]*Read-only file system[\s\S]*write=1\nroot\n[\s\S]*nice=159\nsync=159[\s\S]*kill1=0[\s\S]*Permission denied|Seccomp:\s+2/,
  },
  {
    name: 'seccomp loaded before dropping privileges (noNewPrivileges off)',
    mutate: (c) => {
      c.process.noNewPrivileges = false;
      c.process.user = { uid: 1000, gid: 1000 };
      (c.root as { readonly: boolean }).readonly = false;
      c.linux.seccomp = {
        defaultAction: 'SCMP_ACT_ALLOW',
        syscalls: [{ names: ['mknod', 'mknodat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
      };
    },
    extra: 'mknod /tmp/p-$$ p 2>&1; echo "mknod=$?"; grep -E "Seccomp:|NoNewPrivs" /proc/self/status',
    expect: /Operation not permitted\nmknod=1\nNoNewPrivs:\s+0\nSeccomp:\s+2/,
  },
  {
    name: 'joining network and uts namespaces by path',
    mutate: (c) => {
      c.linux.namespaces = c.linux.namespaces.map((ns) =>
        ns.type === 'network' || ns.type === 'uts'
          ? { type: ns.type, path: `/proc/${holder()}/ns/${ns.type === 'network' ? 'net' : 'uts'}` }
          : ns,
      );
      delete c.hostname;
    },
    extra:
      'readlink /proc/self/ns/net /proc/self/ns/uts 2>/dev/null || (readlink /proc/self/ns/net; readlink /proc/self/ns/uts)',
    expect: /== hostname\nberth-holder\n/,
  },
];

let rootfs: string;
/** The v1 blkio weight file a new cgroup gets here (BFQ's or CFQ's), if any: probed in before(). */
let blkioWeightFile: string | undefined;
/** A process holding its own net and uts namespaces (hostname berth-holder) for the join-by-path case. */
let holderProcess: ChildProcess | undefined;
const holder = () => holderProcess?.pid ?? 0;
test.before(async () => {
  if (process.getuid?.() !== 0) return;
  holderProcess = spawn('unshare', ['--net', '--uts', 'sh', '-c', 'hostname berth-holder; exec sleep 600'], {
    stdio: 'ignore',
  });
  await new Promise((r) => setTimeout(r, 200));
  const blkio = (await v1Hierarchies()).get('blkio');
  const weights = blkio
    ? await filesOfNewCgroup(blkio, ['blkio.bfq.weight', 'blkio.weight'])
    : new Set<string>();
  blkioWeightFile = weights.has('blkio.bfq.weight') ? 'blkio.bfq.weight' : [...weights][0];
  rootfs = await sharedRootfs();
});

test.after.always(async () => {
  holderProcess?.kill('SIGKILL');
  await removeSharedRootfs();
});

for (const c of cases) {
  test.serial(`berth-runtime matches runc: ${c.name}`, async (t) => {
    if (!needPrivileges(t, { root: true, paths: ['/sys/fs/cgroup/memory'] })) return;
    const env = await runtimeEnv(t, rootfs);
    const extra = typeof c.extra === 'function' ? c.extra() : c.extra;
    const script = extra ? `${PROBE}; echo "== extra"; ${extra}` : PROBE;
    const outputs: Record<string, string> = {};
    const cgroup = env.cgroup(); // one path: the runs are sequential and each deletes its cgroup
    for (const runtime of ['berth', 'runc'] as const) {
      const config = baseConfig(rootfs, ['sh', '-c', script], cgroup);
      await c.mutate(config, { dir: env.dir });
      const r = await runBundle(env, runtime, clone(config), { binary: berthRuntimeBinary(true) });
      t.is(r.code, 0, `${runtime} exit ${r.code}: ${r.stderr}`);
      outputs[runtime] = r.stdout;
    }
    const sections = (s: string) =>
      Object.fromEntries(
        s
          .split(/^== /m)
          .filter(Boolean)
          .map((p) => [p.split('\n')[0] ?? '', p] as const)
          .filter(([name]) => !c.skipSections?.includes(name)),
      );
    t.deepEqual(sections(outputs.berth ?? ''), sections(outputs.runc ?? ''));
    if (c.expect) t.regex(outputs.berth ?? '', c.expect);
  });
}
