import type { KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  type AcquiredImage,
  type AcquireProgress,
  type DescribedImage,
  ImageAcquisition,
} from '../content/acquire.js';
import type { ContentStore } from '../content/store.js';
import { type Db, tx } from '../db/database.js';
import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { Digest } from '../oci/digest.js';
import { formatPlatform, type PlatformSpec } from '../oci/platform.js';
import { BlobFetcher, type BlobFetcherOptions } from '../transport/blob-fetcher.js';
import { verifyCommand } from '../transport/commands.js';
import { MqttConnection, type MqttConnectionOptions } from '../transport/connection.js';
import { FleetImageSource } from '../transport/fleet-source.js';
import {
  type CommandEnvelope,
  type CommandResultMessage,
  decodeJson,
  encodeJson,
  MAX_CONTROL_BYTES,
  MAX_TARGET_BYTES,
  SignedCommandSchema,
  type SignedTarget,
  SignedTargetSchema,
  type StatusMessage,
} from '../transport/messages.js';
import { keyId } from '../transport/signing.js';
import { verifyTarget } from '../transport/targets.js';
import { deviceTopic, groupTargetTopic, parseTopic } from '../transport/topics.js';

/**
 * The agent's link to its fleet: one MQTT connection carrying presence (retained `online`, and a
 * retained `offline` last will), signed targets for the device and its groups, and blob transfers.
 *
 * A target is accepted only if it parses, sits on the topic its scope names, verifies against the fleet
 * key provisioned at install, and has a higher version than the last one accepted for that scope
 * (`transport_targets`); anything else is logged and dropped without touching state. Accepted targets
 * are recorded, then emitted as `target` for the reconciler; `receivedTargets()` gives the latest per
 * scope at any time (e.g. after a restart without a broker).
 */
export interface AgentConnectionOptions {
  fleet: string;
  deviceId: string;
  groups: string[];
  platform: PlatformSpec;
  agentVersion: string;
  mqtt: Omit<MqttConnectionOptions, 'clientId' | 'will' | 'log'>;
  store: ContentStore;
  db: Db;
  publicKey: KeyObject;
  log: Logger;
  /** Defaults to berth-agent-<deviceId>; a second process for one device (berth pull) needs its own. */
  clientId?: string;
  /** Publish online/offline (default true; off for one-shot pulls that must not mark the device offline). */
  presence?: boolean;
  transfer?: Partial<
    Pick<
      BlobFetcherOptions,
      'window' | 'ackEvery' | 'requestTimeoutMs' | 'fanout' | 'fanoutMinChunks' | 'maxChunk'
    >
  >;
}

export interface PulledImage extends AcquiredImage {
  /** bytes this pull transferred (0 when everything was present) */
  fetchedBytes: number;
}

/** What a refused message claimed to be, when it parsed that far (unverified: for the report only). */
export interface RejectedTarget {
  what: 'target' | 'command';
  scope?: { kind: 'device' | 'group'; id: string } | undefined;
  version?: number | undefined;
}

export interface AgentConnectionEvents {
  target: [target: SignedTarget];
  /** a verified, unexpired command not seen before */
  command: [command: CommandEnvelope];
  rejected: [reason: string, topic: string, claimed: RejectedTarget];
}

export class AgentConnection extends EventEmitter<AgentConnectionEvents> {
  readonly conn: MqttConnection;
  readonly fetcher: BlobFetcher;
  private readonly source: FleetImageSource;
  private readonly images: ImageAcquisition;
  private readonly statusTopic: string;
  private agentUpdate: (() => StatusMessage['agentUpdate']) | undefined;
  private readonly targetTopics: Set<string>;
  private readonly commandTopic: string;
  private readonly onMessage = (topic: string, payload: Buffer) => {
    if (this.targetTopics.has(topic)) this.onTarget(topic, payload);
    else if (topic === this.commandTopic) this.onCommand(topic, payload);
  };
  private readonly onConnect = () => {
    if (this.opts.presence === false) return;
    this.publishStatus('online').catch((err) =>
      this.opts.log.warn({ err: errorMessage(err) }, 'status not sent'),
    );
  };

  constructor(private readonly opts: AgentConnectionOptions) {
    super();
    this.statusTopic = deviceTopic(opts.fleet, opts.deviceId, 'status');
    this.commandTopic = deviceTopic(opts.fleet, opts.deviceId, 'command');
    this.targetTopics = new Set([
      deviceTopic(opts.fleet, opts.deviceId, 'target'),
      ...opts.groups.map((g) => groupTargetTopic(opts.fleet, g)),
    ]);
    this.conn = new MqttConnection({
      ...opts.mqtt,
      clientId: opts.clientId ?? `berth-agent-${opts.deviceId}`,
      log: opts.log,
      will:
        opts.presence === false
          ? undefined
          : { topic: this.statusTopic, payload: encodeJson(this.status('offline')), qos: 1, retain: true },
    });
    this.fetcher = new BlobFetcher({
      conn: this.conn,
      fleet: opts.fleet,
      deviceId: opts.deviceId,
      store: opts.store,
      db: opts.db,
      publicKey: opts.publicKey,
      log: opts.log,
      ...(opts.mqtt.clock ? { clock: opts.mqtt.clock } : {}),
      ...opts.transfer,
    });
    this.source = new FleetImageSource(this.fetcher);
    this.images = new ImageAcquisition({ db: opts.db, store: opts.store, log: opts.log });
  }

