import type { KeyObject } from 'node:crypto';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { ContentStore } from '../content/store.js';
import type { Db } from '../db/database.js';
import { errorMessage, invalidInput, isBerthError, notFound } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { Digest } from '../oci/digest.js';
import type { MqttConnection } from './connection.js';
import { encodeFrame, FRAME_HEADER_SIZE, FrameType } from './frames.js';
import {
  type BlobRequest,
  decodeJson,
  encodeJson,
  MAX_CONTROL_BYTES,
  type Reply,
  RequestSchema,
} from './messages.js';
import {
  type ChunkPlan,
  chunkCount,
  chunkRange,
  chunkSizeFor,
  MAX_CHUNK,
  MIN_CHUNK,
  planChunkHash,
  planSigningBytes,
} from './plan.js';
import { RateLimiter, Semaphore } from './semaphore.js';
import { keyId, signBytes } from './signing.js';
import { deviceTopic, fanoutTopic, parseTopic, serverRequestFilter } from './topics.js';

/**
 * The fleet side of blob transfer. Stateless toward devices: every request names the blob and the chunks
 * it wants, so any fleet server sharing `$share/berth-fleet/…/devices/+/req` can answer any request and
 * a server restart loses nothing but in-flight chunks (which devices re-request). The only state is
 * soft: chunk plans cached in SQLite (derived from blobs) and fan-out gathering windows in memory.
 *
 * Requests: `resolve` (image name → top-level descriptor), `plan` (signed per-chunk hashes), `chunks`
 * (unicast frames on the device's chunks topic), `want` (interest in a blob; several wanters within
 * `gatherMs` get one stream on the blob's fan-out topic instead of N unicast copies).
 */
export type ImageResolver = (name: string) => { mediaType: string; digest: Digest; size: number } | undefined;

export interface BlobServerOptions {
  conn: MqttConnection;
  fleet: string;
  store: ContentStore;
  db: Db;
  privateKey: KeyObject;
  resolveImage: ImageResolver;
  log: Logger;
  /** How long to collect `want`s for one blob before deciding stream vs unicast (default 150 ms). */
  gatherMs?: number;
  /** Chunk frames alive at once (default 32): bounds memory whatever the blob sizes. */
  maxInflight?: number;
  /** Cap on egress in bytes per second (0 = none). */
  rateLimit?: number;
}

interface OpenBlob {
  fh: FileHandle;
  size: number;
  users: number;
  timer: NodeJS.Timeout | undefined;
}

interface FanoutState {
  chunkSize: number;
  wanters: Map<string, string>; // deviceId → reqId
  streaming: boolean;
  /** Carousel: chunks still to send, and the next index (wraps to 0 at the end). */
  count: number;
  remaining: number;
  pos: number;
  sent: number;
}

export interface BlobServerStats {
  /** Frame bytes handed to the MQTT client (including those a broker restart then lost). */
  attemptedBytes: number;
  /** Frame bytes the broker acknowledged, per kind. */
  unicastBytes: number;
  streamBytes: number;
  chunksServed: number;
  streams: number;
  rejected: number;
}

export class BlobServer {
  readonly stats: BlobServerStats = {
    attemptedBytes: 0,
    unicastBytes: 0,
    streamBytes: 0,
    chunksServed: 0,
    streams: 0,
    rejected: 0,
  };
  private readonly sem: Semaphore;
  private readonly limiter: RateLimiter;
  private readonly plans = new Map<string, Promise<ChunkPlan & { sig: Buffer }>>();
  private readonly plansDone = new Map<string, ChunkPlan>();
  private readonly handles = new Map<Digest, OpenBlob>();
  private readonly fanouts = new Map<Digest, FanoutState>();
  private readonly keyId: string;
  private readonly onMessage = (topic: string, payload: Buffer) => {
    this.handle(topic, payload).catch((err) =>
      this.opts.log.error({ err: errorMessage(err) }, 'blob request failed'),
    );
  };

  constructor(private readonly opts: BlobServerOptions) {
    this.sem = new Semaphore(opts.maxInflight ?? 32);
    this.limiter = new RateLimiter(opts.rateLimit ?? 0);
    this.keyId = keyId(opts.privateKey);
  }

