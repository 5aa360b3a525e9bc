/**
 * The v1 backend against what this host's kernel really offers, probed first (test/helpers/cgroup-probe):
 * I/O weights (BFQ's file, else CFQ's, else a clear error), net_cls/net_prio (applied where mounted, else
 * a clear error), hugetlb (a v1 hierarchy, else the unified one of a hybrid host, else a clear error) and
 * memory.kernelTCP (memory.kmem.tcp.limit_in_bytes, or a warning on kernels without it). Whatever branch
 * this host takes, the test asserts that branch; the others run on hosts (or in the VM) that have them.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import {
  CGROUP_ROOT,
  filesOfNewCgroup,
  ioSchedulers,
  UNIFIED,
  unifiedControllers,
  v1Hierarchies,
} from '../../helpers/cgroup-probe.js';
import { needPrivileges } from '../../helpers/privileged.js';
import {
  baseConfig,
  berthRuntimeBinary,
  cgroupExists,
  type OciConfig,
  type RuntimeEnv,
  removeSharedRootfs,
  runtimeEnv,
  runtimeExec,
  runtimeSpawn,
  sharedRootfs,
  uniq,
} from '../../helpers/runtime-native.js';

let rootfs: string;
test.before(async () => {
  rootfs = await sharedRootfs();
});
test.after.always(removeSharedRootfs);

function ready(t: ExecutionContext): boolean {
  return needPrivileges(t, { root: true, paths: [`${CGROUP_ROOT}/memory`, `${CGROUP_ROOT}/devices`] });
}

const asan = { binary: berthRuntimeBinary(true) };

/** create a container from config; returns the runtime's result and the ids to inspect. */
async function create(env: RuntimeEnv, config: OciConfig) {
  const bundle = await env.bundle(config);
  const id = uniq('v1');
  const r = await runtimeSpawn(env, 'berth', ['create', '--bundle', bundle, id], id, asan);
  return { ...r, id };
}

async function failsCleanly(
  t: ExecutionContext,
  env: RuntimeEnv,
  r: { code: number; id: string },
  cg: string,
) {
  t.is(r.code, 1);
  t.false(await cgroupExists(cg), 'no cgroup left in any hierarchy');
  t.false(existsSync(path.join(env.stateRoot('berth'), r.id)), 'no state left');
}

test('blockIO weight: blkio.bfq.weight, else blkio.weight, else create fails naming both', async (t) => {
  if (!ready(t)) return;
  const blkio = (await v1Hierarchies()).get('blkio');
  if (!blkio)
    return t.pass('no v1 blkio hierarchy here: the missing-controller error is tested with net_cls');
  const offered = await filesOfNewCgroup(blkio, ['blkio.bfq.weight', 'blkio.weight']);
  const schedulers = await ioSchedulers();
  t.log(`I/O schedulers: ${[...schedulers].join(' ')}; weight files: ${[...offered].join(' ') || 'none'}`);
  // BFQ registers its blkio files with the scheduler: the two probes must agree
  t.is(offered.has('blkio.bfq.weight'), schedulers.has('bfq'));
  const env = await runtimeEnv(t, rootfs);
  const cg = env.cgroup();
  const config = baseConfig(rootfs, ['sleep', '60'], cg);
  config.linux.resources = { ...config.linux.resources, blockIO: { weight: 300 } };
  const r = await create(env, config);
  const file = offered.has('blkio.bfq.weight')
    ? 'blkio.bfq.weight'
    : offered.has('blkio.weight')
      ? 'blkio.weight'
      : undefined;
  if (!file) {
    await failsCleanly(t, env, r, cg);
    t.regex(
      r.stderr,
      /blockIO` weights: `.*` has neither blkio\.bfq\.weight \(BFQ scheduler\) nor blkio\.weight \(CFQ scheduler\)/,
    );
    return;
  }
  t.is(r.code, 0, r.stderr);
  t.regex(await readFile(path.join(blkio, cg, file), 'utf8'), /\b300\b/);
  t.is((await runtimeExec(env, 'berth', ['delete', '--force', r.id])).code, 0);
});

test('network: classID and priorities land in net_cls/net_prio where mounted, else create fails clearly', async (t) => {
  if (!ready(t)) return;
  const hier = await v1Hierarchies();
  t.log(
    `net_cls: ${hier.get('net_cls') ?? 'not mounted'}, net_prio: ${hier.get('net_prio') ?? 'not mounted'}`,
  );
  const env = await runtimeEnv(t, rootfs);
  const cases = [
    { controller: 'net_cls', network: { classID: 0x100001 }, file: 'net_cls.classid', value: /^1048577$/m },
    {
      controller: 'net_prio',
      network: { priorities: [{ name: 'lo', priority: 5 }] },
      file: 'net_prio.ifpriomap',
      value: /^lo 5$/m,
    },
  ];
  for (const c of cases) {
    const cg = env.cgroup();
    const config = baseConfig(rootfs, ['sleep', '60'], cg);
    config.linux.resources = { ...config.linux.resources, network: c.network };
    const r = await create(env, config);
    const mount = hier.get(c.controller);
    if (!mount) {
      await failsCleanly(t, env, r, cg);
      t.regex(
        r.stderr,
        new RegExp(
          `needs the ${c.controller} cgroup controller: no v1 hierarchy under /sys/fs/cgroup has it`,
        ),
      );
      continue;
    }
    t.is(r.code, 0, r.stderr);
    t.regex(await readFile(path.join(mount, cg, c.file), 'utf8'), c.value);
    t.is((await runtimeExec(env, 'berth', ['delete', '--force', r.id])).code, 0);
  }
});

test('hugepageLimits: the v1 hugetlb hierarchy, else the unified one of a hybrid host (process there too), else a clear error', async (t) => {
  if (!ready(t)) return;
  const sizes = (await readdir('/sys/kernel/mm/hugepages').catch(() => [] as string[]))
    .map((d) => /^hugepages-(\d+)kB$/.exec(d)?.[1])
    .filter((k): k is string => k !== undefined)
    .map((kb) => (Number(kb) >= 1024 * 1024 ? `${Number(kb) / 1024 / 1024}GB` : `${Number(kb) / 1024}MB`));
  if (sizes.length === 0) return t.pass('this kernel has no huge pages');
  const pageSize = sizes[0] as string;
  const v1 = (await v1Hierarchies()).get('hugetlb');
  const unified = (await unifiedControllers())?.has('hugetlb') ? UNIFIED : undefined;
  t.log(`hugetlb: v1 ${v1 ?? 'none'}, unified ${unified ?? 'none'}; page size ${pageSize}`);
  const env = await runtimeEnv(t, rootfs);
  const cg = env.cgroup();
  const config = baseConfig(rootfs, ['sleep', '60'], cg);
  config.linux.resources = { ...config.linux.resources, hugepageLimits: [{ pageSize, limit: 4 << 20 }] };
  const r = await create(env, config);
  if (!v1 && !unified) {
    await failsCleanly(t, env, r, cg);
    t.regex(r.stderr, /hugepageLimits` needs the hugetlb cgroup controller/);
    return;
  }
  t.is(r.code, 0, r.stderr);
  const file = v1
    ? path.join(v1, cg, `hugetlb.${pageSize}.limit_in_bytes`)
    : path.join(UNIFIED, cg, `hugetlb.${pageSize}.max`);
  t.is((await readFile(file, 'utf8')).trim(), String(4 << 20));
  const { pid } = JSON.parse((await runtimeExec(env, 'berth', ['state', r.id])).stdout) as { pid: number };
  const cgroups = await readFile(`/proc/${pid}/cgroup`, 'utf8');
  t.regex(cgroups, new RegExp(`:memory:${cg}$`, 'm'));
  // on a hybrid host the container is in the unified hierarchy too (as with runc), where the limit is
  if (existsSync(path.join(UNIFIED, 'cgroup.procs'))) t.regex(cgroups, new RegExp(`^0::${cg}$`, 'm'));
  t.is((await runtimeExec(env, 'berth', ['delete', '--force', r.id])).code, 0);
  t.false(await cgroupExists(cg));
});