  /** The groups this device follows, in priority order. */
  get groups(): readonly string[] {
    return this.opts.groups;
  }

  /**
   * Connect: resolves on the first CONNACK (Unavailable after `timeoutMs`, when given), or at once when
   * `waitForBroker` is false: then it keeps retrying in the background.
   */
  async start(waitForBroker = true, timeoutMs?: number): Promise<void> {
    this.conn.on('message', this.onMessage);
    this.conn.on('connect', this.onConnect);
    const started = this.conn.start(waitForBroker ? { timeoutMs } : {});
    await this.fetcher.start();
    for (const t of this.targetTopics) await this.conn.subscribe(t, 1);
    if (this.opts.presence !== false) await this.conn.subscribe(this.commandTopic, 1);
    if (waitForBroker) await started;
    else started.catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.fetcher.stop();
    if (this.conn.connected && this.opts.presence !== false) {
      await this.conn
        .publish(this.statusTopic, encodeJson(this.status('offline')), { qos: 1, retain: true })
        .catch(() => undefined);
    }
    await this.conn.close(true);
  }

  /** Where the agent's own update stands, sent with every status (`berth fleet devices` shows it). */
  setAgentUpdate(fn: () => StatusMessage['agentUpdate']): void {
    this.agentUpdate = fn;
  }

  /** Publish the status again (the agent update moved on); nothing when offline. */
  refreshStatus(): void {
    if (this.conn.connected) this.onConnect();
  }

  /**
   * Pull an image from the fleet into the device's content store and record it (src/content/acquire.ts:
   * the same checks and record as an import). `fetchedBytes`: bytes this pull transferred.
   */
  async pullImage(
    ref: string,
    opts: { expectDigest?: Digest; onProgress?: AcquireProgress } = {},
  ): Promise<PulledImage> {
    const before = this.fetcher.stats.receivedBytes;
    const r = await this.images.acquire(this.source, ref, {
      platform: this.opts.platform,
      expectDigest: opts.expectDigest,
      onProgress: opts.onProgress,
    });
    return { ...r, fetchedBytes: this.fetcher.stats.receivedBytes - before };
  }

  /**
   * Manifest and config of an image for this device's platform, without its layers (what the free-space
   * check needs). Offline, only what the store already holds can answer; anything else is Unavailable.
   */
  async describeImage(
    ref: string,
    opts: { expectDigest?: Digest } = {},
  ): Promise<DescribedImage & { fetchedBytes: number }> {
    const before = this.fetcher.stats.receivedBytes;
    const d = await this.images.describe(this.source, ref, {
      platform: this.opts.platform,
      expectDigest: opts.expectDigest,
      offline: !this.conn.connected,
    });
    return { ...d, fetchedBytes: this.fetcher.stats.receivedBytes - before };
  }

  waitOnline(timeoutMs: number): Promise<void> {
    return this.conn.waitConnected(timeoutMs);
  }

  /** The latest accepted target per scope. */
  receivedTargets(): SignedTarget[] {
    const rows = this.opts.db
      .prepare('SELECT signed_json FROM transport_targets ORDER BY scope_kind, scope_id')
      .all() as Array<{ signed_json: string }>;
    return rows.map((r) => SignedTargetSchema.parse(JSON.parse(r.signed_json)));
  }

  /** Answer a command on the device's `result` topic (QoS 1, not retained). */
  publishResult(result: CommandResultMessage): Promise<void> {
    return this.conn.publish(deviceTopic(this.opts.fleet, this.opts.deviceId, 'result'), encodeJson(result), {
      qos: 1,
      retain: false,
    });
  }

