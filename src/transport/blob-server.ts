import type { KeyObject } from 'node:crypto';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { ContentStore } from '../content/store.js';
import type { Db } from '../db/database.js';
import { type Clock, systemClock, type TimerHandle } from '../lib/clock.js';
import { BerthError, corrupt, errorMessage, invalidInput, isBerthError, notFound } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { Digest } from '../oci/digest.js';
import type { MqttConnection } from './connection.js';
import { encodeFrame, FRAME_HEADER_SIZE, FrameType, writeFrameHeader } from './frames.js';
import {
  type BlobRequest,
  type DescriptorRef,
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
  isValidChunkSize,
  MIN_CHUNK,
  planChunkHash,
  planSigningBytes,
} from './plan.js';
import { signResolved } from './resolved.js';
import { RateLimiter, Semaphore } from './semaphore.js';
import { keyId, signBytes } from './signing.js';
import { deviceTopic, fanoutTopic, parseTopic, serverRequestFilter } from './topics.js';

/**
 * The fleet side of blob transfer. Stateless toward transfers: every request names the blob and the
 * chunks it grants, so any fleet server sharing `$share/berth-fleet/…/devices/+/req` can honour any
 * request and a server restart loses nothing but chunks in flight (which devices grant again). Its state
 * is soft: chunk plans cached in SQLite (derived from blobs), fan-out windows, and the send queue.
 *
 * Requests: `resolve` (image name → top-level descriptor; signed for the device and the request when
 * asked with v2), `plan` (signed per-chunk hashes), `credit` (chunk ranges the device grants; v1
 * `chunks` index lists from older agents land in the same queue), `want` (interest in a blob: a second
 * device wanting it makes one stream on the blob's fan-out topic instead of N unicast copies).
 *
 * The send queue is what keeps one blob service from being turned against the fleet: a queue per
 * device, bounded (per device and overall), duplicate grants merged, grants older than `maxQueueAgeMs`
 * dropped (a live device grants again after its own timeout; a dead one does not), a device's queue
 * dropped at once when its retained status says offline (`deviceGone`), and the queues served round
 * robin under one rate limit, so every device — and every fan-out stream — gets its share whatever the
 * others asked for. Devices are only answered for what `authorize` allows them (the fleet server allows
 * what the targets of the device and its groups name); everything else is refused or dropped.
 */
export type ImageResolver = (name: string) => DescriptorRef | undefined;

/** What a device asks the blob service for: an image by name, or a blob by digest. */
export type BlobAccess = { kind: 'image'; name: string } | { kind: 'blob'; digest: Digest };
/** The fleet's decision whether `deviceId` may have `what`. */
export type BlobAuthorizer = (deviceId: string, what: BlobAccess) => boolean | Promise<boolean>;

export interface BlobServerOptions {
  conn: MqttConnection;
  /**
   * Where chunk and stream-end frames go (default: published on `conn`). A fleet hosting its broker hands
   * them to the broker directly (EmbeddedBroker.publish). Must resolve only once the frame's buffer is no
   * longer referenced (it is reused for the next chunk).
   */
  publishFrame?: ((topic: string, frame: Buffer, qos: 0 | 1) => Promise<void>) | undefined;
  fleet: string;
  store: ContentStore;
  db: Db;
  privateKey: KeyObject;
  resolveImage: ImageResolver;
  log: Logger;
  /** May this device have this image or blob? (default: anything the fleet holds) */
  authorize?: BlobAuthorizer | undefined;
  /** How long a second `want` for a blob waits for more before its stream starts (default 150 ms). */
  gatherMs?: number;
  /** Chunk frames alive at once (default 32): bounds memory whatever the blob sizes. */
  maxInflight?: number;
  /** Cap on egress in bytes per second (0 = none), shared fairly between devices and streams. */
  rateLimit?: number;
  /** Chunks queued per device (default 128) and overall (default 4096); more are dropped. */
  maxQueuedPerDevice?: number;
  maxQueued?: number;
  /** A queued chunk older than this is dropped unsent (default 10 s). */
  maxQueueAgeMs?: number;
  clock?: Clock;
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
  /** Queued chunks dropped unsent, by why. */
  dropped: { stale: number; full: number; gone: number; unauthorized: number; streamed: number };
  /** Requests refused by `authorize`. */
  denied: number;
}

