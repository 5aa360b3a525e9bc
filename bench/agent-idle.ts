/**
 * RSS of the agent's brain, bundled the way berth ships (esbuild, no tsx), idle with 10 running containers
 * of a converged target, over FAKE ports (test/helpers/agent-fakes.ts: no runtime, storage or broker — their
 * processes and buffers are not counted; per-container monitors are separate processes anyway). Real SQLite
 * file, system clock, health checks every second on 5 of the services, the local API socket listening,
 * reporter with metrics from systeminformation every 2 s.
 *
 *   node --import tsx bench/agent-idle.ts [seconds]      (bundles itself to a temp dir, then runs the bundle)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

const MiB = 1024 * 1024;

if (process.env.BERTH_BENCH_CHILD !== '1') {
  const esbuild = await import('esbuild');
  // next to dist/berth.mjs, so the bundle resolves node_modules (native addon) like the real one
  const out = mkdtempSync(path.resolve('dist/bench-idle-'));
  const outfile = path.join(out, 'agent-idle.mjs');
  await esbuild.build({
    entryPoints: [new URL(import.meta.url).pathname],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    outfile,
    external: ['better-sqlite3', 'pino', 'thread-stream', 'systeminformation', 'esbuild'],
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    logLevel: 'warning',
  });
  const seconds = process.argv[2] ?? '20';
  for (const flags of [[], ['--max-semi-space-size=1']]) {
    const res = execFileSync(process.execPath, [...flags, outfile, seconds], {
      env: { ...process.env, BERTH_BENCH_CHILD: '1' },
      encoding: 'utf8',
    });
    process.stdout.write(`node ${flags.join(' ') || '(default flags)'}: ${res}`);
  }
  rmSync(out, { recursive: true, force: true });
  process.exit(0);
}

const { Agent } = await import('../src/agent/agent.js');
const { parseTarget } = await import('../src/core/target.js');
const { openDatabase } = await import('../src/db/database.js');
const { silentLogger } = await import('../src/lib/logger.js');
const { FakeClock, FakeDevice } = await import('../test/helpers/agent-fakes.js');
const { systemClock } = await import('../src/agent/ports.js');

const seconds = Number(process.argv[2] ?? 20);
const dir = mkdtempSync(path.join(tmpdir(), 'berth-bench-idle-state-'));
const device = new FakeDevice(new FakeClock());
device.clock.now = () => Date.now();
device.recordCalls = false;
const services: Record<string, unknown> = {};
for (let i = 0; i < 10; i++) {
  device.registry.set(`img${i}:1`, MiB);
  services[`s${i}`] = {
    image: `img${i}:1`,
    env: { N: String(i) },
    ...(i % 2 === 0
      ? { healthcheck: { probe: { type: 'exec', command: ['true'] }, intervalMs: 1000, timeoutMs: 500 } }
      : {}),
  };
}
const db = openDatabase(path.join(dir, 'berth.db'));
const agent = new Agent({
  db,
  ports: device.ports,
  transport: { online: true, publish: async () => {}, onOnline: () => () => {} },
  log: silentLogger(),
  stateDir: dir,
  clock: systemClock,
  metricsIntervalMs: 2000,
  reconciler: { healthWindowMs: 3000, idleIntervalMs: 1000 },
});
await agent.start();
agent.receiveTarget(parseTarget({ version: 1, apps: { demo: { services } } }));
await agent.reconciler.idle();
const samples: number[] = [];
const t0 = Date.now();
while (Date.now() - t0 < seconds * 1000) {
  await new Promise((r) => setTimeout(r, 1000));
  samples.push(process.memoryUsage().rss);
}
const running = device.running().length;
await agent.stop();
db.close();
rmSync(dir, { recursive: true, force: true });
const avg = samples.reduce((a, b) => a + b, 0) / samples.length;
console.log(
  `${running} containers running, idle ${seconds} s: RSS avg ${(avg / MiB).toFixed(1)} MiB, max ${(Math.max(...samples) / MiB).toFixed(1)} MiB, ` +
    `first ${(samples[0]! / MiB).toFixed(1)} → last ${(samples.at(-1)! / MiB).toFixed(1)} MiB (aim ≤ 60 MiB)`,
);
