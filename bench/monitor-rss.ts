/**
 * berth-monitor footprint and `run` latency, on runc, with a busybox rootfs.
 *   npx tsx bench/monitor-rss.ts [containers=10] [runs=20] [--cli]
 *   BENCH_RUNTIME=/path/to/berth-runtime BENCH_RUNTIME_NAME=berth npx tsx bench/monitor-rss.ts   (default runc)
 * Prints: monitor VmRSS (median/max over N idle containers), and latency medians for
 *   - ContainerManager create+start (berth's path: bundle + monitor + runtime create/start)
 *   - the same with `runc run` of /bin/true directly, for the ratio
 *   - `berth run -d` end to end through the CLI (includes Node start-up)
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openDatabase } from '../src/db/database.js';
import { exec } from '../src/lib/exec.js';
import { buildBundleConfig } from '../src/runtime/bundle.js';
import { ContainerManager, ociArch } from '../src/runtime/containers.js';
import { NetworkManager } from '../src/runtime/network/network.js';
import { DefaultRootfsProvider } from '../src/runtime/rootfs.js';
import { OciCliRuntime } from '../src/runtime/runtime.js';
import { buildBusyboxRootfs } from '../test/helpers/runtime-rootfs.js';

const N = Number(process.argv[2] ?? 10);
const RUNS = Number(process.argv[3] ?? 20);
const RUNC = '/usr/sbin/runc';
const RUNTIME = process.env.BENCH_RUNTIME ?? RUNC;
const RUNTIME_NAME = process.env.BENCH_RUNTIME_NAME ?? 'runc';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

function vmRssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

async function main(): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-bench-mon-'));
  const rootfs = await buildBusyboxRootfs(path.join(dir, 'rootfs'));
  const stateDir = path.join(dir, 'state');
  const db = openDatabase(path.join(stateDir, 'berth.db'));
  const runtime = new OciCliRuntime(RUNTIME_NAME, RUNTIME, path.join(stateDir, 'runtime', RUNTIME_NAME));
  const mgr = new ContainerManager({
    db,
    stateDir,
    runtime,
    monitorPath: path.resolve('native/build/x64/berth-monitor'),
    network: new NetworkManager(db, {
      bridge: 'bbench0',
      subnet: '172.31.199.0/24',
      nftTable: 'berth_bench',
      firewall: 'none',
    }),
    rootfs: new DefaultRootfsProvider(),
    arch: ociArch(),
    logMaxSize: 1 << 20,
    logMaxFiles: 2,
  });
  try {
    // 1. RSS of idle monitors
    const ids: string[] = [];
    for (let i = 0; i < N; i++) {
      const c = await mgr.create({
        source: { kind: 'dir', path: rootfs },
        app: { command: ['sleep', '300'], network: 'none', readOnlyRootfs: true },
      });
      ids.push((await mgr.start(c.id)).id);
    }
    const rss = (await mgr.list()).map((c) => vmRssKiB(c.monitorPid!));
    console.log(
      `monitor VmRSS over ${N} idle containers: median ${median(rss)} KiB, max ${Math.max(...rss)} KiB`,
    );
    for (const id of ids) await mgr.remove(id, { force: true });

    // 2. create+start through berth vs `runc run` of /bin/true
    const berthTimes: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = process.hrtime.bigint();
      const c = await mgr.create({
        source: { kind: 'dir', path: rootfs },
        app: { command: ['true'], network: 'none', readOnlyRootfs: true },
      });
      await mgr.start(c.id);
      berthTimes.push(ms(t0));
      await mgr.waitExit(c.id, 10_000);
      await mgr.remove(c.id, { force: true });
    }
    const bundle = path.join(dir, 'bundle');
    await fsp.mkdir(bundle);
    const runcTimes: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const id = `benchrunc${i}`;
      const { spec } = buildBundleConfig({
        id,
        image: { Cmd: ['true'] },
        arch: ociArch(),
        app: { readOnlyRootfs: true },
        user: { uid: 0, gid: 0, additionalGids: [] },
        rootfs,
        volumesDir: path.join(dir, 'v'),
      });
      await fsp.writeFile(path.join(bundle, 'config.json'), JSON.stringify(spec));
      const t0 = process.hrtime.bigint();
      await exec(RUNC, ['--root', path.join(dir, 'runc-root'), 'run', '--bundle', bundle, id]);
      runcTimes.push(ms(t0));
    }
    const bm = median(berthTimes);
    const rm = median(runcTimes);
    console.log(
      `create+start via berth (bundle + monitor + ${RUNTIME_NAME} create/start), median of ${RUNS}: ${bm.toFixed(1)} ms`,
    );
    console.log(
      `runc run /bin/true, median of ${RUNS}: ${rm.toFixed(1)} ms; ratio berth-path/runc-run ${(bm / rm).toFixed(2)}`,
    );

    // 3. end to end through the CLI
    if (process.argv.includes('--cli')) {
      const cfg = path.join(dir, 'config.json');
      await fsp.writeFile(
        cfg,
        JSON.stringify({ runtime: { name: RUNTIME_NAME, path: RUNTIME }, logLevel: 'warn' }),
      );
      const cli: number[] = [];
      for (let i = 0; i < Math.min(RUNS, 10); i++) {
        const t0 = process.hrtime.bigint();
        const id = execFileSync(process.execPath, [
          'dist/berth.mjs',
          '--state-dir',
          path.join(dir, 'cli'),
          '--config',
          cfg,
          'run',
          '-d',
          '--network',
          'none',
          '--rootfs',
          rootfs,
          'true',
        ])
          .toString()
          .trim();
        cli.push(ms(t0));
        execFileSync(process.execPath, [
          'dist/berth.mjs',
          '--state-dir',
          path.join(dir, 'cli'),
          '--config',
          cfg,
          'rm',
          '-f',
          id,
        ]);
      }
      console.log(
        `berth run -d (CLI, includes node start-up), median of ${cli.length}: ${median(cli).toFixed(1)} ms`,
      );
    }
  } finally {
    for (const c of await mgr.list({ all: true }))
      await mgr.remove(c.id, { force: true }).catch(() => undefined);
    db.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

await main();
