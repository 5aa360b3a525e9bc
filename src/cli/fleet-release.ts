/**
 * `berth fleet release push|ls|rm`: agent releases for self-update (docs/self-update.md).
 *
 *   berth fleet release push dist/ --version 0.2.0   the executables npm run package built, one per arch
 *   berth fleet release ls [--json]
 *   berth fleet release rm 0.1.0                     refused while a current target names it
 *
 * `push` reads the executables on the fleet server's machine and signs with its key, so it runs there
 * (the state dir); `ls` and `rm` go through the FleetClient, so they work remotely too (--server, login).
 *
 * A target names a release with `fleet deploy … --agent 0.2.0` (or `agent` in a deploy file).
 */
import type { Command } from 'commander';
import type { CliContext } from './context.js';
import { addClientOptions, type ClientFlags, openFleetClient } from './fleet-client.js';
import { localFleet } from './fleet-local.js';
import { humanSize, printJson, printTable } from './output.js';

export function registerFleetRelease(fleet: Command, ctx: () => CliContext): void {
  const release = fleet.command('release').description('agent releases the devices update themselves to');

  release
    .command('push <dir>')
    .description(
      'store the executables in <dir> (berth-linux-<arch> + their .json build records) as a signed release',
    )
    .requiredOption('--version <version>', 'the release version; every build record must say the same')
    .action(async (dir: string, o: { version: string }) => {
      const { services } = await localFleet(ctx(), {});
      const r = await services.releases.push(dir, o.version);
      const size = Object.values(r.artifacts).reduce((n, a) => n + a.size, 0);
      process.stdout.write(
        `release ${r.version}: ${Object.keys(r.artifacts).sort().join(', ')} (${humanSize(size)}), manifest ${r.manifest.digest}\n`,
      );
    });

  addClientOptions(
    release
      .command('ls')
      .description('list agent releases, newest version first')
      .option('--json', 'print JSON'),
  ).action(async (o: ClientFlags & { json?: boolean }) => {
    const rows = await (await openFleetClient(ctx(), o)).releases();
    if (o.json) return printJson(rows);
    printTable(
      rows.map((r) => ({
        version: r.version,
        platforms: Object.keys(r.artifacts).sort().join(','),
        size: humanSize(Object.values(r.artifacts).reduce((n, a) => n + a.size, 0)),
        schema: String(r.database.schema),
        manifest: r.manifest.digest.slice(0, 19),
        pushed: r.createdAt,
      })),
      ['version', 'platforms', 'size', 'schema', 'manifest', 'pushed'],
    );
  });

  addClientOptions(
    release
      .command('rm <version>')
      .description('remove a release no current target names (its blobs go too)'),
  ).action(async (version: string, o: ClientFlags) => {
    await (await openFleetClient(ctx(), o)).deleteRelease(version);
    process.stdout.write(`removed release ${version}\n`);
  });
}
