import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import type { ContentStore } from '../content/store.js';
import type { Db } from '../db/database.js';
import { errorMessage, unavailable } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { targetsAuthorizer } from '../transport/blob-access.js';
import { BlobServer, type BlobServerOptions } from '../transport/blob-server.js';
import { MqttConnection, type MqttConnectionOptions } from '../transport/connection.js';
import type { Target } from '../transport/messages.js';
import type { Principal } from './acl.js';
import { type EmbeddedBroker, startEmbeddedBroker } from './broker.js';
import { FleetBus } from './bus.js';
import { DynsecClient, ensureFleetRole } from './dynsec.js';
import { Ingest, type IngestOptions } from './ingest.js';
import { collect, type RetainedTargets, readRetainedTargets, targetFilters } from './retained.js';
import { type BrokerAccess, dynsecAccess, embeddedAccess, externalAccess } from './services/broker-access.js';
import { secretMatches, sha256Hex } from './services/enrollment.js';
import { createFleetServices, type FleetServices } from './services/index.js';
import type { FleetStores } from './store/index.js';

/**
 * The fleet server: one MQTT connection (to `mqtt`, or to an embedded aedes when none is given), the ingest
 * that stores what devices report, the services (deploy, devices, enrollment) over the fleet's stores, the
 * blob service, and the current targets re-published (retained) on every connect so a broker that lost its
 * retained store converges again.
 *
 * Broker access control (`brokerAuth`):
 *   embedded  (no `mqtt`) aedes authenticates every client: devices with their enrollment credentials, the
 *             fleet's own connections with `fleetAccount`; anonymous only with `allowAnonymous` (a lab).
 *   dynsec    Mosquitto with the dynamic security plugin: the server's account (`mqtt.username`, a dynsec
 *             admin) gets the fleet role at start; each enrolled device gets a client + role.
 *   external  another broker, managed by the operator; enrollment hands out no MQTT credentials.
 *
 * Lifecycle: `new FleetServer(opts)` → `start()` → … → `stop()`. Nothing is opened in the constructor.
 */
export interface FleetServerOptions {
  fleet: string;
  /** the state dir's berth.db: the content store's records and the chunk-plan cache */
  db: Db;
  store: ContentStore;
  /** the operator plane (fleet.db) */
  stores: FleetStores;
  privateKey: KeyObject;
  log: Logger;
  /** External broker; when absent an embedded one listens on `listen`. */
  mqtt?: Omit<MqttConnectionOptions, 'clientId' | 'log'> | undefined;
  listen?: { host?: string; port?: number } | undefined;
  /** how devices are given broker access on an external broker (default external) */
  brokerAuth?: 'dynsec' | 'external' | undefined;
  /** the embedded broker's account for the fleet's own connections (server, local CLI) */
  fleetAccount?: { username: string; password: string } | undefined;
  /** embedded broker: accept clients without credentials (logged; never in production) */
  allowAnonymous?: boolean | undefined;
  /** the broker URL enrolling devices are given (default: the one the server uses) */
  advertiseBroker?: string | undefined;
  blob?:
    | Pick<
        BlobServerOptions,
        'gatherMs' | 'maxInflight' | 'rateLimit' | 'maxQueuedPerDevice' | 'maxQueued' | 'maxQueueAgeMs'
      >
    | undefined;
  /**
   * Which images a device may pull: `targets` only what the current targets of the device and its
   * groups name; `any` every image of the fleet. The composition root decides: `berth fleet serve` uses
   * `targets` unless told `--pull-policy any` (docs/protocol.md); embedding code that says nothing gets
   * `any`, the behaviour of earlier versions.
   */
  pullPolicy?: 'targets' | 'any' | undefined;
  ingest?: Pick<IngestOptions, 'flushMs' | 'maxBatch' | 'maxQueued'> | undefined;
  /** how often retention runs over events and metrics (default 10 min) */
  pruneEveryMs?: number | undefined;
  /** how often revocations recorded elsewhere (the local CLI) are finished on the broker (default 1 s) */
  accessCheckMs?: number | undefined;
  now?: () => number;
  /** the rollout driver's clock (tests) */
  clock?: import('../agent/ports.js').Clock | undefined;
}