interface OpenBlob {
  fh: FileHandle;
  size: number;
  users: number;
  timer: TimerHandle | undefined;
}

interface Job {
  digest: Digest;
  chunkSize: number;
  index: number;
  /** when the newest grant for this chunk arrived */
  at: number;
  key: string;
}

interface Send {
  digest: Digest;
  chunkSize: number;
  index: number;
  topic: string;
  kind: 'unicast' | 'stream';
  done?: () => void;
}

/** A device's queue: FIFO of granted chunks, merged by chunk. */
class DeviceQueue {
  readonly jobs: Job[] = [];
  head = 0;
  readonly byKey = new Map<string, Job>();
  inRing = false;
  constructor(readonly deviceId: string) {}
  get size(): number {
    return this.jobs.length - this.head;
  }
  shift(): Job | undefined {
    if (this.head >= this.jobs.length) return undefined;
    const j = this.jobs[this.head++]!;
    this.byKey.delete(j.key);
    if (this.head > 1024 && this.head * 2 > this.jobs.length) {
      this.jobs.splice(0, this.head);
      this.head = 0;
    }
    return j;
  }
}

interface FanoutState {
  digest: Digest;
  chunkSize: number;
  phase: 'solo' | 'gathering' | 'streaming';
  wanters: Map<string, string>; // deviceId → reqId of its want
  timer: TimerHandle | undefined;
  gatherStart: number;
  /** Carousel: chunks still to send, the next index (wraps to 0 at the end), sent so far. */
  count: number;
  remaining: number;
  pos: number;
  sent: number;
  inflight: number;
  source: StreamSource | undefined;
}

class StreamSource {
  inRing = false;
  constructor(
    readonly state: FanoutState,
    readonly topic: string,
  ) {}
  get size(): number {
    return this.state.remaining;
  }
}

type Source = DeviceQueue | StreamSource;

export class BlobServer {
  readonly stats: BlobServerStats = {
    attemptedBytes: 0,
    unicastBytes: 0,
    streamBytes: 0,
    chunksServed: 0,
    streams: 0,
    rejected: 0,
    dropped: { stale: 0, full: 0, gone: 0, unauthorized: 0, streamed: 0 },
    denied: 0,
  };
  private readonly sem: Semaphore;
  private readonly limiter: RateLimiter;
  private readonly clock: Clock;
  private readonly plans = new Map<string, Promise<ChunkPlan & { sig: Buffer }>>();
  private readonly handles = new Map<Digest, OpenBlob>();
  private readonly fanouts = new Map<Digest, FanoutState>();
  private readonly queues = new Map<string, DeviceQueue>();
  private readonly ring: Source[] = [];
  private rr = 0;
  private queued = 0;
  private driving = false;
  private stopped = false;
  private readonly pool = new Map<number, Buffer[]>();
  private readonly authCache = new Map<string, { ok: boolean; until: number }>();
  private readonly keyId: string;
  private readonly perDevice: number;
  private readonly maxQueued: number;
  private readonly maxAgeMs: number;
  private readonly maxInflight: number;
  private readonly onMessage = (topic: string, payload: Buffer) => {
    this.handle(topic, payload).catch((err) =>
      this.opts.log.error({ err: errorMessage(err) }, 'blob request failed'),
    );
  };

  constructor(private readonly opts: BlobServerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.maxInflight = opts.maxInflight ?? 32;
    this.sem = new Semaphore(this.maxInflight);
    this.limiter = new RateLimiter(opts.rateLimit ?? 0, this.clock);
    this.keyId = keyId(opts.privateKey);
    this.perDevice = opts.maxQueuedPerDevice ?? 128;
    this.maxQueued = opts.maxQueued ?? 4096;
    this.maxAgeMs = opts.maxQueueAgeMs ?? 10_000;
  }

