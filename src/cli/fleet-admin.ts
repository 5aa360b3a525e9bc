/**
 * The fleet's people and credentials, over FleetClient (so each works on the server's state dir and
 * remotely with --server/--token):
 *
 *   berth fleet login --server https://fleet:8080 --user alice      # asks the password, saves an API token
 *   berth fleet login --server https://fleet:8080 --token berth_…   # saves a token you have
 *   berth fleet logout | whoami
 *   berth fleet user add alice --role admin [--password-stdin]      # on the server: the first admin
 *   berth fleet user ls | rm <name> | role <name> <role> | passwd <name>
 *   berth fleet token create --name ci --role operator [--expires 30d]   # the token is printed once
 *   berth fleet token ls | revoke <id>
 *   berth fleet audit [--failed] [--actor user:alice] [--action deployment.create] [--limit 50]
 */
import * as os from 'node:os';
import type { Command } from 'commander';
import { isRole, type Role } from '../fleet/identity/roles.js';
import { invalidInput } from '../lib/errors.js';
import type { CliContext } from './context.js';
import { parseDurationFlag } from './duration.js';
import {
  addClientOptions,
  type ClientFlags,
  forgetLogin,
  openFleetClient,
  readLogin,
  remoteTarget,
  saveLogin,
} from './fleet-client.js';
import { printJson, printTable } from './output.js';

function role(v: string): Role {
  if (!isRole(v)) throw invalidInput(`--role ${v}: expected viewer, operator or admin`);
  return v;
}

/** `--expires 30d` or an ISO time → ISO time. */
function expiresAt(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (/^\d{4}-\d\d-\d\d/.test(v)) {
    const t = Date.parse(v);
    if (!Number.isFinite(t)) throw invalidInput(`--expires ${v}: not a time`);
    return new Date(t).toISOString();
  }
  return new Date(Date.now() + parseDurationFlag('--expires', v)).toISOString();
}

