/**
 * Unpack throughput: one ~200 MiB layer made of real files (the host's /usr: libraries, binaries,
 * data; thousands of files) unpacked by berth into a fresh snapshot vs `tar -x` of the same tar into a
 * fresh directory on the SAME loop filesystem, each followed by `sync -f` so both pay for writeback.
 * Median of N runs, printed as a ratio berth/tar in throughput (aim ≥ 0.9×) and in CPU time, this
 * process and its children (aim ≤ 1.2×). Uncompressed and gzip.
 *
 *   node --import tsx bench/unpack-throughput.ts [runs] [MiB]
 *   BERTH_UNPACKERS=native,node …   which extractors to run (default: auto, what berth picks here)
 *   BENCH_DRIVERS=btrfs BENCH_COMPRESSIONS=none …   a subset of the four rows
 *
 * The layer is a blob in a content store (on another loop filesystem, so neither side can copy in the
 * kernel): berth unpacks it as it unpacks a pulled image (storeBlobInput), tar -x reads the same file.
 */
import { createReadStream, promises as fsp, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ContentStore } from '../src/content/store.js';
import { openDatabase } from '../src/db/database.js';
import { exec } from '../src/lib/exec.js';
import { type Digest, sha256Digest } from '../src/oci/digest.js';
import type { LayerInput, Unpacker } from '../src/snapshots/apply.js';
import { BtrfsSnapshotter } from '../src/snapshots/btrfs.js';
import { OverlaySnapshotter } from '../src/snapshots/overlay.js';
import type { Snapshotter } from '../src/snapshots/snapshotter.js';
import { storeBlobInput, unpackLayer } from '../src/snapshots/unpack.js';
import { makeLoopFs } from '../test/helpers/storage-loop.js';

const RUNS = Number(process.argv[2] ?? 3);
const MIB = Number(process.argv[3] ?? 200);
const UNPACKERS = (process.env.BERTH_UNPACKERS ?? 'auto').split(',') as Unpacker[];
const DRIVERS = (process.env.BENCH_DRIVERS ?? 'overlay,btrfs').split(',') as Array<'overlay' | 'btrfs'>;
const COMPRESSIONS = (process.env.BENCH_COMPRESSIONS ?? 'none,gzip').split(',') as Array<'none' | 'gzip'>;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * CPU time (user+sys, ms) of this process plus its waited-for children (tar and its gzip, berth's
 * `gzip -d` child, sync): less noisy than wall time on a shared machine. Children's times come from
 * /proc/self/stat cutime+cstime (clock ticks, 100 Hz on Linux).
 */
function cpuMs(): { self: number; children: number } {
  const r = process.resourceUsage();
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields after the command name start at field 3 (state): cutime is field 16, cstime 17
  const children = (Number(f[13]) + Number(f[14])) * 10;
  return { self: (r.userCPUTime + r.systemCPUTime) / 1000, children };
}
const cpuSince = (a: { self: number; children: number }) => {
  const b = cpuMs();
  return b.self - a.self + b.children - a.children;
};

async function makeLayer(dir: string): Promise<{
  tar: string;
  gz: string;
  input: Record<'none' | 'gzip', LayerInput>;
  diffId: Digest;
  bytes: number;
  files: number;
}> {
  // single-link files only (tar stores hardlinks once, which would make the layer smaller than counted)
  const args = ['usr/share', 'usr/bin', 'usr/lib/x86_64-linux-gnu', '-xdev', '-type', 'f', '-links', '1'];
  const out = await exec('find', [...args, '-size', '-8M', '-printf', '%s %p\\n'], {
    cwd: '/',
    allowFailure: true,
    maxBuffer: 256 * 1024 * 1024,
  });
  const list: string[] = [];
  let total = 0;
  for (const line of out.stdout.split('\n')) {
    const i = line.indexOf(' ');
    if (i < 0) continue;
    total += Number(line.slice(0, i));
    if (total > MIB * 1024 * 1024) break;
    list.push(line.slice(i + 1));
  }
  await fsp.writeFile(path.join(dir, 'list'), `${list.join('\n')}\n`);
  const tar = path.join(dir, 'layer.tar');
  await exec('tar', ['-cf', tar, '-C', '/', '--numeric-owner', '-T', path.join(dir, 'list')]);
  await exec('gzip', ['-1', '-k', '-f', tar]);
  // the blobs in a content store, as berth unpacks them (an uncompressed blob's digest is its DiffID)
  const store = new ContentStore(path.join(dir, 'content'));
  const none = await store.putStream(createReadStream(tar));
  const gzip = await store.putStream(createReadStream(`${tar}.gz`));
  await fsp.rm(tar);
  await fsp.rm(`${tar}.gz`);
  return {
    tar: store.blobPath(none.digest),
    gz: store.blobPath(gzip.digest),
    input: {
      none: await storeBlobInput(store, none.digest),
      gzip: await storeBlobInput(store, gzip.digest),
    },
    diffId: none.digest,
    bytes: none.size,
    files: list.length,
  };
}

