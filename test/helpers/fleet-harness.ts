import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import type { ExecutionContext } from 'ava';
import { AgentConnection, type AgentConnectionOptions } from '../../src/agent/connection.js';
import { SERVE_FILE } from '../../src/cli/fleet-link.js';
import { ContentStore } from '../../src/content/store.js';
import { type Db, openDatabase } from '../../src/db/database.js';
import { loadOrCreateFleetAccount } from '../../src/fleet/fleet-account.js';
import { describeFleetImage } from '../../src/fleet/image-record.js';
import { keygen, loadFleetPrivateKey, resolvePublicKey } from '../../src/fleet/keys.js';
import { FleetServer, type FleetServerOptions } from '../../src/fleet/server.js';
import type { DeployInput } from '../../src/fleet/services/deploy.js';
import type { DeploymentRow } from '../../src/fleet/store/deployments.js';
import { FLEET_DB_FILE, type FleetStores, openFleetStores } from '../../src/fleet/store/index.js';
import { createLogger, type Logger } from '../../src/lib/logger.js';
import type { Digest } from '../../src/oci/digest.js';
import type { TargetScope } from '../../src/transport/messages.js';

export const FLEET = 'test';

export function testLog(): Logger {
  return createLogger({ level: process.env.BERTH_TEST_LOG ?? 'silent' });
}

/** A logger whose JSON lines are kept in memory, for tests that assert a rejection was logged. */
export function memoryLog(): { log: Logger; lines: () => Array<{ msg: string; [k: string]: unknown }> } {
  const chunks: string[] = [];
  const dest = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  const log = createLogger({ level: 'debug', destination: dest });
  return {
    log,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
  };
}

export async function tempDir(t: ExecutionContext, name: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `berth-${name}-`));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface FleetSide {
  dir: string;
  /** the fleet state dir's berth.db (content records, chunk plans) */
  db: Db;
  store: ContentStore;
  /** fleet.db: devices, deployments, images, enrollment */
  stores: FleetStores;
  server: FleetServer;
  publicKeyPem: string;
  publicKeyFile: string;
  /** record an image whose blobs are in `store` as `name` (what `fleet push` does after the import) */
  addImage(name: string, digest: Digest, mediaType: string): Promise<void>;
  /**
   * Broker credentials for a device, as enrollment hands them out (a token made and exchanged through the
   * enrollment service); {} when the broker is one the fleet does not manage.
   */
  credentials(deviceId: string, o?: { groups?: string[] }): Promise<{ username?: string; password?: string }>;
  /** sign and publish a target, as `berth fleet deploy` does (an unknown device allowed) */
  deploy(scope: TargetScope, input: DeployInput): Promise<DeploymentRow>;
}

