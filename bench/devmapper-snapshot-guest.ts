/**
 * Runs INSIDE the test VM (see bench/devmapper-snapshot.ts): thin snapshot creation time vs the number
 * of files in the parent layer. Prints one `BENCH {json}` line per figure.
 */
import { mkdtempSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { openDatabase } from '../src/db/database.js';
import { DevmapperSnapshotter } from '../src/snapshots/devmapper/snapshotter.js';
import { withTempMount } from '../src/snapshots/mount.js';

const MiB = 1024 * 1024;
const counts = (process.env.BENCH_FILES ?? '1000,20000').split(',').map(Number);
const repeats = Number(process.env.BENCH_REPEATS ?? 5);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const emit = (o: Record<string, unknown>) => console.log(`BENCH ${JSON.stringify(o)}`);

// A fixed CPU loop, also timed on the host, gives the TCG slowdown factor.
const t0 = performance.now();
let x = 0;
for (let i = 0; i < 2e7; i++) x = (x + i * 7) % 1000003;
emit({ what: 'cpu-loop', ms: performance.now() - t0, x });

const dir = mkdtempSync('/tmp/bench-');
const db = openDatabase(path.join(dir, 'berth.db'));
const sn = new DevmapperSnapshotter(db, {
  poolName: 'berth-bench',
  loopDir: path.join(dir, 'loop'),
  dataSizeBytes: 2048 * MiB,
  metadataSizeBytes: 64 * MiB,
  baseSizeBytes: 512 * MiB,
  blockSizeSectors: 128,
  discard: false,
});
try {
  await sn.recover();
  for (const n of counts) {
    const base = `layer-${n}`;
    await sn.prepare(`extract-${n}`);
    const tFill = performance.now();
    await withTempMount(await sn.mounts(`extract-${n}`), async (root) => {
      for (let d = 0; d < Math.ceil(n / 1000); d++) {
        const sub = path.join(root, `d${d}`);
        await mkdir(sub);
        const batch: Promise<void>[] = [];
        for (let f = d * 1000; f < Math.min(n, (d + 1) * 1000); f++)
          batch.push(writeFile(path.join(sub, `f${f}`), `file ${f}\n`));
        await Promise.all(batch);
      }
    });
    await sn.commit(base, `extract-${n}`);
    emit({ what: 'fill', files: n, ms: performance.now() - tFill });
    const prepareMs: number[] = [];
    const viewMs: number[] = [];
    for (let i = 0; i < repeats; i++) {
      let t = performance.now();
      await sn.prepare(`c-${n}-${i}`, base);
      prepareMs.push(performance.now() - t);
      t = performance.now();
      await sn.view(`v-${n}-${i}`, base);
      viewMs.push(performance.now() - t);
    }
    const t = performance.now();
    await sn.commit(`c-${n}-commit`, `c-${n}-0`);
    const commitMs = performance.now() - t;
    emit({
      what: 'snapshot',
      files: n,
      prepareMedianMs: median(prepareMs),
      viewMedianMs: median(viewMs),
      commitMs,
      prepareMs,
    });
  }
} finally {
  await sn.pool.destroy();
  db.close();
}
