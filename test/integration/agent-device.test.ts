/** cgroup v1/v2 readers over fixture trees and this host's real cgroup; systeminformation on this host. */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import {
  cgroupProcs,
  cpuPercent,
  detectCgroupVersion,
  parseFlatKeyed,
  readCgroupStats,
  readCgroupV1,
} from '../../src/device/cgroup.js';
import { collectDeviceInfo, collectDeviceMetrics, mountFor } from '../../src/device/info.js';

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(path.join(tmpdir(), 'berth-cg-'));
  for (const [f, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    writeFileSync(path.join(root, f), content);
  }
  return root;
}

test('cgroup v2: cpu.stat usage_usec, memory.current and memory.max, pids.current, cgroup.procs', async (t) => {
  const root = tree({
    'cgroup.controllers': 'cpu memory pids\n',
    'berth/c1/cpu.stat': 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n',
    'berth/c1/memory.current': '4194304\n',
    'berth/c1/memory.max': '8388608\n',
    'berth/c1/pids.current': '3\n',
    'berth/c1/cgroup.procs': '101\n102\n250\n',
    'berth/c2/cpu.stat': 'usage_usec 7\n',
    'berth/c2/memory.current': '1\n',
    'berth/c2/memory.max': 'max\n',
  });
  t.is(await detectCgroupVersion(root), 2);
  t.deepEqual(await readCgroupStats('/berth/c1', root), {
    cpuUsageNs: 1_500_000,
    memoryBytes: 4194304,
    memoryLimitBytes: 8388608,
    pids: 3,
  });
  t.deepEqual(await readCgroupStats('berth/c2', root), {
    cpuUsageNs: 7000,
    memoryBytes: 1,
    memoryLimitBytes: undefined,
    pids: undefined,
  });
  t.deepEqual(await cgroupProcs('/berth/c1', root), [101, 102, 250], 'v2: the unified group');
  await t.throwsAsync(cgroupProcs('/berth/c2', root), { message: /no cgroup \/berth\/c2 .*\(v2\)/ });
  await t.throwsAsync(readCgroupStats('/berth/missing', root), {
    message: /reading cgroup v2 stats of \/berth\/missing/,
  });
  await t.throwsAsync(readCgroupStats('../../etc', root), { message: /invalid cgroup path|reading cgroup/ });
});

test('cgroup v1: cpuacct.usage (or cpu,cpuacct) and memory.usage_in_bytes / limit, pids, procs', async (t) => {
  const root = tree({
    'pids/berth/c1/pids.current': '2\n',
    'pids/berth/c1/cgroup.procs': '7\n9\n',
    'memory/berth/c2/cgroup.procs': '11\n',
    'cpuacct/berth/c1/cpuacct.usage': '123456789\n',
    'memory/berth/c1/memory.usage_in_bytes': '1048576\n',
    'memory/berth/c1/memory.limit_in_bytes': '9223372036854771712\n',
    'cpu,cpuacct/berth/c2/cpuacct.usage': '5\n',
    'memory/berth/c2/memory.usage_in_bytes': '2\n',
    'memory/berth/c2/memory.limit_in_bytes': '67108864\n',
  });
  t.is(await detectCgroupVersion(root), 1);
  t.deepEqual(await readCgroupStats('/berth/c1', root), {
    cpuUsageNs: 123456789,
    memoryBytes: 1048576,
    memoryLimitBytes: undefined,
    pids: 2,
  });
  t.deepEqual(await readCgroupStats('/berth/c2', root, 1), {
    cpuUsageNs: 5,
    memoryBytes: 2,
    memoryLimitBytes: 67108864,
    pids: undefined,
  });
  t.deepEqual(await cgroupProcs('/berth/c1', root), [7, 9], 'v1: from the pids hierarchy');
  t.deepEqual(await cgroupProcs('/berth/c2', root), [11], 'v1: another controller when pids has no group');
});

test('cgroup v1 on this host: the test process own memory and cpuacct cgroups read sensibly', async (t) => {
  const lines = readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  const mem = lines.find((l) => /:memory:/.test(l))?.split(':')[2];
  const cpu = lines.find((l) => /:cpuacct[,:]|:cpu,cpuacct:/.test(l))?.split(':')[2];
  if (mem === undefined || cpu === undefined || (await detectCgroupVersion()) !== 1) {
    t.pass('not a v1/hybrid host');
    return;
  }
  // the two controllers can place us in different groups; read each where it is
  const m = await readCgroupV1('/sys/fs/cgroup', mem).catch(() => undefined);
  const c = await readCgroupV1('/sys/fs/cgroup', cpu).catch(() => undefined);
  const memoryBytes =
    m?.memoryBytes ??
    Number(readFileSync(path.join('/sys/fs/cgroup/memory', mem, 'memory.usage_in_bytes'), 'utf8'));
  t.true(memoryBytes > 1024 * 1024, `memory ${memoryBytes}`);
  const cpuNs =
    c?.cpuUsageNs ?? Number(readFileSync(path.join('/sys/fs/cgroup/cpuacct', cpu, 'cpuacct.usage'), 'utf8'));
  t.true(cpuNs > 0);
});

test('cpuPercent and cpu.stat parsing', (t) => {
  t.is(cpuPercent({ ns: 0, at: 0 }, { ns: 500_000_000, at: 1000 }), 50);
  t.is(cpuPercent({ ns: 0, at: 0 }, { ns: 2_000_000_000, at: 1000 }), 200);
  t.is(cpuPercent({ ns: 10, at: 5 }, { ns: 5, at: 10 }), 0, 'counter reset');
  t.deepEqual(parseFlatKeyed('usage_usec 10\nnr_periods 0\n\n'), { usage_usec: 10, nr_periods: 0 });
});

test('device info and metrics from systeminformation on this host', async (t) => {
  const info = await collectDeviceInfo();
  t.is(info.os.platform, 'linux');
  t.truthy(info.os.arch);
  t.true(info.cpu.cores >= 1);
  t.true(info.memory.totalBytes > 64 * 1024 * 1024);
  t.true(info.disks.length > 0);
  const m = await collectDeviceMetrics(tmpdir());
  t.true(m.memory.usedBytes > 0 && m.memory.usedBytes <= m.memory.totalBytes);
  t.true(m.disk.totalBytes > 0);
  t.true(m.cpuPercent >= 0);
  t.true(m.temperatureC === null || m.temperatureC > 0);
  t.is(
    mountFor([{ mount: '/' }, { mount: '/var' }, { mount: '/var/lib/berth' }], '/var/lib/berth/x')?.mount,
    '/var/lib/berth',
  );
  t.is(mountFor([{ mount: '/' }, { mount: '/va' }], '/var/x')?.mount, '/');
});