/** A fleet server on its own state dir (key generated), on `mqtt` or an embedded broker (authenticated). */
export async function startFleet(
  t: ExecutionContext,
  opts: {
    mqtt?: FleetServerOptions['mqtt'];
    brokerAuth?: FleetServerOptions['brokerAuth'];
    blob?: FleetServerOptions['blob'];
    allowAnonymous?: boolean;
    log?: Logger;
    /** the server's clock (token expiry, retention) */
    now?: () => number;
    /** the rollout driver's timers (soak ends, phase timeouts) */
    clock?: FleetServerOptions['clock'];
    /**
     * Default `any`: the transfer tests pull images they never deploy. Tests of who may pull what, and
     * the stacks that deploy for real, pass `targets` (the product's default).
     */
    pullPolicy?: FleetServerOptions['pullPolicy'];
  } = {},
): Promise<FleetSide> {
  const dir = await tempDir(t, 'fleet');
  const k = await keygen(dir);
  const db = openDatabase(path.join(dir, 'berth.db'));
  const stores = openFleetStores(path.join(dir, FLEET_DB_FILE), { legacy: db });
  const store = new ContentStore(path.join(dir, 'content'));
  const server = new FleetServer({
    fleet: FLEET,
    db,
    store,
    stores,
    privateKey: await loadFleetPrivateKey(dir),
    log: opts.log ?? testLog(),
    mqtt: opts.mqtt,
    brokerAuth: opts.brokerAuth,
    allowAnonymous: opts.allowAnonymous,
    // as `fleet serve` does: the account and fleet-serve.json let the CLI on this state dir in
    fleetAccount: opts.mqtt ? undefined : await loadOrCreateFleetAccount(dir),
    listen: { port: 0 },
    blob: opts.blob,
    pullPolicy: opts.pullPolicy ?? 'any',
    ...(opts.now ? { now: opts.now } : {}),
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  await server.start();
  await fsp.writeFile(
    path.join(dir, SERVE_FILE),
    JSON.stringify({ broker: server.brokerUrl, fleet: FLEET, embedded: !opts.mqtt }),
  );
  t.teardown(async () => {
    await server.stop();
    stores.close();
    db.close();
  });
  const services = server.services;
  return {
    dir,
    db,
    store,
    stores,
    server,
    publicKeyPem: k.publicKeyPem,
    publicKeyFile: k.publicFile,
    addImage: async (name, digest, mediaType) => {
      stores.images.put(await describeFleetImage(store, name, digest, mediaType));
    },
    credentials: async (deviceId, o = {}) => {
      if (!server.access.issuesCredentials) return {};
      const { token } = services.enrollment.create({
        groups: o.groups ?? [],
        expiresInMs: 60_000,
        maxUses: 1,
      });
      const e = await services.enrollment.exchange({ token, deviceId });
      return { username: e.username!, password: e.password! };
    },
    deploy: (scope, input) => services.deploy.deploy(input, scope, { allowUnknown: true }),
  };
}

export interface AgentSide {
  dir: string;
  db: Db;
  store: ContentStore;
  agent: AgentConnection;
}

export async function startAgent(
  t: ExecutionContext,
  fleet: FleetSide,
  opts: {
    deviceId: string;
    groups?: string[];
    url?: string;
    protocolVersion?: 4 | 5 | 'auto';
    transfer?: AgentConnectionOptions['transfer'];
    platform?: AgentConnectionOptions['platform'];
    log?: Logger;
    /** Extra MQTT options (TLS material, credentials). */
    mqtt?: Partial<AgentConnectionOptions['mqtt']>;
    /** Wait for the first CONNACK (default true). */
    wait?: boolean;
    /** Publish online/offline and a last will (default true; false like `berth pull`). */
    presence?: boolean;
  },
): Promise<AgentSide> {
  const dir = await tempDir(t, `agent-${opts.deviceId}`);
  const db = openDatabase(path.join(dir, 'berth.db'));
  const store = new ContentStore(path.join(dir, 'content'));
  const creds =
    opts.mqtt?.username === undefined
      ? await fleet.credentials(opts.deviceId, { groups: opts.groups ?? [] })
      : {};
  const agent = new AgentConnection({
    fleet: FLEET,
    deviceId: opts.deviceId,
    groups: opts.groups ?? [],
    platform: opts.platform ?? { os: 'linux', architecture: 'amd64' },
    agentVersion: 'test',
    mqtt: {
      url: opts.url ?? fleet.server.brokerUrl,
      protocolVersion: opts.protocolVersion ?? 'auto',
      backoff: { initialMs: 50, maxMs: 500 },
      ...creds,
      ...opts.mqtt,
    },
    store,
    db,
    publicKey: await resolvePublicKey(fleet.publicKeyFile),
    log: opts.log ?? testLog(),
    transfer: opts.transfer,
    ...(opts.presence === false ? { presence: false } : {}),
  });
  await agent.start(opts.wait ?? true);
  t.teardown(async () => {
    await agent.stop();
    db.close();
  });
  return { dir, db, store, agent };
}

export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  what = 'condition',
): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