export class FleetServer {
  readonly stores: FleetStores;
  readonly bus: FleetBus;
  readonly services: FleetServices;
  readonly access: BrokerAccess;
  readonly ingest: Ingest;
  conn: MqttConnection | undefined;
  blobs: BlobServer | undefined;
  broker: EmbeddedBroker | undefined;
  private dynsec: DynsecClient | undefined;
  private account: { username: string; password: string } | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private accessTimer: NodeJS.Timeout | undefined;
  private unsubscribeBus: (() => void) | undefined;

  constructor(private readonly opts: FleetServerOptions) {
    this.stores = opts.stores;
    this.bus = new FleetBus(opts.log);
    const mode = opts.mqtt ? (opts.brokerAuth ?? 'external') : 'embedded';
    this.access =
      mode === 'embedded'
        ? embeddedAccess(() => this.broker)
        : mode === 'dynsec'
          ? dynsecAccess(() => {
              if (!this.dynsec) throw unavailable('the fleet server is not connected to its broker');
              return this.dynsec;
            })
          : externalAccess;
    this.services = createFleetServices({
      stores: opts.stores,
      store: opts.store,
      fleet: opts.fleet,
      privateKey: opts.privateKey,
      log: opts.log,
      bus: this.bus,
      access: this.access,
      brokerUrl: () => opts.advertiseBroker ?? this.brokerUrl,
      publisher: () => {
        if (!this.conn) throw unavailable('the fleet server is not started');
        return this.conn;
      },
      ...(opts.now ? { now: opts.now } : {}),
      drive: { clock: opts.clock },
    });
    this.ingest = new Ingest({
      fleet: opts.fleet,
      stores: opts.stores,
      bus: this.bus,
      log: opts.log,
      ...opts.ingest,
      ...(opts.now ? { now: opts.now } : {}),
    });
  }

  /** The broker URL in use (the embedded one's once started). */
  get brokerUrl(): string {
    return this.broker?.url ?? this.opts.mqtt?.url ?? '';
  }

  /** Who a broker username/password is, for the embedded broker. */
  private authenticate(username: string, password: Buffer): Principal | undefined {
    const acct = this.account;
    const pw = password.toString('utf8');
    if (acct && username === acct.username)
      return secretMatches(pw, sha256Hex(acct.password)) ? { kind: 'fleet' } : undefined;
    const cred = this.stores.enrollment.activeByUsername(username);
    if (!cred || !secretMatches(pw, cred.passwordHash)) return undefined;
    if (this.stores.devices.get(cred.deviceId)?.revokedAt) return undefined;
    return { kind: 'device', deviceId: cred.deviceId };
  }

