/**
 * `berth fleet enroll …`: enrollment tokens. A device exchanges one, once, for its own broker credentials
 * (`berth agent --enroll <server-url> --token <t>`); the token is printed once and only its hash is kept.
 *
 *   berth fleet enroll create --group g --labels site=berlin --expires 1h [--uses 10]
 *   berth fleet enroll ls
 *   berth fleet enroll revoke <id>
 */
import type { Command } from 'commander';
import type { CliContext } from './context.js';
import { parseDurationFlag } from './duration.js';
import { parseLabelPairs } from './fleet-devices.js';
import { localFleet } from './fleet-local.js';
import { printJson, printTable } from './output.js';

export function registerFleetEnroll(fleet: Command, ctx: () => CliContext): void {
  const enroll = fleet
    .command('enroll')
    .description('enrollment tokens: devices trade one for their broker access');

  enroll
    .command('create')
    .description('make an enrollment token (printed once)')
    .option('--group <name...>', 'groups the enrolled devices follow, in priority order')
    .option('--labels <k=v...>', 'labels the enrolled devices get')
    .option('--expires <duration>', 'valid for this long (e.g. 1h, 7d)', '1h')
    .option('--uses <n>', 'how many devices may enroll with it (default: any until it expires)')
    .option('--json', 'print JSON')
    .action(
      async (o: { group?: string[]; labels?: string[]; expires: string; uses?: string; json?: boolean }) => {
        const { services } = await localFleet(ctx(), {});
        const { token, row } = services.enrollment.create({
          groups: o.group ?? [],
          labels: parseLabelPairs(o.labels ?? []),
          expiresInMs: parseDurationFlag('--expires', o.expires),
          ...(o.uses !== undefined ? { maxUses: Number(o.uses) } : {}),
        });
        if (o.json) return printJson({ token, ...row });
        process.stdout.write(`${token}\n`);
        process.stderr.write(
          `enrollment token ${row.id}: expires ${new Date(row.expiresAt).toISOString()}, ${row.maxUses ?? 'any number of'} use(s); shown once\n`,
        );
      },
    );

  enroll
    .command('ls')
    .description('list enrollment tokens (never their secrets)')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const { services } = await localFleet(ctx(), {});
      const rows = services.enrollment.list();
      if (o.json) return printJson(rows);
      const now = Date.now();
      printTable(
        rows.map((r) => ({
          id: r.id,
          groups: r.groups.join(','),
          labels: Object.entries(r.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(','),
          uses: `${r.uses}/${r.maxUses ?? '∞'}`,
          expires: new Date(r.expiresAt).toISOString(),
          state: r.revokedAt
            ? 'revoked'
            : r.expiresAt <= now
              ? 'expired'
              : r.maxUses !== null && r.uses >= r.maxUses
                ? 'used up'
                : 'valid',
        })),
        ['id', 'groups', 'labels', 'uses', 'expires', 'state'],
      );
    });

  enroll
    .command('revoke <id>')
    .description('refuse a token from now on (devices enrolled with it stay)')
    .action(async (id: string) => {
      const { services } = await localFleet(ctx(), {});
      services.enrollment.revoke(id);
      process.stdout.write(`enrollment token ${id} revoked\n`);
    });
}
