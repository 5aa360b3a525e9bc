import type { Command } from 'commander';
import { ImageAcquisition } from '../content/acquire.js';
import { ImageRepo } from '../content/images.js';
import { createSnapshotter } from '../snapshots/factory.js';
import type { SnapshotInfo, Snapshotter, Usage } from '../snapshots/snapshotter.js';
import type { CliContext } from './context.js';
import type { Register } from './families.js';
import { columnsOf, FORMAT_HELP, humanSize, printJson, printListing } from './output.js';

/** The configured snapshotter (driver from --storage-driver / storage.driver / detection), recovered. */
export async function openSnapshotter(c: CliContext): Promise<Snapshotter> {
  const sn = await createSnapshotter({
    db: c.db,
    stateDir: c.stateDir,
    storage: c.config.storage,
    native: c.native,
    log: c.log,
  });
  c.onClose(() => sn.close());
  return sn;
}

/**
 * `berth storage info|ls` and `berth image unpack <ref>`. The `image` family belongs to src/cli/image.ts;
 * `unpack` attaches to it when it is registered first (FAMILIES order), or creates it otherwise.
 */
export const registerStorage: Register = (program: Command, ctx: () => CliContext) => {
  const storage = program.command('storage').description('layer storage: snapshotter backend and snapshots');

  storage
    .command('info')
    .description('backend, filesystem capacity and use')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const sn = await openSnapshotter(ctx());
      const s = await sn.status();
      if (opts.json) return printJson(s);
      const lines = [
        ['backend', s.driver],
        ['root', s.root],
        ['capacity', humanSize(s.capacityBytes)],
        ['used', humanSize(s.usedBytes)],
        ['available', humanSize(s.availableBytes)],
        ...Object.entries(s.details).map(([k, v]) => [k, String(v)]),
      ];
      for (const [k, v] of lines) process.stdout.write(`${`${k}:`.padEnd(12)}${v}\n`);
    });

  storage
    .command('ls')
    .alias('list')
    .description('list snapshots (committed layers, active container filesystems, views)')
    .option('--format <format>', FORMAT_HELP)
    .option('--json', 'print JSON (same as --format json)')
    .action(async (opts: { json?: boolean; format?: string }) => {
      const sn = await openSnapshotter(ctx());
      const rows: Array<SnapshotInfo & { usage: Usage | null }> = [];
      await sn.walk(async (i) => {
        rows.push({ ...i, usage: await sn.usage(i.name).catch(() => null) });
      });
      printListing(
        rows.map((r) => ({
          name: short(r.name),
          kind: r.kind,
          parent: r.parent ? short(r.parent) : '',
          size: r.usage ? humanSize(r.usage.size) : '?',
          inodes: r.usage ? r.usage.inodes : '?',
          created: new Date(r.createdAt).toISOString(),
        })),
        columnsOf('name', 'kind', 'parent', 'size', 'inodes', 'created'),
        opts,
        rows.map((r) => ({ driver: sn.driver, ...r })),
      );
    });

  storage
    .command('rm <name...>')
    .description('remove snapshots (refused while children exist)')
    .action(async (names: string[]) => {
      const sn = await openSnapshotter(ctx());
      for (const n of names) {
        await sn.remove(n);
        process.stdout.write(`removed ${n}\n`);
      }
    });

  const image = program.commands.find((c) => c.name() === 'image') ?? program.command('image');
  image
    .command('unpack <ref>')
    .description('unpack an imported image into committed snapshots named by ChainID')
    .option('--json', 'print JSON')
    .action(async (ref: string, opts: { json?: boolean }) => {
      await unpackRecorded(ctx(), ref, opts.json === true);
    });
};

/** Unpack a recorded image into committed snapshots and print what happened (`image unpack`, `pull --unpack`). */
export async function unpackRecorded(c: CliContext, ref: string, json = false): Promise<void> {
  const img = await new ImageRepo(c.db, c.store).resolve(ref);
  const sn = await openSnapshotter(c);
  const started = Date.now();
  const images = new ImageAcquisition({ db: c.db, store: c.store, snapshotter: sn, log: c.log });
  const res = await images.unpack(img.record.name, { labels: { 'berth.image': img.record.name } });
  const out = { image: img.record.name, driver: sn.driver, ...res, ms: Date.now() - started };
  if (json) return printJson(out);
  for (const l of res.layers) {
    process.stdout.write(`${l.reused ? 'reused  ' : 'unpacked'} ${l.chainId}\n`);
  }
  process.stdout.write(`${img.record.name}: ${res.chainId} (${sn.driver}, ${out.ms} ms)\n`);
}

const short = (name: string) => (/^sha256:[a-f0-9]{64}$/.test(name) ? name.slice(0, 19) : name);
