/**
 * Snapshot creation time vs file count, per backend: a committed layer of N files (1k, 20k), then
 * prepare(child) — what starting a container on that image costs — timed over several runs, plus
 * commit and remove of the child. Each backend on its own loop filesystem (btrfs / ext4 for overlay).
 *
 *   node --import tsx bench/snapshot-create.ts [runs]
 * Aim: btrfs snapshot of a 20k-file layer ≤ 30 ms.
 */
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { openDatabase } from '../src/db/database.js';
import { exec } from '../src/lib/exec.js';
import { BtrfsSnapshotter } from '../src/snapshots/btrfs.js';
import { OverlaySnapshotter } from '../src/snapshots/overlay.js';
import type { Snapshotter } from '../src/snapshots/snapshotter.js';
import { developmentStorage } from '../src/snapshots/storage-helper.js';
import { makeTar, type TarEntry } from '../test/helpers/layer-tar.js';
import { unpackTar } from '../test/helpers/storage-fixture.js';
import { makeLoopFs } from '../test/helpers/storage-loop.js';

const RUNS = Number(process.argv[2] ?? 10);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function layerOf(n: number): Promise<Buffer> {
  const entries: TarEntry[] = [];
  for (let d = 0; d < Math.ceil(n / 200); d++) entries.push({ name: `d${d}/`, type: 'directory' });
  for (let i = 0; i < n; i++)
    entries.push({ name: `d${Math.floor(i / 200)}/f${i}`, content: `file ${i}\n`.repeat(8) });
  return makeTar(entries);
}

async function tracked<T extends { cleanup: () => Promise<void> }>(p: Promise<T>): Promise<T> {
  const loop = await p;
  cleanups.push(loop.cleanup);
  return loop;
}

async function main() {
  const rows: string[] = [];
  for (const driver of ['btrfs', 'overlay'] as const) {
    const loop = await tracked(makeLoopFs({ fs: driver === 'btrfs' ? 'btrfs' : 'ext4', sizeMiB: 1024 }));
    try {
      const db = openDatabase(path.join(loop.mountpoint, 'berth.db'));
      const root = path.join(loop.mountpoint, driver);
      const sn: Snapshotter =
        driver === 'btrfs' ? new BtrfsSnapshotter(db, root) : new OverlaySnapshotter(db, root);
      await sn.recover();
      for (const n of [1000, 20000]) {
        const layer = await unpackTar(sn, await layerOf(n));
        // the layer exists before a container starts on it: its own writeback is not part of the cost
        await exec('sync', ['-f', loop.mountpoint]);
        const prep: number[] = [];
        const commit: number[] = [];
        const remove: number[] = [];
        for (let r = 0; r < RUNS; r++) {
          let t0 = performance.now();
          await sn.prepare(`c${r}`, layer);
          prep.push(performance.now() - t0);
          t0 = performance.now();
          await sn.commit(`l${r}`, `c${r}`);
          commit.push(performance.now() - t0);
          t0 = performance.now();
          await sn.remove(`l${r}`);
          remove.push(performance.now() - t0);
        }
        // the helper call alone (process spawn + SNAP_CREATE_V2 ioctl), without the metadata around it
        let helper = '';
        if (sn instanceof BtrfsSnapshotter) {
          const src = sn.subvolume(sn.record(layer));
          const raw: number[] = [];
          for (let r = 0; r < RUNS; r++) {
            const dst = path.join(sn.snapshotsDir, `raw-${r}`);
            const t0 = performance.now();
            await developmentStorage.btrfs.snapshot(src, dst, false);
            raw.push(performance.now() - t0);
            await developmentStorage.btrfs.delete(dst);
          }
          helper = `  (berth-storage btrfs-snapshot alone ${median(raw).toFixed(1)} ms)`;
        }
        rows.push(
          `${driver.padEnd(8)} ${String(n).padStart(6)} files  prepare ${median(prep).toFixed(1).padStart(6)} ms  commit ${median(commit).toFixed(1).padStart(6)} ms  remove ${median(remove).toFixed(1).padStart(6)} ms  (median of ${RUNS}, load ${loadavg()[0]!.toFixed(1)})${helper}`,
        );
        process.stdout.write(`${rows[rows.length - 1]}\n`);
      }
      db.close();
    } finally {
      await loop.cleanup();
    }
  }
}

// a killed benchmark must not leave loop mounts behind
const cleanups: Array<() => Promise<void>> = [];
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    void Promise.allSettled(cleanups.map((c) => c())).then(() => process.exit(130));
  });
}

await main();
