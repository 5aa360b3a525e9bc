/**
 * Which fleet an operator command talks to, and the FleetClient for it:
 *   1. `--server <url>` (+ `--token`, or BERTH_FLEET_TOKEN, or the saved login's token for that server);
 *   2. BERTH_FLEET_SERVER (+ BERTH_FLEET_TOKEN);
 *   3. the login saved by `berth fleet login` ($XDG_CONFIG_HOME/berth/fleet.json, 0600);
 *   4. else — or with `--local` — the fleet server's state dir on this machine (LocalFleetClient).
 * The HTTP transport and everything local are loaded on demand, so a remote command never opens the
 * state dir and a local one never loads HTTP code it does not use.
 */
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Command } from 'commander';
import type { FleetClient } from '../fleet/client/client.js';
import { writeFileAtomic } from '../lib/atomic.js';
import { invalidInput, notFound } from '../lib/errors.js';
import type { MqttConnection } from '../transport/connection.js';
import type { CliContext } from './context.js';
import { openFleetLink } from './fleet-link.js';
import type { MqttFlags } from './mqtt-options.js';

export interface ClientFlags {
  server?: string;
  token?: string;
  serverCa?: string;
  local?: boolean;
}

export function addClientOptions(cmd: Command): Command {
  return cmd
    .option(
      '--server <url>',
      'a fleet server API, https://host:8080 (env BERTH_FLEET_SERVER, or `berth fleet login`)',
    )
    .option('--token <token>', 'API token for --server (env BERTH_FLEET_TOKEN)')
    .option('--server-ca <file>', 'CA certificate (PEM) of a --server whose certificate no public CA signed')
    .option('--local', 'use the fleet server state dir on this machine even when a login is saved');
}

/** The saved login of `berth fleet login`. */
export interface SavedLogin {
  server: string;
  token: string;
  /** the token's id when `fleet login --user` made it (logout revokes it) */
  tokenId?: string;
  ca?: string;
}

export function loginFile(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || path.join(env.HOME || os.homedir(), '.config');
  return path.join(base, 'berth', 'fleet.json');
}

export async function readLogin(env: NodeJS.ProcessEnv = process.env): Promise<SavedLogin | undefined> {
  try {
    const v = JSON.parse(await fsp.readFile(loginFile(env), 'utf8')) as SavedLogin;
    return typeof v.server === 'string' && typeof v.token === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

export async function saveLogin(login: SavedLogin, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const file = loginFile(env);
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFileAtomic(file, `${JSON.stringify(login, null, 2)}\n`, 0o600);
  return file;
}

export async function forgetLogin(env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  try {
    await fsp.unlink(loginFile(env));
    return true;
  } catch {
    return false;
  }
}

function readCa(file: string | undefined): Buffer | undefined {
  if (!file) return undefined;
  try {
    return readFileSync(file);
  } catch {
    throw notFound(`server CA file ${file} not found or unreadable`);
  }
}

/** Where the remote fleet is, or undefined for the local state dir. */
export async function remoteTarget(
  flags: ClientFlags,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ server: string; token: string; ca?: Buffer | undefined } | undefined> {
  if (flags.local) return undefined;
  const saved = await readLogin(env);
  // an empty variable is unset (`BERTH_FLEET_SERVER= berth fleet …`)
  const server = flags.server || env.BERTH_FLEET_SERVER || saved?.server;
  if (!server) return undefined;
  const token =
    flags.token || env.BERTH_FLEET_TOKEN || (saved && saved.server === server ? saved.token : undefined);
  if (!token)
    throw invalidInput(
      `no API token for ${server}: pass --token, set BERTH_FLEET_TOKEN, or run \`berth fleet login --server ${server}\``,
    );
  const ca =
    flags.serverCa || env.BERTH_FLEET_CA || (saved && saved.server === server ? saved.ca : undefined);
  return { server, token, ca: readCa(ca) };
}

/** The FleetClient for this command; closed with the CLI context. */
export async function openFleetClient(c: CliContext, flags: ClientFlags & MqttFlags): Promise<FleetClient> {
  const remote = await remoteTarget(flags);
  let client: FleetClient;
  if (remote) {
    const { HttpFleetClient } = await import('../fleet/client/http.js');
    client = new HttpFleetClient(remote);
  } else {
    client = await openLocalClient(c, flags);
  }
  c.onClose(() => client.close());
  return client;
}

async function openLocalClient(c: CliContext, flags: MqttFlags): Promise<FleetClient> {
  const [
    { fleetStores, localFleet },
    { IdentityService },
    { IdentityStore },
    { FleetOperations },
    { LocalFleetClient },
  ] = await Promise.all([
    import('./fleet-local.js'),
    import('../fleet/identity/service.js'),
    import('../fleet/identity/store.js'),
    import('../fleet/operations.js'),
    import('../fleet/client/local.js'),
  ]);
  const stores = fleetStores(c);
  const identity = new IdentityService(new IdentityStore(stores.db));
  let services: ReturnType<typeof localFleet> | undefined;
  let link: MqttConnection | undefined;
  let commands: import('../fleet/commands.js').CommandService | undefined;
  // the services need the fleet key and an MQTT link: opened on first use, so `user add` or `devices`
  // work on a state dir without either
  const ops = new FleetOperations({
    identity,
    stores,
    services: async () => {
      services ??= localFleet(c, flags);
      return (await services).services;
    },
    content: { store: c.store, db: c.db },
    commands: async () => {
      if (commands) return commands;
      const { CommandService } = await import('../fleet/commands.js');
      const { loadFleetPrivateKey } = await import('../fleet/keys.js');
      const privateKey = await loadFleetPrivateKey(c.stateDir);
      const opened = await openFleetLink(c, flags, 'berth-command');
      link = opened.conn;
      commands = new CommandService({ fleet: opened.fleet, link, privateKey, log: c.log });
      await commands.start();
      return commands;
    },
  });
  const user = safeUser();
  const client = new LocalFleetClient(
    ops,
    { kind: 'local', name: user, role: 'admin', userId: null },
    {
      stateDir: c.stateDir,
      close: async () => {
        commands?.stop();
        await link?.close(true);
      },
    },
  );
  return client;
}

function safeUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return String(process.getuid?.() ?? 'unknown');
  }
}