  async start(): Promise<void> {
    this.opts.conn.on('message', this.onMessage);
    await this.opts.conn.subscribe(
      serverRequestFilter(this.opts.fleet, this.opts.conn.protocolVersion === 5),
      1,
    );
  }

  stop(): void {
    this.opts.conn.off('message', this.onMessage);
    for (const b of this.handles.values()) {
      if (b.timer) clearTimeout(b.timer);
      b.fh.close().catch(() => undefined);
    }
    this.handles.clear();
  }

  get egressBytes(): number {
    return this.stats.unicastBytes + this.stats.streamBytes;
  }

  private async handle(topic: string, payload: Buffer): Promise<void> {
    const t = parseTopic(topic);
    if (t?.kind !== 'device' || t.channel !== 'req' || t.fleet !== this.opts.fleet) return;
    const msg = decodeJson(RequestSchema, payload, MAX_CONTROL_BYTES);
    if (!msg.ok) {
      this.stats.rejected++;
      this.opts.log.warn({ topic, reason: msg.reason }, 'rejected blob request');
      return;
    }
    const req = msg.value;
    try {
      await this.serve(t.deviceId, req);
    } catch (err) {
      const code = isBerthError(err) ? err.code : 'Internal';
      this.opts.log.warn(
        { device: t.deviceId, kind: req.kind, err: errorMessage(err) },
        'blob request refused',
      );
      await this.reply(t.deviceId, {
        v: 1,
        kind: 'error',
        reqId: req.reqId,
        code,
        message: errorMessage(err).slice(0, 1000),
      }).catch(() => undefined);
    }
  }

  private async serve(deviceId: string, req: BlobRequest): Promise<void> {
    switch (req.kind) {
      case 'resolve': {
        const d = this.opts.resolveImage(req.name);
        if (!d) throw notFound(`image ${req.name} is not in the fleet`);
        await this.reply(deviceId, {
          v: 1,
          kind: 'resolved',
          reqId: req.reqId,
          name: req.name,
          descriptor: d,
        });
        return;
      }
      case 'plan': {
        const chunkSize = Math.min(chunkSizeFor(this.opts.conn.maxPacket), floorPow2(req.maxChunk));
        if (chunkSize < MIN_CHUNK) throw invalidInput(`maxChunk ${req.maxChunk} is below ${MIN_CHUNK}`);
        const plan = await this.planFor(req.digest, chunkSize);
        await this.reply(deviceId, {
          v: 1,
          kind: 'plan',
          reqId: req.reqId,
          digest: plan.digest,
          size: plan.size,
          chunkSize: plan.chunkSize,
          hashes: plan.hashes.toString('base64'),
          keyId: this.keyId,
          sig: plan.sig.toString('base64'),
        });
        return;
      }
      case 'chunks': {
        if (req.chunkSize < MIN_CHUNK || req.chunkSize > MAX_CHUNK)
          throw invalidInput(`chunk size ${req.chunkSize} out of range for ${req.digest}`);
        await this.sendChunks(
          req.digest,
          req.chunkSize,
          req.indexes,
          deviceTopic(this.opts.fleet, deviceId, 'chunks'),
          1,
        );
        return;
      }
      case 'want':
        await this.want(deviceId, req.reqId, req.digest, req.chunkSize);
        return;
    }
  }

  private reply(deviceId: string, r: Reply): Promise<void> {
    return this.opts.conn.publish(deviceTopic(this.opts.fleet, deviceId, 'reply'), encodeJson(r), { qos: 1 });
  }

  /** An open handle on a blob, shared by requests and closed after a quiet spell. */
  private async openBlob(digest: Digest): Promise<OpenBlob> {
    let b = this.handles.get(digest);
    if (!b) {
      const info = await this.opts.store.info(digest);
      const fh = await fsp.open(this.opts.store.blobPath(digest), 'r');
      const opened: OpenBlob = { fh, size: info.size, users: 0, timer: undefined };
      // Another request may have opened it meanwhile.
      b = this.handles.get(digest);
      if (b) await fh.close();
      else {
        b = opened;
        this.handles.set(digest, b);
      }
    }
    b.users++;
    if (b.timer) clearTimeout(b.timer);
    b.timer = undefined;
    return b;
  }