test('memory.kernelTCP: memory.kmem.tcp.limit_in_bytes where the kernel has it, else ignored with a warning', async (t) => {
  if (!ready(t)) return;
  const memory = (await v1Hierarchies()).get('memory') as string;
  const has = (await filesOfNewCgroup(memory, ['memory.kmem.tcp.limit_in_bytes'])).size > 0;
  t.log(`memory.kmem.tcp.limit_in_bytes: ${has ? 'present' : 'absent'}`);
  const env = await runtimeEnv(t, rootfs);
  const cg = env.cgroup();
  const config = baseConfig(rootfs, ['sleep', '60'], cg);
  config.linux.resources = { ...config.linux.resources, memory: { limit: 64 << 20, kernelTCP: 3 << 20 } };
  const r = await create(env, config);
  t.is(r.code, 0, r.stderr);
  if (has) {
    t.is(
      (await readFile(path.join(memory, cg, 'memory.kmem.tcp.limit_in_bytes'), 'utf8')).trim(),
      String(3 << 20),
    );
    t.notRegex(r.stderr, /kernelTCP/);
  } else {
    t.regex(
      r.stderr,
      /warning: `linux\.resources\.memory\.kernelTCP` ignored: this kernel has no memory\.kmem\.tcp\.limit_in_bytes/,
    );
  }
  t.is((await runtimeExec(env, 'berth', ['delete', '--force', r.id])).code, 0);
});

test('hybrid host: exec still works in a container created before the unified join (no unified cgroup)', async (t) => {
  if (!ready(t)) return;
  if (!existsSync(`${UNIFIED}/cgroup.procs`)) return t.pass('not a hybrid host');
  const env = await runtimeEnv(t, rootfs);
  const cg = env.cgroup();
  const r = await create(env, baseConfig(rootfs, ['sleep', '60'], cg));
  t.is(r.code, 0, r.stderr);
  t.is((await runtimeExec(env, 'berth', ['start', r.id])).code, 0);
  // what an older berth-runtime left: the container in the v1 hierarchies only
  const { pid } = JSON.parse((await runtimeExec(env, 'berth', ['state', r.id])).stdout) as { pid: number };
  await writeFile(path.join(UNIFIED, 'cgroup.procs'), String(pid));
  await rmdir(path.join(UNIFIED, cg));
  const e = await runtimeExec(
    env,
    'berth',
    ['exec', r.id, 'sh', '-c', 'grep -c ":memory:" /proc/self/cgroup'],
    asan,
  );
  t.is(e.code, 0, e.stderr);
  t.is(e.stdout, '1\n');
  t.is((await runtimeExec(env, 'berth', ['delete', '--force', r.id])).code, 0);
  t.false(await cgroupExists(cg));
});
