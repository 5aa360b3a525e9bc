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
import { addClientOptions, type ClientFlags, openFleetClient } from './fleet-client.js';
import { parseLabelPairs } from './fleet-devices.js';
import { printJson, printTable } from './output.js';

export function registerFleetEnroll(fleet: Command, ctx: () => CliContext): void {
  const enroll = fleet
    .command('enroll')
    .description('enrollment tokens: devices trade one for their broker access');

  addClientOptions(
    enroll
      .command('create')
      .description('make an enrollment token (printed once)')
      .option('--group <name...>', 'groups the enrolled devices follow, in priority order')
      .option('--labels <k=v...>', 'labels the enrolled devices get')
      .option('--expires <duration>', 'valid for this long (e.g. 1h, 7d)', '1h')
      .option('--uses <n>', 'how many devices may enroll with it (default: any until it expires)')
      .option('--json', 'print JSON'),
  ).action(
    async (
      o: ClientFlags & {
        group?: string[];
        labels?: string[];
        expires: string;
        uses?: string;
        json?: boolean;
      },
    ) => {
      const client = await openFleetClient(ctx(), o);
      const { token, info } = await client.createEnrollmentToken({
        groups: o.group ?? [],
        labels: parseLabelPairs(o.labels ?? []),
        expiresInMs: parseDurationFlag('--expires', o.expires),
        ...(o.uses !== undefined ? { maxUses: Number(o.uses) } : {}),
      });
      if (o.json) return printJson({ token, ...info });
      process.stdout.write(`${token}\n`);
      process.stderr.write(
        `enrollment token ${info.id}: expires ${info.expiresAt}, ${info.maxUses ?? 'any number of'} use(s); shown once\n`,
      );
    },
  );

  addClientOptions(
    enroll
      .command('ls')
      .description('list enrollment tokens (never their secrets)')
      .option('--json', 'print JSON'),
  ).action(async (o: ClientFlags & { json?: boolean }) => {
    const rows = await (await openFleetClient(ctx(), o)).enrollmentTokens();
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
        expires: r.expiresAt,
        state: r.revokedAt
          ? 'revoked'
          : Date.parse(r.expiresAt) <= now
            ? 'expired'
            : r.maxUses !== null && r.uses >= r.maxUses
              ? 'used up'
              : 'valid',
      })),
      ['id', 'groups', 'labels', 'uses', 'expires', 'state'],
    );
  });

  addClientOptions(
    enroll.command('revoke <id>').description('refuse a token from now on (devices enrolled with it stay)'),
  ).action(async (id: string, o: ClientFlags) => {
    await (await openFleetClient(ctx(), o)).revokeEnrollmentToken(id);
    process.stdout.write(`enrollment token ${id} revoked\n`);
  });
}
