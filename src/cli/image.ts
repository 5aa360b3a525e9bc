import type { Command } from 'commander';
import { connectAgent } from '../agent/api-client.js';
import { exportImages } from '../content/export.js';
import { collectGarbage } from '../content/gc.js';
import { ImageRepo } from '../content/images.js';
import { formatPlatform, hostPlatform, type PlatformSpec, parsePlatform } from '../oci/platform.js';
import type { CliContext } from './context.js';
import type { Register } from './families.js';
import { type Column, humanDuration, humanSize, printJson, printListing } from './output.js';
import { importWithProgress } from './push.js';

const IMAGE_COLUMNS: Column[] = [
  { key: 'name', header: 'NAME' },
  { key: 'id', header: 'IMAGE ID' },
  { key: 'platform', header: 'PLATFORM' },
  { key: 'size', header: 'SIZE' },
  { key: 'created', header: 'CREATED' },
];

export function devicePlatform(ctx: CliContext): PlatformSpec {
  return ctx.config.platform ? parsePlatform(ctx.config.platform) : hostPlatform();
}

export const registerImage: Register = (program: Command, ctx: () => CliContext) => {
  const image = program.command('image').description('manage images in the local store');

  image
    .command('import <source>')
    .description(
      'import an OCI image layout directory, an oci-archive tar or a docker-archive tar; <source>:<ref> picks one image of several',
    )
    .option('--tag <name:tag>', 'name the imported image (default: names found in the source)')
    .option('--all-platforms', 'keep every platform of a multi-arch image')
    .option('--json', 'print the result as JSON')
    .action(async (source: string, opts: { tag?: string; allPlatforms?: boolean; json?: boolean }) => {
      const c = ctx();
      const res = await importWithProgress(c, source, `import ${source}`, {
        platform: devicePlatform(c),
        tag: opts.tag,
        allPlatforms: opts.allPlatforms ?? false,
      });
      if (opts.json) return printJson(res);
      for (const img of res.images) {
        process.stdout.write(
          `imported ${img.name} ${img.digest} (${img.platform}, ${humanSize(img.size)})\n`,
        );
      }
    });

  const ls = (cmd: Command) =>
    cmd
      .description('list images')
      .option('--format <format>', "table (default) | json | a template, e.g. '{{.Name}} {{.Size}}'")
      .option('--json', 'print JSON (same as --format json)')
      .option('-q, --quiet', 'only the image names')
      .action(async (opts: { json?: boolean; format?: string; quiet?: boolean }) => {
        const c = ctx();
        const client = await connectAgent(c.stateDir);
        const list = client ? await client.images() : new ImageRepo(c.db, c.store).list();
        printListing(
          list.map((i) => ({
            name: i.name,
            id: i.digest.slice(7, 19),
            digest: i.digest,
            platform: i.platform,
            size: humanSize(i.size),
            created: `${humanDuration(Date.now() - i.createdAt)} ago`,
            createdAt: new Date(i.createdAt).toISOString(),
          })),
          IMAGE_COLUMNS,
          opts.quiet ? { format: '{{.Name}}' } : opts,
          list,
        );
      });
  ls(image.command('ls').alias('list'));
  // docker's `docker images`
  ls(program.command('images'));

  image
    .command('inspect <ref>')
    .description('show an image: record, manifest and config')
    .action(async (ref: string) => {
      const c = ctx();
      printJson(await new ImageRepo(c.db, c.store).describe(ref));
    });

  image
    .command('rm <ref...>')
    .alias('remove')
    .description('remove image names and collect blobs no image uses any more')
    .action(async (refs: string[]) => {
      const c = ctx();
      const repo = new ImageRepo(c.db, c.store);
      for (const ref of refs) {
        const rec = repo.remove(ref);
        process.stdout.write(`untagged ${rec.name}\n`);
      }
      const gc = await collectGarbage({ store: c.store, db: c.db });
      process.stdout.write(`deleted ${gc.removed.length} blobs (${humanSize(gc.freedBytes)})\n`);
    });

  image
    .command('export <ref> <dir>')
    .description('write an image (or several, comma-separated) as an OCI image layout directory')
    .action(async (refs: string, dir: string) => {
      const c = ctx();
      const repo = new ImageRepo(c.db, c.store);
      const recs = refs.split(',').map((r) => repo.get(r));
      await exportImages(c.store, recs, dir);
      process.stdout.write(`exported ${recs.map((r) => r.name).join(', ')} to ${dir}\n`);
    });

  image
    .command('prune')
    .description('delete blobs that no image references')
    .option('--dry-run', 'only list what would be deleted')
    .action(async (opts: { dryRun?: boolean }) => {
      const c = ctx();
      const gc = await collectGarbage({ store: c.store, db: c.db }, { dryRun: opts.dryRun ?? false });
      process.stdout.write(
        `${opts.dryRun ? 'would delete' : 'deleted'} ${gc.removed.length} blobs (${humanSize(gc.freedBytes)}), kept ${gc.kept}\n`,
      );
    });

  image
    .command('platform')
    .description('print the platform this device selects from multi-arch images')
    .action(() => {
      process.stdout.write(`${formatPlatform(devicePlatform(ctx()))}\n`);
    });
};