  private releaseBlob(digest: Digest, b: OpenBlob): void {
    if (--b.users > 0) return;
    b.timer = setTimeout(() => {
      if (b.users === 0 && this.handles.get(digest) === b) {
        this.handles.delete(digest);
        b.fh.close().catch(() => undefined);
      }
    }, 5000);
    b.timer.unref?.();
  }

  /** Read chunks and publish them as frames, at most `maxInflight` buffers alive across all requests. */
  private async sendChunks(
    digest: Digest,
    chunkSize: number,
    indexes: readonly number[],
    topic: string,
    qos: 0 | 1,
    isStream = false,
  ): Promise<void> {
    const blob = await this.openBlob(digest);
    const size = blob.size;
    // The plan already holds every chunk's hash: frames need not hash their payload again.
    const plan = this.plansDone.get(`${digest}/${chunkSize}`);
    const pending: Promise<void>[] = [];
    try {
      for (const index of indexes) {
        const { offset, length } = chunkRange(size, chunkSize, index);
        if (length <= 0) throw invalidInput(`chunk ${index} is beyond the end of ${digest}`);
        await this.sem.acquire();
        let released = false;
        const release = () => {
          if (!released) {
            released = true;
            this.sem.release();
          }
        };
        try {
          const payload = Buffer.allocUnsafe(length);
          const { bytesRead } = await blob.fh.read(payload, 0, length, offset);
          if (bytesRead !== length) throw new Error(`short read of ${digest} at ${offset}`);
          await this.limiter.take(length + FRAME_HEADER_SIZE);
          const frame = encodeFrame(
            { type: FrameType.Chunk, digest, offset, index, chunkSize, payload },
            plan ? planChunkHash(plan, index) : undefined,
          );
          if (this.opts.conn.connected) this.stats.attemptedBytes += frame.length;
          pending.push(
            this.opts.conn
              .publish(topic, frame, { qos })
              .then(() => {
                // Counted once the broker took it (QoS 1: PUBACK): egress, not attempts.
                if (isStream) this.stats.streamBytes += frame.length;
                else this.stats.unicastBytes += frame.length;
                this.stats.chunksServed++;
              })
              .finally(release),
          );
        } catch (err) {
          release();
          throw err;
        }
      }
      await Promise.all(pending);
    } finally {
      await Promise.allSettled(pending);
      this.releaseBlob(digest, blob);
    }
  }

  private async want(deviceId: string, reqId: string, digest: Digest, chunkSize: number): Promise<void> {
    const existing = this.fanouts.get(digest);
    if (existing && existing.chunkSize === chunkSize) {
      if (existing.streaming) {
        // A late joiner: the carousel runs one full turn from here (it wraps past the end to where
        // this device joined), unless the stream has already turned three times: then unicast.
        if (existing.sent + existing.count > 3 * existing.count) {
          await this.reply(deviceId, { v: 1, kind: 'fanout', reqId, digest, mode: 'unicast' });
          return;
        }
        existing.remaining = existing.count;
        existing.wanters.set(deviceId, reqId);
        await this.reply(deviceId, { v: 1, kind: 'fanout', reqId, digest, mode: 'stream' });
        return;
      }
      existing.wanters.set(deviceId, reqId);
      return;
    }
    if (existing) {
      // Another chunk geometry is being gathered or streamed: this device goes unicast.
      await this.reply(deviceId, { v: 1, kind: 'fanout', reqId, digest, mode: 'unicast' });
      return;
    }
    // State first, synchronously: wants arriving while this one awaits must find it.
    const state: FanoutState = {
      chunkSize,
      wanters: new Map([[deviceId, reqId]]),
      streaming: false,
      count: 0,
      remaining: 0,
      pos: 0,
      sent: 0,
    };
    this.fanouts.set(digest, state);
    setTimeout(() => {
      this.decideFanout(digest, state).catch((err) => {
        this.fanouts.delete(digest);
        this.opts.log.error({ digest, err: errorMessage(err) }, 'fan-out stream failed');
      });
    }, this.opts.gatherMs ?? 150);
  }