async function tracked<T extends { cleanup: () => Promise<void> }>(p: Promise<T>): Promise<T> {
  const loop = await p;
  cleanups.push(loop.cleanup);
  return loop;
}

async function main() {
  const src = await tracked(makeLoopFs({ fs: 'ext4', sizeMiB: 1024 }));
  try {
    process.stdout.write(`building a ~${MIB} MiB layer from /usr files...\n`);
    const layer = await makeLayer(src.mountpoint);
    process.stdout.write(
      `layer: ${(layer.bytes / 1048576).toFixed(0)} MiB uncompressed, ${layer.files} files, gzip ${((await fsp.stat(layer.gz)).size / 1048576).toFixed(0)} MiB\n`,
    );
    for (const driver of DRIVERS) {
      const loop = await tracked(makeLoopFs({ fs: driver === 'btrfs' ? 'btrfs' : 'ext4', sizeMiB: 2048 }));
      try {
        const db = openDatabase(path.join(loop.mountpoint, 'berth.db'));
        const root = path.join(loop.mountpoint, driver);
        const sn: Snapshotter =
          driver === 'btrfs' ? new BtrfsSnapshotter(db, root) : new OverlaySnapshotter(db, root);
        await sn.recover();
        for (const compression of COMPRESSIONS) {
          const file = compression === 'none' ? layer.tar : layer.gz;
          const tarMs: number[] = [];
          const berthMs = UNPACKERS.map(() => [] as number[]);
          const tarCpu: number[] = [];
          const berthCpu = UNPACKERS.map(() => [] as number[]);
          for (let r = 0; r < RUNS; r++) {
            const dir = path.join(loop.mountpoint, `tar-${r}`);
            await fsp.mkdir(dir);
            let c0 = cpuMs();
            let t0 = performance.now();
            await exec('tar', [
              compression === 'gzip' ? '-xzf' : '-xf',
              file,
              '-C',
              dir,
              '--numeric-owner',
              '-p',
            ]);
            await exec('sync', ['-f', dir]);
            tarMs.push(performance.now() - t0);
            tarCpu.push(cpuSince(c0));
            await fsp.rm(dir, { recursive: true, force: true });
            await exec('sync', ['-f', loop.mountpoint]);

            for (const [u, unpacker] of UNPACKERS.entries()) {
              const chainId = sha256Digest(`${compression}-${r}-${unpacker}`);
              c0 = cpuMs();
              t0 = performance.now();
              await unpackLayer({
                snapshotter: sn,
                chainId,
                parent: undefined,
                diffId: layer.diffId,
                open: async () => layer.input[compression],
                compression,
                unpacker,
              });
              await exec('sync', ['-f', loop.mountpoint]);
              berthMs[u]!.push(performance.now() - t0);
              berthCpu[u]!.push(cpuSince(c0));
              await sn.remove(chainId);
              await exec('sync', ['-f', loop.mountpoint]);
            }
          }
          const mib = layer.bytes / 1048576;
          const load = loadavg()[0]!.toFixed(1);
          const t = median(tarMs);
          for (const [u, unpacker] of UNPACKERS.entries()) {
            const b = median(berthMs[u]!);
            const bc = median(berthCpu[u]!);
            const tc = median(tarCpu);
            process.stdout.write(
              `${driver.padEnd(8)} ${compression.padEnd(5)} tar -x ${t.toFixed(0).padStart(6)} ms (${(mib / (t / 1000)).toFixed(0)} MiB/s)  berth ${unpacker.padEnd(6)} ${b.toFixed(0).padStart(6)} ms (${(mib / (b / 1000)).toFixed(0)} MiB/s)  ratio ${(t / b).toFixed(2)}x  cpu tar ${tc.toFixed(0)} ms berth ${bc.toFixed(0)} ms (${(bc / tc).toFixed(2)}x)  (median of ${RUNS}, load ${load})\n`,
            );
          }
        }
        db.close();
      } finally {
        await loop.cleanup();
      }
    }
  } finally {
    await src.cleanup();
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