  async start(): Promise<void> {
    this.opts.conn.on('message', this.onMessage);
    await this.opts.conn.subscribe(
      serverRequestFilter(this.opts.fleet, this.opts.conn.protocolVersion === 5),
      1,
    );
  }

  stop(): void {
    this.stopped = true;
    this.opts.conn.off('message', this.onMessage);
    for (const b of this.handles.values()) {
      if (b.timer) this.clock.clearTimeout(b.timer);
      b.fh.close().catch(() => undefined);
    }
    this.handles.clear();
    for (const f of this.fanouts.values()) if (f.timer) this.clock.clearTimeout(f.timer);
    this.fanouts.clear();
    this.queues.clear();
    this.ring.length = 0;
    this.queued = 0;
  }

  get egressBytes(): number {
    return this.stats.unicastBytes + this.stats.streamBytes;
  }

  /** Chunks waiting to be sent (all devices). */
  get queuedChunks(): number {
    return this.queued;
  }

  /**
   * The device is gone (its retained status or last will says offline): drop what it queued. A device
   * that comes back grants again.
   */
  deviceGone(deviceId: string): void {
    const q = this.queues.get(deviceId);
    if (!q) return;
    this.stats.dropped.gone += q.size;
    this.queued -= q.size;
    this.queues.delete(deviceId);
    const at = this.ring.indexOf(q);
    if (at >= 0) {
      this.ring.splice(at, 1);
      if (this.rr > at) this.rr--;
    }
    q.inRing = false;
  }