  private async decideFanout(digest: Digest, state: FanoutState): Promise<void> {
    if (state.wanters.size < 2) {
      this.fanouts.delete(digest);
      for (const [dev, reqId] of state.wanters)
        await this.reply(dev, { v: 1, kind: 'fanout', reqId, digest, mode: 'unicast' }).catch(
          () => undefined,
        );
      return;
    }
    const { size } = await this.opts.store.info(digest);
    state.count = chunkCount(size, state.chunkSize);
    state.remaining = state.count;
    state.streaming = true;
    this.stats.streams++;
    this.opts.log.info({ digest, devices: state.wanters.size }, 'fan-out stream start');
    try {
      await Promise.all(
        [...state.wanters].map(([dev, reqId]) =>
          this.reply(dev, { v: 1, kind: 'fanout', reqId, digest, mode: 'stream' }).catch(() => undefined),
        ),
      );
      const topic = fanoutTopic(this.opts.fleet, digest);
      const count = state.count;
      while (state.remaining > 0) {
        const batch: number[] = [];
        while (batch.length < 16 && state.remaining > 0) {
          batch.push(state.pos);
          state.pos = (state.pos + 1) % count;
          state.remaining--;
          state.sent++;
        }
        await this.sendChunks(digest, state.chunkSize, batch, topic, 1, true);
      }
      const end = encodeFrame({
        type: FrameType.StreamEnd,
        digest,
        offset: size,
        index: count,
        chunkSize: state.chunkSize,
        payload: Buffer.alloc(0),
      });
      await this.opts.conn.publish(topic, end, { qos: 1 });
    } finally {
      this.fanouts.delete(digest);
      this.opts.log.info({ digest }, 'fan-out stream end');
    }
  }

  /** The signed chunk plan of a blob, from the cache or computed by one streaming pass over the blob. */
  planFor(digest: Digest, chunkSize: number): Promise<ChunkPlan & { sig: Buffer }> {
    const key = `${digest}/${chunkSize}`;
    let p = this.plans.get(key);
    if (!p) {
      p = this.computePlan(digest, chunkSize);
      this.plans.set(key, p);
      p.then(
        (plan) => {
          this.plansDone.set(key, plan);
          if (this.plansDone.size > 256) this.plansDone.delete(this.plansDone.keys().next().value!);
        },
        () => this.plans.delete(key),
      );
      if (this.plans.size > 256) this.plans.delete(this.plans.keys().next().value!);
    }
    return p;
  }

  private async computePlan(digest: Digest, chunkSize: number): Promise<ChunkPlan & { sig: Buffer }> {
    const info = await this.opts.store.info(digest);
    const row = this.opts.db
      .prepare(
        'SELECT size, hashes, sig FROM fleet_chunk_plans WHERE digest = ? AND chunk_size = ? AND key_id = ?',
      )
      .get(digest, chunkSize, this.keyId) as { size: number; hashes: Buffer; sig: Buffer } | undefined;
    if (row && row.size === info.size)
      return { digest, size: row.size, chunkSize, hashes: row.hashes, sig: row.sig };
    const hashes: Buffer[] = [];
    let h = createHash('sha256');
    let filled = 0;
    for await (const buf of createReadStream(this.opts.store.blobPath(digest), {
      highWaterMark: chunkSize,
    })) {
      let b = buf as Buffer;
      while (b.length > 0) {
        const take = Math.min(b.length, chunkSize - filled);
        h.update(b.subarray(0, take));
        filled += take;
        b = b.subarray(take);
        if (filled === chunkSize) {
          hashes.push(h.digest());
          h = createHash('sha256');
          filled = 0;
        }
      }
    }
    if (filled > 0) hashes.push(h.digest());
    const plan: ChunkPlan = { digest, size: info.size, chunkSize, hashes: Buffer.concat(hashes) };
    const sig = signBytes(this.opts.privateKey, planSigningBytes(plan));
    this.opts.db
      .prepare(
        'INSERT OR REPLACE INTO fleet_chunk_plans (digest, chunk_size, size, hashes, key_id, sig) VALUES (?, ?, ?, ?, ?, ?)',
      )
      .run(digest, chunkSize, plan.size, plan.hashes, this.keyId, sig);
    return { ...plan, sig };
  }
}

function floorPow2(n: number): number {
  return 2 ** Math.floor(Math.log2(n));
}
