/**
 * The cgroup v2 backend on this host's unified hierarchy (/sys/fs/cgroup/unified: only hugetlb is
 * delegated there, but cgroup.procs, subtree_control and the eBPF device controller work on any v2
 * cgroup). The full v2 limits (memory.max, pids.max, cpu.max) run in the VM harness (test/vm).
 * BERTH_RUNTIME_CGROUP_MODE / BERTH_RUNTIME_CGROUP_V2_ROOT point berth-runtime at that hierarchy.
 */
import { existsSync } from 'node:fs';
import { readFile, rmdir } from 'node:fs/promises';
import * as path from 'node:path';
import test from 'ava';
import { freeCharMajor, ioSchedulers, unifiedControllers } from '../../helpers/cgroup-probe.js';
import { needPrivileges } from '../../helpers/privileged.js';
import {
  baseConfig,
  berthRuntimeBinary,
  removeSharedRootfs,
  runtimeEnv,
  runtimeExec,
  runtimeSpawn,
  sharedRootfs,
  uniq,
} from '../../helpers/runtime-native.js';

const UNIFIED = '/sys/fs/cgroup/unified';
const V2 = { BERTH_RUNTIME_CGROUP_MODE: 'v2', BERTH_RUNTIME_CGROUP_V2_ROOT: UNIFIED };

let rootfs: string;
test.before(async () => {
  rootfs = await sharedRootfs();
});
test.after.always(removeSharedRootfs);

test('v2 backend: cgroup created under the unified root, hugetlb limit and unified keys applied, removed on delete', async (t) => {
  if (!needPrivileges(t, { root: true, paths: [`${UNIFIED}/cgroup.controllers`] })) return;
  // hugetlb only where the unified hierarchy has the controller and the kernel 2 MB pages; without it
  // create must fail naming the controller
  const hugetlb =
    ((await unifiedControllers())?.has('hugetlb') ?? false) &&
    existsSync('/sys/kernel/mm/hugepages/hugepages-2048kB');
  t.log(`hugetlb in the unified hierarchy with 2 MB pages: ${hugetlb}`);
  const env = await runtimeEnv(t, rootfs);
  const cg = env.cgroup();
  const config = baseConfig(rootfs, ['sleep', '60'], cg);
  config.linux.resources = {
    ...config.linux.resources,
    hugepageLimits: [{ pageSize: '2MB', limit: 4 * 1024 * 1024 }],
    unified: { 'cgroup.max.descendants': '7' },
  };
  const bundle = await env.bundle(config);
  const id = uniq('v2');
  const r = await runtimeSpawn(env, 'berth', ['create', '--bundle', bundle, id], id, {
    binary: berthRuntimeBinary(true),
    env: V2,
  });
  const dir = path.join(UNIFIED, cg);
  if (!hugetlb) {
    t.is(r.code, 1);
    t.regex(r.stderr, /hugepageLimits` needs the hugetlb controller/);
    t.false(existsSync(dir));
    return;
  }
  t.is(r.code, 0, r.stderr);
  const { pid } = JSON.parse((await runtimeExec(env, 'berth', ['state', id], { env: V2 })).stdout) as {
    pid: number;
  };
  t.true((await readFile(path.join(dir, 'cgroup.procs'), 'utf8')).split('\n').includes(String(pid)));
  t.is((await readFile(path.join(dir, 'hugetlb.2MB.max'), 'utf8')).trim(), '4194304');
  t.is((await readFile(path.join(dir, 'cgroup.max.descendants'), 'utf8')).trim(), '7');
  t.regex(await readFile(path.join(UNIFIED, 'cgroup.subtree_control'), 'utf8'), /hugetlb/);
  t.regex(await readFile(`/proc/${pid}/cgroup`, 'utf8'), new RegExp(`^0::${cg}$`, 'm'));
  t.is((await runtimeExec(env, 'berth', ['delete', '--force', id], { env: V2 })).code, 0);
  t.false(existsSync(dir));
});

test('v2 backend: the eBPF device program allows and denies by rule', async (t) => {
  if (!needPrivileges(t, { root: true, paths: [`${UNIFIED}/cgroup.controllers`] })) return;
  const env = await runtimeEnv(t, rootfs);
  // a char major no driver owns here: opening it gives ENXIO when the cgroup allows it, EPERM when not
  const major = await freeCharMajor();
  const script =
    'cat /dev/fake-r 2>&1; echo x 2>&1 > /dev/fake-r; cat /dev/fake-none 2>&1; cat /dev/null && echo null-ok; head -c 1 /dev/zero | wc -c';
  const config = baseConfig(rootfs, ['sh', '-c', script], env.cgroup());
  config.linux.devices = [
    { path: '/dev/fake-r', type: 'c', major, minor: 1 },
    { path: '/dev/fake-none', type: 'c', major, minor: 2 },
  ];
  config.linux.resources = {
    devices: [
      { allow: false, access: 'rwm' },
      { allow: true, type: 'c', major, access: 'rwm' },
      { allow: false, type: 'c', major, minor: 2, access: 'rwm' },
      { allow: false, type: 'c', major, minor: 1, access: 'w' },
    ],
  };
  const bundle = await env.bundle(config);
  const r = await runtimeExec(env, 'berth', ['run', '--bundle', bundle, uniq('v2dev')], {
    binary: berthRuntimeBinary(true),
    env: V2,
  });
  t.is(r.code, 0, `stderr: ${r.stderr}\nstdout: ${r.stdout}`);
  const lines = r.stdout.trim().split('\n');
  t.regex(lines[0] ?? '', /fake-r': No such device or address/, 'read allowed (major wildcard rule)');
  t.regex(lines[1] ?? '', /fake-r: Operation not permitted/, 'write denied by the later rule');
  t.regex(lines[2] ?? '', /fake-none': Operation not permitted/, 'denied minor');
  t.is(lines[3], 'null-ok', 'default devices stay allowed');
  t.is(lines[4], '1');
});

test('v2 backend: systemd-style cgroupsPath maps to a slice/scope path', async (t) => {
  if (!needPrivileges(t, { root: true, paths: [`${UNIFIED}/cgroup.controllers`] })) return;
  const env = await runtimeEnv(t, rootfs);
  const slice = `berthtest${uniq('x').slice(2)}`;
  const id = uniq('scope');
  const config = baseConfig(
    rootfs,
    ['sh', '-c', 'grep ^0:: /proc/self/cgroup'],
    `${slice}-sub.slice:berth:${id}`,
  );
  t.teardown(async () => {
    for (const d of [
      `${slice}.slice/${slice}-sub.slice/berth-${id}.scope`,
      `${slice}.slice/${slice}-sub.slice`,
      `${slice}.slice`,
    ])
      await rmdir(path.join(UNIFIED, d)).catch(() => undefined);
  });
  const bundle = await env.bundle(config);
  const r = await runtimeExec(env, 'berth', ['run', '--bundle', bundle, id], { env: V2 });
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.trim(), `0::/${slice}.slice/${slice}-sub.slice/berth-${id}.scope`);
});

test('v2 backend: blockIO weights go to io.bfq.weight, else io.weight (converted), else create fails naming both', async (t) => {
  if (!needPrivileges(t, { root: true, paths: [`${UNIFIED}/cgroup.controllers`] })) return;
  const env = await runtimeEnv(t, rootfs);
  // what the kernel offers: BFQ registers io.bfq.weight, io.cost (root's io.cost.qos) provides io.weight,
  // and neither exists when the hierarchy has no io controller (this hybrid host's unified tree)
  const hasIo = (await unifiedControllers())?.has('io') ?? false;
  const bfq = hasIo && (await ioSchedulers()).has('bfq');
  const ioCost = hasIo && existsSync(path.join(UNIFIED, 'io.cost.qos'));
  t.log(`io controller: ${hasIo}, BFQ: ${bfq}, io.cost: ${ioCost}`);
  const cg = env.cgroup();
  const config = baseConfig(rootfs, ['sleep', '60'], cg);
  config.linux.resources = { ...config.linux.resources, blockIO: { weight: 300 } };
  const bundle = await env.bundle(config);
  const id = uniq('v2io');
  const r = await runtimeSpawn(env, 'berth', ['create', '--bundle', bundle, id], id, { env: V2 });
  if (!bfq && !ioCost) {
    t.is(r.code, 1);
    t.regex(r.stderr, /blockIO` weights: .* has neither io\.bfq\.weight \(BFQ scheduler\) nor io\.weight/);
    t.false(existsSync(path.join(UNIFIED, cg)), 'nothing left behind');
    return;
  }
  t.is(r.code, 0, r.stderr);
  const file = bfq ? 'io.bfq.weight' : 'io.weight';
  t.regex(await readFile(path.join(UNIFIED, cg, file), 'utf8'), bfq ? /\b300\b/ : /\b2930\b/);
  t.is((await runtimeExec(env, 'berth', ['delete', '--force', id], { env: V2 })).code, 0);
});