/** A password: from stdin's first line (`--password-stdin`, scripts), or asked on the terminal without echo. */
export async function readPassword(prompt: string, fromStdin: boolean): Promise<string> {
  const stdin = process.stdin;
  if (fromStdin || !stdin.isTTY) {
    let text = '';
    for await (const chunk of stdin) {
      text += String(chunk);
      if (text.includes('\n') || text.length > 4096) break;
    }
    return text.split(/\r?\n/)[0] ?? '';
  }
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let pw = '';
      const onData = (b: Buffer) => {
        for (const ch of b.toString('utf8')) {
          if (ch === '\r' || ch === '\n') {
            stdin.off('data', onData);
            process.stderr.write('\n');
            return resolve(pw);
          }
          if (ch === '\u0003') {
            stdin.off('data', onData);
            return reject(invalidInput('cancelled'));
          }
          if (ch === '\u007f') pw = pw.slice(0, -1);
          else pw += ch;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
}

export function registerFleetAdmin(fleet: Command, ctx: () => CliContext): void {
  const client = (flags: ClientFlags) => openFleetClient(ctx(), flags);

  fleet
    .command('login')
    .description('save a fleet server and an API token for the fleet commands (0600 in your config dir)')
    .requiredOption('--server <url>', 'the fleet server API, https://host:8080')
    .option('--token <token>', 'an API token you already have')
    .option('--user <name>', 'log in with a password instead; an API token is made for this machine')
    .option('--password-stdin', 'read the password from stdin')
    .option('--expires <duration>', 'life of the token made with --user', '30d')
    .option('--server-ca <file>', 'CA certificate (PEM) of a server whose certificate no public CA signed')
    .action(
      async (o: {
        server: string;
        token?: string;
        user?: string;
        passwordStdin?: boolean;
        expires: string;
        serverCa?: string;
      }) => {
        if (Boolean(o.token) === Boolean(o.user)) throw invalidInput('pass --token TOKEN or --user NAME');
        const { HttpFleetClient } = await import('../fleet/client/http.js');
        const ca = o.serverCa ? (await import('node:fs')).readFileSync(o.serverCa) : undefined;
        let token = o.token;
        let tokenId: string | undefined;
        if (o.user) {
          const password = await readPassword(
            `password for ${o.user} at ${o.server}: `,
            o.passwordStdin === true,
          );
          const made = await loginForToken(o.server, ca, o.user, password, expiresAt(o.expires)!);
          token = made.token;
          tokenId = made.id;
        }
        const http = new HttpFleetClient({ server: o.server, token: token!, ca });
        try {
          const who = await http.whoami();
          const file = await saveLogin({
            server: o.server,
            token: token!,
            ...(tokenId ? { tokenId } : {}),
            ...(o.serverCa ? { ca: (await import('node:path')).resolve(o.serverCa) } : {}),
          });
          process.stdout.write(`logged in to ${o.server} as ${whoText(who)}; saved in ${file}\n`);
        } finally {
          await http.close();
        }
      },
    );

  fleet
    .command('logout')
    .description('forget the saved login (and revoke the token `login --user` made)')
    .action(async () => {
      const saved = await readLogin();
      if (!saved) {
        process.stdout.write('not logged in\n');
        return;
      }
      if (saved.tokenId) {
        const { HttpFleetClient } = await import('../fleet/client/http.js');
        const ca = saved.ca ? (await import('node:fs')).readFileSync(saved.ca) : undefined;
        const http = new HttpFleetClient({ server: saved.server, token: saved.token, ca });
        await http.revokeToken(saved.tokenId).catch(() => undefined);
        await http.close();
      }
      await forgetLogin();
      process.stdout.write(`logged out of ${saved.server}\n`);
    });

  addClientOptions(fleet.command('whoami').description('who the fleet commands act as, and where')).action(
    async (o: ClientFlags) => {
      const c = await client(o);
      const who = await c.whoami();
      process.stdout.write(`${whoText(who)} at ${c.where}\n`);
    },
  );

  const user = fleet.command('user').description('fleet API users (admin)');
  addClientOptions(
    user
      .command('add <name>')
      .description('add a user; on the server state dir this makes the first admin')
      .requiredOption('--role <role>', 'viewer | operator | admin')
      .option('--password-stdin', 'read the password from stdin'),
  ).action(async (name: string, o: ClientFlags & { role: string; passwordStdin?: boolean }) => {
    const r = role(o.role);
    const password = await readPassword(`password for ${name}: `, o.passwordStdin === true);
    const u = await (await client(o)).addUser({ name, role: r, password });
    process.stdout.write(`user ${u.name} (${u.role}) added\n`);
  });
  addClientOptions(user.command('ls').description('list users').option('--json', 'print JSON')).action(
    async (o: ClientFlags & { json?: boolean }) => {
      const rows = await (await client(o)).users();
      if (o.json) return printJson(rows);
      printTable(
        rows.map((u) => ({ name: u.name, role: u.role, created: u.createdAt })),
        ['name', 'role', 'created'],
      );
    },
  );
  addClientOptions(
    user.command('rm <name>').description('delete a user (their tokens and sessions go too)'),
  ).action(async (name: string, o: ClientFlags) => {
    await (await client(o)).deleteUser(name);
    process.stdout.write(`user ${name} deleted\n`);
  });
  addClientOptions(user.command('role <name> <role>').description('change a user’s role')).action(
    async (name: string, r: string, o: ClientFlags) => {
      const u = await (await client(o)).updateUser(name, { role: role(r) });
      process.stdout.write(`user ${u.name} is now ${u.role}\n`);
    },
  );
  addClientOptions(
    user
      .command('passwd <name>')
      .description('set a password (ends the user’s sessions); your own needs --current')
      .option('--current', 'ask for the current password (changing your own as a non-admin)')
      .option('--password-stdin', 'read the new password from stdin'),
  ).action(async (name: string, o: ClientFlags & { current?: boolean; passwordStdin?: boolean }) => {
    const currentPassword = o.current ? await readPassword('current password: ', false) : undefined;
    const password = await readPassword(`new password for ${name}: `, o.passwordStdin === true);
    await (await client(o)).updateUser(name, { password, currentPassword });
    process.stdout.write(`password of ${name} changed\n`);
  });

  const token = fleet.command('token').description('API tokens for scripts and the remote CLI');
  addClientOptions(
    token
      .command('create')
      .description('make an API token; it is printed once (stdout), only its hash is kept')
      .requiredOption('--name <name>', 'what it is for, e.g. ci')
      .requiredOption('--role <role>', 'viewer | operator | admin (at most your own)')
      .option('--expires <when>', 'a duration (30d, 12h) or an ISO time; default: never'),
  ).action(async (o: ClientFlags & { name: string; role: string; expires?: string }) => {
    const made = await (await client(o)).createToken({
      name: o.name,
      role: role(o.role),
      expiresAt: expiresAt(o.expires),
    });
    process.stderr.write(
      `token ${made.info.id} (${made.info.name}, ${made.info.role}${made.info.expiresAt ? `, expires ${made.info.expiresAt}` : ''}); store it now, it is not shown again:\n`,
    );
    process.stdout.write(`${made.token}\n`);
  });
  addClientOptions(token.command('ls').description('list API tokens').option('--json', 'print JSON')).action(
    async (o: ClientFlags & { json?: boolean }) => {
      const rows = await (await client(o)).tokens();
      if (o.json) return printJson(rows);
      printTable(
        rows.map((t) => ({
          id: t.id,
          name: t.name,
          role: t.role,
          user: t.user ?? '(server)',
          state: t.state,
          expires: t.expiresAt ?? 'never',
          'last used': t.lastUsedAt ?? '-',
        })),
        ['id', 'name', 'role', 'user', 'state', 'expires', 'last used'],
      );
    },
  );
  addClientOptions(token.command('revoke <id>').description('revoke an API token (401 from then on)')).action(
    async (id: string, o: ClientFlags) => {
      const t = await (await client(o)).revokeToken(id);
      process.stdout.write(`token ${t.id} (${t.name}) revoked\n`);
    },
  );

  addClientOptions(
    fleet
      .command('audit')
      .description('the audit log (admin): every changing call, who, what, when, from where, result')
      .option('--limit <n>', 'rows', '50')
      .option('--failed', 'only refused or failed calls')
      .option('--actor <actor>', 'e.g. user:alice, token:ci, local:root')
      .option('--action <action>', 'e.g. deployment.create, session.login')
      .option('--json', 'print JSON'),
  ).action(
    async (
      o: ClientFlags & { limit: string; failed?: boolean; actor?: string; action?: string; json?: boolean },
    ) => {
      const page = await (await client(o)).audit({
        limit: Number(o.limit),
        ...(o.failed ? { failed: true } : {}),
        ...(o.actor ? { actor: o.actor } : {}),
        ...(o.action ? { action: o.action } : {}),
      });
      if (o.json) return printJson(page);
      printTable(
        page.items.map((a) => ({
          at: a.at,
          actor: a.actor,
          action: a.action,
          target: a.target ?? '',
          from: a.source,
          result: a.status ? `${a.result} ${a.status}` : a.result,
        })),
        ['at', 'actor', 'action', 'target', 'from', 'result'],
      );
    },
  );
}

function whoText(w: { user: string | null; token: string | null; role: string }): string {
  const who = w.token ? `${w.user ?? 'the server'}'s token ${w.token}` : (w.user ?? '?');
  return `${who} (${w.role})`;
}

/** Log in with a password over HTTP (session + CSRF), make an API token for this machine, log out. */
async function loginForToken(
  server: string,
  ca: Buffer | undefined,
  name: string,
  password: string,
  expires: string,
): Promise<{ token: string; id: string }> {
  const { HttpFleetClient } = await import('../fleet/client/http.js');
  const session = new HttpFleetClient({ server, token: '', ca });
  try {
    return await session.loginAndMakeToken(name, password, {
      name: `cli ${os.hostname().slice(0, 40)}`.replace(/[^A-Za-z0-9_.@ -]/g, '-'),
      expiresAt: expires,
    });
  } finally {
    await session.close();
  }
}

export { remoteTarget };