  private onCommand(topic: string, payload: Buffer): void {
    const msg = decodeJson(SignedCommandSchema, payload, MAX_CONTROL_BYTES);
    if (!msg.ok) {
      this.reject(topic, msg.reason, 'command');
      return;
    }
    const { command } = msg.value;
    if (command.fleet !== this.opts.fleet || command.deviceId !== this.opts.deviceId) {
      this.reject(
        topic,
        `command for ${command.fleet}/${command.deviceId} arrived on the wrong topic`,
        'command',
      );
      return;
    }
    const check = verifyCommand(msg.value, this.opts.publicKey);
    if (!check.ok) {
      this.reject(topic, check.reason, 'command');
      return;
    }
    const now = Date.now();
    const expires = Date.parse(command.expiresAt);
    if (!(expires > now)) {
      this.reject(topic, `command ${command.id} expired at ${command.expiresAt}`, 'command');
      return;
    }
    // run at most once per id, across restarts too: the id is kept (SQLite) until the command expires
    const db = this.opts.db;
    const fresh = tx(db, () => {
      db.prepare('DELETE FROM transport_commands WHERE expires_at <= ?').run(now);
      return (
        db
          .prepare('INSERT OR IGNORE INTO transport_commands (id, expires_at) VALUES (?, ?)')
          .run(command.id, expires).changes === 1
      );
    });
    if (!fresh) {
      this.reject(topic, `command ${command.id} was already run (replay)`, 'command');
      return;
    }
    this.opts.log.info({ id: command.id, kind: command.body.kind }, 'command accepted');
    this.emit('command', command);
  }

  private status(state: 'online' | 'offline'): StatusMessage {
    const versions = this.versions();
    const update = this.agentUpdate?.();
    return {
      v: 1,
      deviceId: this.opts.deviceId,
      state,
      at: new Date().toISOString(),
      platform: formatPlatform(this.opts.platform),
      agentVersion: this.opts.agentVersion,
      ...(update ? { agentUpdate: update } : {}),
      groups: this.opts.groups,
      keyId: keyId(this.opts.publicKey),
      ...(versions ? { target: versions } : {}),
    };
  }

  private versions(): { device?: number; group?: number } | undefined {
    try {
      const rows = this.opts.db
        .prepare('SELECT scope_kind, MAX(version) AS v FROM transport_targets GROUP BY scope_kind')
        .all() as Array<{
        scope_kind: 'device' | 'group';
        v: number;
      }>;
      const out: { device?: number; group?: number } = {};
      for (const r of rows) out[r.scope_kind] = r.v;
      return rows.length ? out : undefined;
    } catch {
      return undefined;
    }
  }

  private publishStatus(state: 'online' | 'offline'): Promise<void> {
    return this.conn.publish(this.statusTopic, encodeJson(this.status(state)), { qos: 1, retain: true });
  }

  private reject(
    topic: string,
    reason: string,
    what: 'target' | 'command' = 'target',
    claimed: Omit<RejectedTarget, 'what'> = {},
  ): void {
    this.opts.log.warn({ topic, reason }, `rejected ${what}`);
    this.emit('rejected', reason, topic, { what, ...claimed });
  }

  private onTarget(topic: string, payload: Buffer): void {
    if (payload.length === 0) return; // a cleared retained target
    const t = parseTopic(topic);
    const topicScope =
      t?.kind === 'device'
        ? { kind: 'device' as const, id: t.deviceId }
        : t?.kind === 'group-target'
          ? { kind: 'group' as const, id: t.group }
          : undefined;
    const msg = decodeJson(SignedTargetSchema, payload, MAX_TARGET_BYTES);
    if (!msg.ok) {
      this.reject(topic, msg.reason, 'target', { scope: topicScope });
      return;
    }
    const signed = msg.value;
    const { scope, fleet, version } = signed.target;
    if (
      !topicScope ||
      fleet !== this.opts.fleet ||
      topicScope.kind !== scope.kind ||
      topicScope.id !== scope.id
    ) {
      this.reject(
        topic,
        `target for ${fleet}/${scope.kind}/${scope.id} arrived on the wrong topic`,
        'target',
        {
          scope: topicScope,
        },
      );
      return;
    }
    const check = verifyTarget(signed, this.opts.publicKey);
    if (!check.ok) {
      this.reject(topic, check.reason, 'target', { scope, version });
      return;
    }
    const db = this.opts.db;
    const accepted = tx(db, () => {
      const row = db
        .prepare('SELECT version, signed_json FROM transport_targets WHERE scope_kind = ? AND scope_id = ?')
        .get(scope.kind, scope.id) as { version: number; signed_json: string } | undefined;
      if (row && version <= row.version) {
        // The retained copy of the target we already hold comes back on every reconnect: not a replay.
        return row.version === version && row.signed_json === JSON.stringify(signed)
          ? 'same'
          : `replay: version ${version} is not newer than ${row.version}`;
      }
      db.prepare(
        `INSERT OR REPLACE INTO transport_targets (scope_kind, scope_id, version, signed_json, received_at) VALUES (?, ?, ?, ?, ?)`,
      ).run(scope.kind, scope.id, version, JSON.stringify(signed), Date.now());
      return 'new';
    });
    if (accepted === 'same') return;
    if (accepted !== 'new') {
      this.reject(topic, accepted, 'target', { scope, version });
      return;
    }
    this.opts.log.info({ scope: `${scope.kind}/${scope.id}`, version }, 'target accepted');
    this.emit('target', signed);
    this.onConnect();
  }
}
