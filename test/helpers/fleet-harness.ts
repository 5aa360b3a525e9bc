import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import type { ExecutionContext } from 'ava';
import { AgentConnection, type AgentConnectionOptions } from '../../src/agent/connection.js';
import { ContentStore } from '../../src/content/store.js';
import { type Db, openDatabase } from '../../src/db/database.js';
import { keygen, loadFleetPrivateKey, resolvePublicKey } from '../../src/fleet/keys.js';
import { FleetServer, type FleetServerOptions } from '../../src/fleet/server.js';
import { createLogger, type Logger } from '../../src/lib/logger.js';

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
  db: Db;
  store: ContentStore;
  server: FleetServer;
  publicKeyPem: string;
  publicKeyFile: string;
}

/** A fleet server on its own state dir (key generated), on `mqtt` or an embedded broker. */
export async function startFleet(
  t: ExecutionContext,
  opts: {
    mqtt?: FleetServerOptions['mqtt'];
    blob?: FleetServerOptions['blob'];
    log?: Logger;
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
  const store = new ContentStore(path.join(dir, 'content'));
  const server = new FleetServer({
    fleet: FLEET,
    db,
    store,
    privateKey: await loadFleetPrivateKey(dir),
    log: opts.log ?? testLog(),
    mqtt: opts.mqtt,
    listen: { port: 0 },
    blob: opts.blob,
    pullPolicy: opts.pullPolicy ?? 'any',
  });
  await server.start();
  t.teardown(async () => {
    await server.stop();
    db.close();
  });
  return { dir, db, store, server, publicKeyPem: k.publicKeyPem, publicKeyFile: k.publicFile };
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
  timeoutMs = 10_000,
  what = 'condition',
): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