  private async handle(topic: string, payload: Buffer): Promise<void> {
    if (this.stopped) return;
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

  /** `authorize`, remembered for a few seconds (credit grants come many times a second). */
  private async allowed(deviceId: string, what: BlobAccess): Promise<boolean> {
    const auth = this.opts.authorize;
    if (!auth) return true;
    const key = `${deviceId}\0${what.kind === 'image' ? what.name : what.digest}`;
    const now = this.clock.now();
    const hit = this.authCache.get(key);
    if (hit && hit.until > now) return hit.ok;
    let ok = false;
    try {
      ok = (await auth(deviceId, what)) === true;
    } catch (err) {
      this.opts.log.warn({ device: deviceId, err: errorMessage(err) }, 'blob authorization failed');
    }
    if (this.authCache.size > 10_000) this.authCache.clear();
    // A refusal is remembered only briefly: a deployment may be recorded just after its target arrived.
    this.authCache.set(key, { ok, until: now + (ok ? 10_000 : 1000) });
    return ok;
  }

  private async mustAllow(deviceId: string, what: BlobAccess): Promise<void> {
    if (await this.allowed(deviceId, what)) return;
    this.stats.denied++;
    const name = what.kind === 'image' ? `image ${what.name}` : `blob ${what.digest}`;
    throw new BerthError(
      'PermissionDenied',
      `${name} is not named by any target of device ${deviceId} (the fleet serves a device what its targets name)`,
    );
  }

  private async serve(deviceId: string, req: BlobRequest): Promise<void> {
    switch (req.kind) {
      case 'resolve': {
        await this.mustAllow(deviceId, { kind: 'image', name: req.name });
        const d = this.opts.resolveImage(req.name);
        if (!d) throw notFound(`image ${req.name} is not in the fleet`);
        const descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
        const r: Reply =
          req.v === 2
            ? signResolved(
                { fleet: this.opts.fleet, deviceId, reqId: req.reqId, name: req.name, descriptor },
                this.opts.privateKey,
              )
            : { v: 1, kind: 'resolved', reqId: req.reqId, name: req.name, descriptor };
        await this.reply(deviceId, r);
        return;
      }
      case 'plan': {
        await this.mustAllow(deviceId, { kind: 'blob', digest: req.digest });
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
      case 'credit':
      case 'chunks': {
        if (!isValidChunkSize(req.chunkSize))
          throw invalidInput(`chunk size ${req.chunkSize} out of range for ${req.digest}`);
        if (!(await this.allowed(deviceId, { kind: 'blob', digest: req.digest }))) {
          this.stats.denied++;
          this.stats.dropped.unauthorized +=
            req.kind === 'chunks' ? req.indexes.length : req.ranges.reduce((n, [, c]) => n + c, 0);
          this.opts.log.debug({ device: deviceId, digest: req.digest }, 'chunks refused: not authorized');
          return;
        }
        const indexes: number[] = [];
        if (req.kind === 'chunks') indexes.push(...req.indexes);
        else
          for (const [first, n] of req.ranges)
            for (let i = first; i < first + n && indexes.length <= this.perDevice; i++) indexes.push(i);
        this.enqueue(deviceId, req.digest, req.chunkSize, indexes);
        return;
      }
      case 'want':
        await this.mustAllow(deviceId, { kind: 'blob', digest: req.digest });
        await this.want(deviceId, req.reqId, req.digest, req.chunkSize);
        return;
    }
  }

  private reply(deviceId: string, r: Reply): Promise<void> {
    return this.opts.conn.publish(deviceTopic(this.opts.fleet, deviceId, 'reply'), encodeJson(r), { qos: 1 });
  }

  // ---- the send queue ------------------------------------------------------------------------------

  private enqueue(deviceId: string, digest: Digest, chunkSize: number, indexes: readonly number[]): void {
    const now = this.clock.now();
    let q = this.queues.get(deviceId);
    if (!q) {
      q = new DeviceQueue(deviceId);
      this.queues.set(deviceId, q);
    }
    for (const index of indexes) {
      const key = `${digest}/${chunkSize}/${index}`;
      const same = q.byKey.get(key);
      if (same) {
        same.at = now; // granted again: still wanted
        continue;
      }
      if (q.size >= this.perDevice || this.queued >= this.maxQueued) {
        this.stats.dropped.full++;
        continue;
      }
      const job: Job = { digest, chunkSize, index, at: now, key };
      q.jobs.push(job);
      q.byKey.set(key, job);
      this.queued++;
    }
    if (q.size === 0) {
      this.queues.delete(deviceId);
      return;
    }
    this.addToRing(q);
    void this.drive();
  }

  private addToRing(s: Source): void {
    if (s.inRing) return;
    s.inRing = true;
    this.ring.push(s);
  }

  /** The next chunk to send: one from each source in turn (round robin). */
  private pick(): Send | undefined {
    const now = this.clock.now();
    while (this.ring.length > 0) {
      if (this.rr >= this.ring.length) this.rr = 0;
      const src = this.ring[this.rr]!;
      const s = src instanceof DeviceQueue ? this.nextOfDevice(src, now) : this.nextOfStream(src);
      if (s) {
        this.rr++;
        return s;
      }
      this.ring.splice(this.rr, 1);
      src.inRing = false;
      if (src instanceof DeviceQueue && src.size === 0 && this.queues.get(src.deviceId) === src)
        this.queues.delete(src.deviceId);
    }
    return undefined;
  }

  private nextOfDevice(q: DeviceQueue, now: number): Send | undefined {
    for (let job = q.shift(); job; job = q.shift()) {
      this.queued--;
      if (now - job.at > this.maxAgeMs) {
        this.stats.dropped.stale++;
        continue;
      }
      const f = this.fanouts.get(job.digest);
      if (f && f.phase !== 'solo' && f.wanters.has(q.deviceId)) {
        // It takes (or is about to take) this blob from the stream.
        this.stats.dropped.streamed++;
        continue;
      }
      return {
        digest: job.digest,
        chunkSize: job.chunkSize,
        index: job.index,
        topic: deviceTopic(this.opts.fleet, q.deviceId, 'chunks'),
        kind: 'unicast',
      };
    }
    return undefined;
  }

  private nextOfStream(s: StreamSource): Send | undefined {
    const f = s.state;
    if (f.remaining <= 0 || this.fanouts.get(f.digest) !== f) return undefined;
    const index = f.pos;
    f.pos = (f.pos + 1) % f.count;
    f.remaining--;
    f.sent++;
    f.inflight++;
    return {
      digest: f.digest,
      chunkSize: f.chunkSize,
      index,
      topic: s.topic,
      kind: 'stream',
      done: () => {
        f.inflight--;
        if (f.remaining <= 0 && f.inflight === 0) void this.endStream(f);
      },
    };
  }

  /** Send queued chunks while frames may be in flight; one driver at a time. */
  private async drive(): Promise<void> {
    if (this.driving) return;
    this.driving = true;
    try {
      while (!this.stopped) {
        await this.sem.acquire();
        const s = this.pick();
        if (!s) {
          this.sem.release();
          break;
        }
        await this.limiter.take(s.chunkSize + FRAME_HEADER_SIZE);
        void this.send(s);
      }
    } finally {
      this.driving = false;
    }
  }

  private frameBuffer(chunkSize: number): Buffer {
    return this.pool.get(chunkSize)?.pop() ?? Buffer.allocUnsafe(chunkSize + FRAME_HEADER_SIZE);
  }

  private recycle(chunkSize: number, buf: Buffer): void {
    let list = this.pool.get(chunkSize);
    if (!list) {
      list = [];
      this.pool.set(chunkSize, list);
    }
    if (list.length < this.maxInflight) list.push(buf);
  }

  /** Read one chunk straight into a (pooled) frame buffer and publish it; releases its slot when done. */
  private async send(s: Send): Promise<void> {
    let blob: OpenBlob | undefined;
    let buf: Buffer | undefined;
    let published = false;
    try {
      const plan = await this.planFor(s.digest, s.chunkSize);
      blob = await this.openBlob(s.digest);
      const { offset, length } = chunkRange(blob.size, s.chunkSize, s.index);
      if (length <= 0) throw invalidInput(`chunk ${s.index} is beyond the end of ${s.digest}`);
      buf = this.frameBuffer(s.chunkSize);
      const { bytesRead } = await blob.fh.read(buf, FRAME_HEADER_SIZE, length, offset);
      if (bytesRead !== length) throw corrupt(`short read of ${s.digest} at ${offset}`);
      writeFrameHeader(
        buf,
        { type: FrameType.Chunk, digest: s.digest, offset, index: s.index, chunkSize: s.chunkSize },
        length,
        planChunkHash(plan, s.index),
      );
      const frame = buf.subarray(0, FRAME_HEADER_SIZE + length);
      if (!this.opts.conn.connected) return;
      this.stats.attemptedBytes += frame.length;
      published = true;
      const used = buf;
      const b = blob;
      // Unicast chunks go at QoS 0: the device's credit window is the flow control and the
      // retransmission (a chunk lost anywhere is granted again), so a PUBACK per chunk and the MQTT
      // client's copy of every QoS 1 payload would only cost work. The publish completes when the
      // socket took it, which paces the sender. A fan-out stream has no credit: QoS 1, paced by the
      // broker's PUBACKs.
      this.publishFrame(s.topic, frame, s.kind === 'stream' ? 1 : 0)
        .then(() => {
          // Counted once the broker took it (QoS 1: PUBACK): egress, not attempts.
          if (s.kind === 'stream') this.stats.streamBytes += frame.length;
          else this.stats.unicastBytes += frame.length;
          this.stats.chunksServed++;
        })
        .catch(() => undefined)
        .finally(() => {
          this.recycle(s.chunkSize, used);
          this.releaseBlob(s.digest, b);
          this.sem.release();
          s.done?.();
        });
    } catch (err) {
      this.opts.log.warn({ digest: s.digest, index: s.index, err: errorMessage(err) }, 'chunk not sent');
    } finally {
      if (!published) {
        if (buf) this.recycle(s.chunkSize, buf);
        if (blob) this.releaseBlob(s.digest, blob);
        this.sem.release();
        s.done?.();
      }
    }
  }

  private publishFrame(topic: string, frame: Buffer, qos: 0 | 1): Promise<void> {
    return this.opts.publishFrame
      ? this.opts.publishFrame(topic, frame, qos)
      : this.opts.conn.publish(topic, frame, { qos });
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
    if (b.timer) this.clock.clearTimeout(b.timer);
    b.timer = undefined;
    return b;
  }

  private releaseBlob(digest: Digest, b: OpenBlob): void {
    if (--b.users > 0) return;
    b.timer = this.clock.setTimeout(() => {
      if (b.users === 0 && this.handles.get(digest) === b) {
        this.handles.delete(digest);
        b.fh.close().catch(() => undefined);
      }
    }, 5000);
  }

  // ---- fan-out -------------------------------------------------------------------------------------

  /**
   * A device wants a blob. Alone, it is answered `unicast` at once (a single pull never waits). A
   * second device wanting the same blob within 10 × `gatherMs` of the first turns it into a fan-out:
   * wants are gathered for `gatherMs` (extended by each new wanter, at most 5 × `gatherMs`), then every
   * wanter — the first included, with a second answer to its
   * `want` — is told `stream` and the blob goes out once on its fan-out topic. While it runs, wanters'
   * unicast grants for the blob are dropped; later askers join the carousel.
   */
  private async want(deviceId: string, reqId: string, digest: Digest, chunkSize: number): Promise<void> {
    const answer = (dev: string, id: string, mode: 'stream' | 'unicast') =>
      this.reply(dev, { v: 1, kind: 'fanout', reqId: id, digest, mode });
    const gatherMs = this.opts.gatherMs ?? 150;
    const f = this.fanouts.get(digest);
    if (f && f.chunkSize !== chunkSize) {
      // Another chunk geometry is being gathered or streamed: this device goes unicast.
      await answer(deviceId, reqId, 'unicast');
      return;
    }
    if (!f) {
      const state: FanoutState = {
        digest,
        chunkSize,
        phase: 'solo',
        wanters: new Map([[deviceId, reqId]]),
        timer: undefined,
        gatherStart: 0,
        count: 0,
        remaining: 0,
        pos: 0,
        sent: 0,
        inflight: 0,
        source: undefined,
      };
      this.fanouts.set(digest, state);
      // Another device asking within a while (devices of a rollout start over seconds on a busy
      // network) turns this into a fan-out; after that, a second pull is just another unicast.
      state.timer = this.clock.setTimeout(() => {
        if (this.fanouts.get(digest) === state && state.phase === 'solo') this.fanouts.delete(digest);
      }, 10 * gatherMs);
      await answer(deviceId, reqId, 'unicast');
      return;
    }
    if (f.phase === 'solo') {
      if (f.wanters.has(deviceId)) {
        f.wanters.set(deviceId, reqId);
        await answer(deviceId, reqId, 'unicast');
        return;
      }
      f.phase = 'gathering';
      f.gatherStart = this.clock.now();
      f.wanters.set(deviceId, reqId);
      this.gatherUntil(f, gatherMs);
      return;
    }
    if (f.phase === 'gathering') {
      // A rollout's devices ask over a spell, not at one instant: each new one extends the gathering
      // a little (at most to 5 × gatherMs in all), so the stream starts with most of them on board.
      f.wanters.set(deviceId, reqId);
      this.gatherUntil(f, gatherMs);
      return;
    }
    // A late joiner: the carousel runs one full turn from here (it wraps past the end to where this
    // device joined), unless the stream has already turned three times: then unicast.
    if (f.sent + f.count > 3 * f.count) {
      await answer(deviceId, reqId, 'unicast');
      return;
    }
    f.remaining = f.count;
    f.wanters.set(deviceId, reqId);
    if (f.source) this.addToRing(f.source);
    await answer(deviceId, reqId, 'stream');
    void this.drive();
  }

  private gatherUntil(f: FanoutState, gatherMs: number): void {
    if (f.timer) this.clock.clearTimeout(f.timer);
    const left = Math.max(0, Math.min(gatherMs, f.gatherStart + 5 * gatherMs - this.clock.now()));
    f.timer = this.clock.setTimeout(() => {
      f.timer = undefined;
      this.startStream(f).catch((err) => {
        if (this.fanouts.get(f.digest) === f) this.fanouts.delete(f.digest);
        this.opts.log.error({ digest: f.digest, err: errorMessage(err) }, 'fan-out stream failed');
      });
    }, left);
  }

  private async startStream(f: FanoutState): Promise<void> {
    if (this.stopped || this.fanouts.get(f.digest) !== f) return;
    const { size } = await this.opts.store.info(f.digest);
    await this.planFor(f.digest, f.chunkSize);
    f.count = chunkCount(size, f.chunkSize);
    f.remaining = f.count;
    f.phase = 'streaming';
    this.stats.streams++;
    this.opts.log.info({ digest: f.digest, devices: f.wanters.size }, 'fan-out stream start');
    await Promise.all(
      [...f.wanters].map(([dev, reqId]) =>
        this.reply(dev, { v: 1, kind: 'fanout', reqId, digest: f.digest, mode: 'stream' }).catch(
          () => undefined,
        ),
      ),
    );
    f.source = new StreamSource(f, fanoutTopic(this.opts.fleet, f.digest));
    if (f.count === 0) {
      await this.endStream(f);
      return;
    }
    this.addToRing(f.source);
    void this.drive();
  }

  private async endStream(f: FanoutState): Promise<void> {
    if (this.fanouts.get(f.digest) !== f) return;
    this.fanouts.delete(f.digest);
    const { size } = await this.opts.store.info(f.digest).catch(() => ({ size: 0 }));
    const end = encodeFrame({
      type: FrameType.StreamEnd,
      digest: f.digest,
      offset: size,
      index: f.count,
      chunkSize: f.chunkSize,
      payload: Buffer.alloc(0),
    });
    await this.publishFrame(fanoutTopic(this.opts.fleet, f.digest), end, 1).catch(() => undefined);
    this.opts.log.info({ digest: f.digest, chunks: f.sent }, 'fan-out stream end');
  }

  // ---- chunk plans ---------------------------------------------------------------------------------

  /**
   * The signed chunk plan of a blob, from the cache or computed by one streaming pass over the blob. The
   * same pass hashes the whole blob: a plan is only signed for bytes that match their digest, so a
   * damaged blob in the fleet's store is refused here instead of being vouched for.
   */
  planFor(digest: Digest, chunkSize: number): Promise<ChunkPlan & { sig: Buffer }> {
    const key = `${digest}/${chunkSize}`;
    let p = this.plans.get(key);
    if (!p) {
      p = this.computePlan(digest, chunkSize);
      this.plans.set(key, p);
      p.catch(() => this.plans.delete(key));
      if (this.plans.size > 256) this.plans.delete(this.plans.keys().next().value!);
    }
    return p;
  }

  private async computePlan(digest: Digest, chunkSize: number): Promise<ChunkPlan & { sig: Buffer }> {
    if (!isValidChunkSize(chunkSize)) throw invalidInput(`chunk size ${chunkSize} out of range`);
    const info = await this.opts.store.info(digest);
    const row = this.opts.db
      .prepare(
        'SELECT size, hashes, sig FROM fleet_chunk_plans WHERE digest = ? AND chunk_size = ? AND key_id = ?',
      )
      .get(digest, chunkSize, this.keyId) as { size: number; hashes: Buffer; sig: Buffer } | undefined;
    if (row && row.size === info.size)
      return { digest, size: row.size, chunkSize, hashes: row.hashes, sig: row.sig };
    const hashes: Buffer[] = [];
    const whole = createHash('sha256');
    let h = createHash('sha256');
    let filled = 0;
    for await (const buf of createReadStream(this.opts.store.blobPath(digest), {
      highWaterMark: chunkSize,
    })) {
      let b = buf as Buffer;
      whole.update(b);
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
    if (`sha256:${whole.digest('hex')}` !== digest)
      throw corrupt(`blob ${digest} in the fleet's store does not match its digest`);
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