test('v2 backend: linux.resources.network fails clearly (cgroup v2 has no net_cls/net_prio)', async (t) => {
  if (!needPrivileges(t, { root: true, paths: [`${UNIFIED}/cgroup.controllers`] })) return;
  const env = await runtimeEnv(t, rootfs);
  for (const network of [{ classID: 0x100001 }, { priorities: [{ name: 'lo', priority: 5 }] }]) {
    const cg = env.cgroup();
    const config = baseConfig(rootfs, ['true'], cg);
    config.linux.resources = { ...config.linux.resources, network };
    const bundle = await env.bundle(config);
    const id = uniq('v2net');
    const r = await runtimeSpawn(env, 'berth', ['create', '--bundle', bundle, id], id, { env: V2 });
    t.is(r.code, 1, JSON.stringify(network));
    t.regex(r.stderr, /`linux\.resources\.network` needs the net_cls\/net_prio controllers of cgroup v1/);
    t.false(existsSync(path.join(UNIFIED, cg)));
    t.false(existsSync(path.join(env.stateRoot('berth'), id)));
  }
});

test('v2 backend: memory.kernelTCP and memory.kernel are ignored with a warning (as runc does)', async (t) => {
  if (!needPrivileges(t, { root: true, paths: [`${UNIFIED}/cgroup.controllers`] })) return;
  const env = await runtimeEnv(t, rootfs);
  const config = baseConfig(rootfs, ['true'], env.cgroup());
  config.linux.resources = { ...config.linux.resources, memory: { kernelTCP: 1 << 20, kernel: 1 << 24 } };
  const bundle = await env.bundle(config);
  const log = path.join(env.dir, 'runtime.log');
  const args = ['--log', log, '--log-format', 'json', 'run', '--bundle', bundle, uniq('v2tcp')];
  const r = await runtimeExec(env, 'berth', args, { env: V2 });
  t.is(r.code, 0, r.stderr);
  t.regex(
    r.stderr,
    /warning: `linux\.resources\.memory\.kernelTCP` ignored: cgroup v2 has no TCP buffer limit/,
  );
  t.regex(r.stderr, /warning: `linux\.resources\.memory\.kernel` ignored/);
  const lines = (await readFile(log, 'utf8')).trim().split('\n');
  t.true(
    lines.some((l) => (JSON.parse(l) as { level: string; msg: string }).level === 'warning'),
    'warnings reach --log too',
  );
});
