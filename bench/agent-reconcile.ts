/**
 * RSS growth of the agent's brain over 10,000 reconcile cycles (aim ≤ 5 MiB), with the FAKE ports of
 * test/helpers/agent-fakes.ts (in-memory engine/images) and a real SQLite file: the whole Agent (store,
 * reconciler, health monitor, outbox, reporter without metrics sampling) runs; every 10th cycle deploys a
 * new target version (fetch, unpack, stop, remove, create, start), every 7th a container crashes and is
 * restarted by its policy, the rest are converged no-op checks.
 *
 *   node --expose-gc [--max-semi-space-size=1] --import tsx bench/agent-reconcile.ts [cycles] [db-dir]
 *
 * V8 sizes its young generation up to 16 MiB per semi-space under allocation pressure, which shows as RSS
 * that is not a leak (heapUsed stays flat); --max-semi-space-size=1 (recommended for the agent on small
 * devices) keeps it out of the figure. The printed curve shows whether RSS keeps climbing or plateaus.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Agent } from '../src/agent/agent.js';
import type { Transport } from '../src/agent/ports.js';
import { parseTarget } from '../src/core/target.js';
import { openDatabase } from '../src/db/database.js';
import { silentLogger } from '../src/lib/logger.js';
import { FakeClock, FakeDevice } from '../test/helpers/agent-fakes.js';

const cycles = Number(process.argv[2] ?? 10_000);
// The database lives on tmpfs by default: this measures memory, and the root FS here is erratic for
// small synchronous writes (pass a directory on a loop-mounted ext4/btrfs to include real I/O).
const base = process.argv[3] ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error('run with node --expose-gc');
  process.exit(2);
}
const MiB = 1024 * 1024;
const dir = mkdtempSync(path.join(base, 'berth-bench-agent-'));
const clock = new FakeClock();
const device = new FakeDevice(clock);
for (const img of ['db:1', 'web:1', 'web:2', 'worker:1']) device.registry.set(img, MiB);
device.available = 1024 ** 4;
device.recordCalls = false;
let published = 0;
const transport: Transport = {
  online: true,
  publish: async () => {
    published++;
  },
  onOnline: () => () => {},
};
const db = openDatabase(path.join(dir, 'berth.db'));
const agent = new Agent({
  db,
  ports: device.ports,
  transport,
  log: silentLogger(),
  stateDir: dir,
  clock,
  api: false,
  metricsIntervalMs: 0,
  reconciler: { healthWindowMs: 0, restartBackoff: { baseMs: 0, maxMs: 0, resetAfterMs: 1 } },
});

const target = (version: number) =>
  parseTarget({
    version,
    apps: {
      shop: {
        services: {
          db: { image: 'db:1', volumes: [{ type: 'volume', source: 'data', target: '/data' }] },
          web: { image: version % 2 ? 'web:1' : 'web:2', dependsOn: ['db'], env: { V: String(version) } },
          worker: { image: 'worker:1', dependsOn: { db: 'started' } },
        },
        volumes: { data: {} },
      },
    },
  });

let version = 0;
async function cycle(i: number) {
  if (i % 10 === 0) agent.receiveTarget(target(++version));
  else if (i % 7 === 0) {
    const running = device.running();
    if (running.length > 0) device.exit(running[i % running.length]!, 1);
  }
  clock.t += 1000;
  await agent.reconciler.trigger();
  await agent.reconciler.idle();
}

await agent.start();
const warm = 1000;
const flags = process.execArgv.filter((a) => a.startsWith('--max-semi')).join(' ') || '(default V8 flags)';
for (let i = 0; i < warm; i++) await cycle(i);
gc();
await new Promise((r) => setTimeout(r, 50));
gc();
const before = process.memoryUsage();
const t0 = performance.now();
const curve: string[] = [];
for (let i = warm; i < warm + cycles; i++) {
  await cycle(i);
  if ((i - warm + 1) % Math.max(1, Math.floor(cycles / 5)) === 0) {
    gc();
    const m = process.memoryUsage();
    curve.push(
      `${i - warm + 1}: rss ${(m.rss / MiB).toFixed(1)} heapTotal ${(m.heapTotal / MiB).toFixed(1)}`,
    );
  }
}
const ms = performance.now() - t0;
gc();
await new Promise((r) => setTimeout(r, 50));
gc();
const after = process.memoryUsage();
const s = agent.reconciler.stats;
console.log(
  `agent reconcile: ${cycles} cycles (after ${warm} warm-up) in ${(ms / 1000).toFixed(1)} s, ${(ms / cycles).toFixed(2)} ms/cycle`,
);
console.log(
  `  runs ${s.runs}, batches ${s.batches}, steps ${s.steps}, targets deployed ${version}, messages published ${published}`,
);
console.log(`  last outcome: ${JSON.stringify(agent.reconciler.lastOutcome)}`);
console.log(
  `  RSS  ${(before.rss / MiB).toFixed(1)} MiB → ${(after.rss / MiB).toFixed(1)} MiB: growth ${((after.rss - before.rss) / MiB).toFixed(2)} MiB (aim ≤ 5 MiB)`,
);
console.log(`  curve (after gc): ${curve.join(' | ')}; node ${flags}`);
console.log(
  `  external ${(before.external / MiB).toFixed(1)} MiB → ${(after.external / MiB).toFixed(1)} MiB; database in ${base}`,
);
console.log(
  `  heap ${(before.heapUsed / MiB).toFixed(1)} MiB → ${(after.heapUsed / MiB).toFixed(1)} MiB: growth ${((after.heapUsed - before.heapUsed) / MiB).toFixed(2)} MiB`,
);
await agent.stop();
db.close();
rmSync(dir, { recursive: true, force: true });