  /** Connect (Unavailable after `connectTimeoutMs` when the broker does not answer), then serve. */
  async start(opts: { connectTimeoutMs?: number } = {}): Promise<void> {
    const { log } = this.opts;
    let mqtt = this.opts.mqtt;
    if (!mqtt) {
      const account = this.opts.fleetAccount ?? {
        username: 'berth-fleet',
        password: randomBytes(24).toString('base64url'),
      };
      this.account = account;
      this.broker = await startEmbeddedBroker({
        ...this.opts.listen,
        log,
        auth: {
          fleet: this.opts.fleet,
          allowAnonymous: this.opts.allowAnonymous === true,
          authenticate: (u, p) => this.authenticate(u, p),
        },
      });
      mqtt = {
        url: this.broker.url,
        protocolVersion: 4,
        username: account.username,
        password: account.password,
      };
    } else if (this.access.mode === 'dynsec') {
      await ensureFleetRole(mqtt, { fleet: this.opts.fleet, log });
    }
    const conn = new MqttConnection({
      ...mqtt,
      clientId: `berth-fleet-${randomBytes(4).toString('hex')}`,
      log,
    });
    this.conn = conn;
    if (this.access.mode === 'dynsec') this.dynsec = new DynsecClient(conn, { fleet: this.opts.fleet, log });
    // at every connect: the targets the broker lacks (all of them on a broker that lost its store), then the
    // rollouts look again at publishes a crash or the lost connection left in doubt
    let synced: Promise<void> = Promise.resolve();
    conn.on('connect', () => {
      synced = this.services.deploy
        .republish({ retained: () => this.retainedTargets(conn) })
        .then((n) => {
          if (n > 0) log.info({ targets: n }, 'targets the broker did not hold published');
          return this.services.rolloutDriver?.resync();
        })
        .catch((err) => log.warn({ err: errorMessage(err) }, 'republishing targets failed'));
    });
    try {
      await conn.start({ timeoutMs: opts.connectTimeoutMs });
    } catch (err) {
      await this.stop();
      throw err;
    }
    await synced;
    await this.ingest.start(conn);
    const recovered = await this.services.enrollment.recover();
    if (recovered.undone.length + recovered.revoked.length > 0)
      log.info(recovered, 'finished enrollments and revocations a restart interrupted');
    // A device's last will (or its clean stop) says offline: what it queued at the blob service goes.
    this.unsubscribeBus = this.bus.subscribe((e) => {
      if (e.type === 'device.offline') this.blobs?.deviceGone(e.deviceId);
    });
    const broker = this.broker;
    this.blobs = new BlobServer({
      conn,
      // chunk frames straight into the embedded broker: no loopback MQTT hop for every byte of every blob
      ...(broker ? { publishFrame: (topic, frame, qos) => broker.publish(topic, frame, qos) } : {}),
      fleet: this.opts.fleet,
      store: this.opts.store,
      db: this.opts.db,
      privateKey: this.opts.privateKey,
      log,
      resolveImage: (name) => {
        const img = this.stores.images.get(name);
        return img ? { mediaType: img.mediaType, digest: img.digest, size: img.size } : undefined;
      },
      authorize:
        (this.opts.pullPolicy ?? 'any') === 'any'
          ? undefined
          : targetsAuthorizer({ store: this.opts.store, targetsFor: (id) => this.targetsOf(id) }),
      ...this.opts.blob,
    });
    await this.blobs.start();
    // revocations recorded by the local CLI (and broker steps that failed) are finished here, within seconds
    const finish = () => {
      this.services.enrollment
        .recover({ pendingOlderThanMs: 10 * 60_000 })
        .catch((err) => log.warn({ err: errorMessage(err) }, 'finishing revocations failed'))
        .finally(() => {
          if (!this.conn) return;
          this.accessTimer = setTimeout(finish, this.opts.accessCheckMs ?? 1000);
          this.accessTimer.unref?.();
        });
    };
    this.accessTimer = setTimeout(finish, this.opts.accessCheckMs ?? 1000);
    this.accessTimer.unref?.();
    const every = this.opts.pruneEveryMs ?? 10 * 60_000;
    const prune = () => {
      try {
        const now = (this.opts.now ?? Date.now)();
        const n = this.stores.events.prune(now) + this.stores.metrics.prune(now);
        if (n > 0) log.debug({ rows: n }, 'retention pruned events and metrics');
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'retention failed');
      }
      this.pruneTimer = setTimeout(prune, every);
      this.pruneTimer.unref?.();
    };
    prune();
    await this.services.rolloutDriver?.start();
  }

  /** What the broker retains of the fleet's targets: the embedded one's store, or asked over MQTT. */
  private async retainedTargets(conn: MqttConnection): Promise<RetainedTargets | undefined> {
    if (this.broker) return collect(await this.broker.retained(targetFilters(this.opts.fleet)));
    return readRetainedTargets(conn, this.opts.fleet, this.opts.log);
  }

  /** The account the fleet's own connections use on the embedded broker (after start). */
  get fleetAccount(): { username: string; password: string } | undefined {
    return this.account;
  }

  async stop(): Promise<void> {
    await this.services.rolloutDriver?.stop();
    if (this.pruneTimer) clearTimeout(this.pruneTimer);
    if (this.accessTimer) clearTimeout(this.accessTimer);
    this.unsubscribeBus?.();
    this.unsubscribeBus = undefined;
    this.blobs?.stop();
    this.ingest.stop();
    this.dynsec?.close();
    const conn = this.conn;
    this.conn = undefined;
    await conn?.close(true);
    await this.broker?.close();
  }

  /** The current targets a device follows: its own and those of the groups it reported. */
  private targetsOf(deviceId: string): Target[] {
    const groups = new Set(this.stores.devices.get(deviceId)?.groups ?? []);
    return this.stores.deployments
      .currentSigned()
      .map((s) => s.target)
      .filter((t) => (t.scope.kind === 'device' ? t.scope.id === deviceId : groups.has(t.scope.id)));
  }
}
