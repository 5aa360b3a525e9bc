import { type KeyObject, randomBytes } from 'node:crypto';
import type { Statement } from 'better-sqlite3';
import type { ContentStore } from '../content/store.js';
import { type Db, tx } from '../db/database.js';
import { type Clock, systemClock, type TimerHandle } from '../lib/clock.js';
import {
  BerthError,
  corrupt,
  type ErrorCode,
  ErrorCodes,
  errorMessage,
  unavailable,
  withContext,
} from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { type Digest, digestHex } from '../oci/digest.js';
import { ChunkWriter } from './chunk-writer.js';
import type { MqttConnection } from './connection.js';
import { decodeFrameHeader, FRAME_HEADER_SIZE, type Frame, FrameType, frameChunkHash } from './frames.js';
import {
  AnyReplySchema,
  type BlobRequest,
  type DescriptorRef,
  decodeJson,
  encodeJson,
  MAX_CREDIT_RANGE,
  MAX_CREDIT_RANGES,
  MAX_REPLY_BYTES,
  type Reply,
} from './messages.js';
import {
  Bitmap,
  type ChunkPlan,
  chunkCount,
  chunkRange,
  chunkSizeFor,
  planChunkHash,
  planIsWellFormed,
  planSigningBytes,
} from './plan.js';
import { verifyResolved } from './resolved.js';
import { keyId, verifyBytes } from './signing.js';
import { deviceTopic, fanoutTopic, parseTopic, prefix } from './topics.js';

/**
 * The device side of blob transfer: the fleet streams, the device grants credit; resumable, verified.
 *
 * Per blob: get the fleet-signed chunk plan (per-chunk sha256), create `ingest/transfer-<hex>` of the
 * blob's size, and grant the fleet credit for `window` chunks (`credit` requests naming chunk ranges).
 * The fleet sends granted chunks back to back. Each arriving frame is checked on the event loop against
 * the plan (place, length, and the header's hash against the signed hash for that index), then handed to
 * the chunk writer (a worker thread: hashes the payload, compares, writes it at its offset, feeds the
 * whole-blob sha256). Every `ackEvery` written chunks the bitmap `transport_transfers.bitmap` is stored
 * (one UPDATE per batch) and only then is credit for as many new chunks granted: granted, in-flight,
 * being written and not-yet-recorded chunks together never exceed `window`, so a kill -9 loses at most
 * one window. Lost grants (broker restart, network loss) time out and are granted again; on reconnect
 * everything outstanding is granted again at once. When the bitmap is full the writer fsyncs and hands
 * back the blob's sha256, and the file is committed through ContentStore.commitIngestFile against the
 * digest. On resume, chunks marked present are re-read and checked against the plan by the writer (a
 * reboot may have lost page cache the bitmap already counted), so only verified bytes are kept.
 *
 * Fan-out: for blobs of several chunks the fetcher says `want` (subscribed to the blob's fan-out topic)
 * and goes on by unicast unless the fleet answers `stream`; a later `stream` answer to the same `want`
 * (another device asked for the blob meanwhile) moves it onto the stream. It takes the stream until it
 * ends or stalls, then grants credit for its gaps. Memory: `window` chunks at most, whatever the blob.
 */
export interface BlobFetcherOptions {
  conn: MqttConnection;
  fleet: string;
  deviceId: string;
  store: ContentStore;
  db: Db;
  publicKey: KeyObject;
  log: Logger;
  /** Credit window: chunks granted and not yet recorded as written (default 32). */
  window?: number;
  /** Record progress and grant new credit every this many written chunks (default window / 4). */
  ackEvery?: number;
  /** A granted chunk not received this long after the grant is granted again (default 5 s). */
  requestTimeoutMs?: number;
  /** Use fan-out for blobs of at least `fanoutMinChunks` chunks (default on, 8). */
  fanout?: boolean;
  fanoutMinChunks?: number;
  /** Upper bound for the chunk size asked for (default: what the broker's packet limit allows). */
  maxChunk?: number;
  clock?: Clock;
  /** Shared writer (default: one per fetcher). */
  writer?: ChunkWriter;
}

export interface FetchStats {
  /** Payload bytes written (each verified chunk once). */
  receivedBytes: number;
  /** Chunks that arrived again after being received (re-sent bytes). */
  duplicateBytes: number;
  /** Frames rejected: damaged, foreign, or not matching the plan. */
  rejectedFrames: number;
  /** Chunks granted again after a timeout or reconnect. */
  rerequests: number;
  /** Bytes found already verified on disk when a transfer resumed. */
  resumedBytes: number;
  /** Bytes that arrived on a fan-out stream. */
  streamBytes: number;
  /** Credit grants sent. */
  credits: number;
}

export type ProgressFn = (doneBytes: number, totalBytes: number) => void;

const STREAM_STALL_MS = 3000;
const TICK_MS = 250;

interface Transfer {
  plan: ChunkPlan;
  bitmap: Bitmap;
  file: string;
  /** the chunk writer's id for this file (undefined once finished or released) */
  writerId: number | undefined;
  /** granted to the fleet, not received: index → granted at (clock ms) */
  granted: Map<number, number>;
  /** received, being hashed and written by the worker */
  writing: Set<number>;
  /** written since the bitmap was last recorded */
  unpersisted: number;
  retry: number[];
  cursor: number;
  onProgress: ProgressFn | undefined;
  done: number;
  wake: (() => void) | undefined;
  mode: 'unicast' | 'stream';
  streamEnded: boolean;
  lastStreamFrame: number;
  fanoutTopic: string | undefined;
  wantReqId: string | undefined;
  failed: Error | undefined;
}

interface PendingReply {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  accept: (r: Reply) => boolean | string;
}

export class BlobFetcher {
  readonly stats: FetchStats = {
    receivedBytes: 0,
    duplicateBytes: 0,
    rejectedFrames: 0,
    rerequests: 0,
    resumedBytes: 0,
    streamBytes: 0,
    credits: 0,
  };
  private readonly active = new Map<Digest, Transfer>();
  private readonly fetches = new Map<Digest, Promise<void>>();
  private readonly pending = new Map<string, PendingReply>();
  /** replies that may come later to a request already answered (a `want` upgraded to `stream`) */
  private readonly listeners = new Map<string, (r: Reply) => void>();
  private readonly window: number;
  private readonly ackEvery: number;
  private readonly requestTimeoutMs: number;
  private readonly replyTopic: string;
  private readonly chunksTopic: string;
  private readonly reqTopic: string;
  private readonly fleetKeyId: string;
  private readonly clock: Clock;
  private readonly writer: ChunkWriter;
  private readonly ownWriter: boolean;
  private ticker: TimerHandle | undefined;
  /** the progress UPDATE, prepared once (it runs every `ackEvery` chunks) */
  private updateBits: Statement<[Buffer, number, string]> | undefined;
  private stopped = false;
  private unclaim: (() => void) | undefined;
  private readonly fanoutPrefix: string;
  private readonly onMessage = (topic: string, payload: Buffer) => {
    if (topic === this.replyTopic) this.route(topic, payload);
  };
  private readonly onConnect = () => {
    // Whatever was in flight when the link dropped is gone: grant it again now.
    for (const t of this.active.values()) this.requeueGranted(t);
  };

  constructor(private readonly opts: BlobFetcherOptions) {
    this.window = Math.max(1, opts.window ?? 32);
    this.ackEvery = Math.max(1, Math.min(this.window, opts.ackEvery ?? Math.floor(this.window / 4)));
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    this.replyTopic = deviceTopic(opts.fleet, opts.deviceId, 'reply');
    this.chunksTopic = deviceTopic(opts.fleet, opts.deviceId, 'chunks');
    this.reqTopic = deviceTopic(opts.fleet, opts.deviceId, 'req');
    this.fleetKeyId = keyId(opts.publicKey);
    this.fanoutPrefix = `${prefix(opts.fleet)}/fanout/`;
    this.clock = opts.clock ?? systemClock;
    this.writer = opts.writer ?? new ChunkWriter();
    this.ownWriter = opts.writer === undefined;
  }

  async start(): Promise<void> {
    this.opts.conn.on('message', this.onMessage);
    this.opts.conn.on('connect', this.onConnect);
    this.unclaim = this.opts.conn.claim(
      (t) => t === this.chunksTopic || t.startsWith(this.fanoutPrefix),
      (t, p) => this.route(t, p),
    );
    await this.opts.conn.subscribe(this.replyTopic, 1);
    // Chunks are published at QoS 1 (the fleet's pace follows the broker's PUBACKs) and delivered at
    // QoS 0: the credit window already grants again whatever does not arrive, a PUBACK per chunk
    // would only cost the device and the broker work.
    await this.opts.conn.subscribe(this.chunksTopic, 0);
    const tick = () => {
      this.ticker = this.clock.setTimeout(() => {
        if (this.stopped) return;
        this.tick();
        tick();
      }, TICK_MS);
    };
    tick();
  }

  stop(): void {
    this.stopped = true;
    this.opts.conn.off('message', this.onMessage);
    this.opts.conn.off('connect', this.onConnect);
    this.unclaim?.();
    if (this.ticker) this.clock.clearTimeout(this.ticker);
    for (const p of this.pending.values()) p.reject(unavailable('blob fetcher stopped'));
    this.pending.clear();
    this.listeners.clear();
    for (const t of this.active.values()) t.wake?.();
    if (this.ownWriter) void this.writer.close();
  }

  /**
   * Route one inbound message (exposed for tests that inject traffic). A chunk frame's payload buffer
   * is handed over (it may move to the writer's thread). Never throws.
   */
  route(topic: string, payload: Buffer): void {
    try {
      if (topic === this.chunksTopic) this.onFrame(payload, false);
      else if (topic === this.replyTopic) this.onReply(payload);
      else {
        const t = parseTopic(topic);
        if (t?.kind === 'fanout' && t.fleet === this.opts.fleet) this.onFrame(payload, true);
      }
    } catch (err) {
      this.opts.log.error({ topic, err: errorMessage(err) }, 'blob message handling failed');
    }
  }

  private onReply(payload: Buffer): void {
    const msg = decodeJson(AnyReplySchema, payload, MAX_REPLY_BYTES);
    if (!msg.ok) {
      this.opts.log.warn({ topic: this.replyTopic, reason: msg.reason }, 'rejected reply');
      return;
    }
    const r = msg.value;
    const later = this.listeners.get(r.reqId);
    if (later) {
      later(r);
      return;
    }
    const p = this.pending.get(r.reqId);
    if (!p) {
      this.opts.log.debug({ reqId: r.reqId, kind: r.kind }, 'reply to no pending request');
      return;
    }
    if (r.kind === 'error') {
      this.pending.delete(r.reqId);
      const code = (ErrorCodes as readonly string[]).includes(r.code) ? (r.code as ErrorCode) : 'Internal';
      p.reject(new BerthError(code, `fleet server: ${r.message}`));
      return;
    }
    const ok = p.accept(r);
    if (ok !== true) {
      this.opts.log.warn(
        { reqId: r.reqId, kind: r.kind, ...(typeof ok === 'string' ? { reason: ok } : {}) },
        'rejected reply that does not answer its request',
      );
      return;
    }
    this.pending.delete(r.reqId);
    p.resolve(r);
  }

  /** Publish a request and wait for its reply, asking again on timeout; waits out disconnections. */
  private async request(
    body: DistributiveOmit<BlobRequest, 'reqId' | 'v'>,
    accept: (r: Reply, reqId: string) => boolean | string,
    timeoutMs = 5000,
    attempts = 6,
    reqId = randomBytes(8).toString('hex'),
  ): Promise<Reply> {
    const payload = encodeJson({ v: 2, reqId, ...body });
    const answer = new Promise<Reply>((resolve, reject) =>
      this.pending.set(reqId, { resolve, reject, accept: (r) => accept(r, reqId) }),
    );
    answer.catch(() => undefined);
    try {
      for (let i = 0; i < attempts; i++) {
        if (this.stopped) throw unavailable('blob fetcher stopped');
        try {
          await this.opts.conn.waitConnected(60_000);
          await this.opts.conn.publish(this.reqTopic, payload, { qos: 1 });
        } catch (err) {
          this.opts.log.debug({ err: errorMessage(err) }, 'request not sent; retrying');
        }
        let timer: TimerHandle | undefined;
        const r = await Promise.race([
          answer,
          new Promise<undefined>((res) => {
            timer = this.clock.setTimeout(() => res(undefined), timeoutMs);
          }),
        ]).finally(() => timer && this.clock.clearTimeout(timer));
        if (r) return r;
      }
      throw new BerthError(
        'Timeout',
        `no answer from the fleet server to ${body.kind} after ${attempts} attempts`,
      );
    } finally {
      this.pending.delete(reqId);
    }
  }

  /**
   * Image name → the top-level descriptor the fleet holds for it. The answer must be signed by the
   * fleet key for this device and this request: a reply from anyone else is dropped and the request
   * keeps waiting for the fleet's.
   */
  async resolve(name: string): Promise<DescriptorRef> {
    const r = await this.request({ kind: 'resolve', name }, (r, reqId) => {
      if (r.kind !== 'resolved') return false;
      if (r.v !== 2) return 'unsigned resolved reply';
      const check = verifyResolved(
        r,
        { fleet: this.opts.fleet, deviceId: this.opts.deviceId, reqId, name },
        this.opts.publicKey,
      );
      return check.ok ? true : `resolved reply: ${check.reason}`;
    });
    if (r.kind !== 'resolved') throw corrupt('unexpected reply to resolve');
    return r.descriptor;
  }

  /**
   * Fetch one blob into the content store (no-op when present). Two callers wanting the same blob
   * (two images sharing a layer) share one transfer.
   */
  fetchBlob(desc: { digest: Digest; size: number }, onProgress?: ProgressFn): Promise<void> {
    const running = this.fetches.get(desc.digest);
    if (running) return running.then(() => onProgress?.(desc.size, desc.size));
    const p = this.fetchBlobOnce(desc, onProgress).finally(() => this.fetches.delete(desc.digest));
    this.fetches.set(desc.digest, p);
    return p;
  }

  private async fetchBlobOnce(
    desc: { digest: Digest; size: number },
    onProgress?: ProgressFn,
  ): Promise<void> {
    if (await this.opts.store.has(desc.digest)) {
      onProgress?.(desc.size, desc.size);
      return;
    }
    const t = await this.openTransfer(desc);
    t.onProgress = onProgress;
    this.active.set(desc.digest, t);
    try {
      onProgress?.(t.done, t.plan.size);
      const count = t.bitmap.count;
      if ((this.opts.fanout ?? true) && count >= (this.opts.fanoutMinChunks ?? 8) && t.done < t.plan.size)
        await this.askFanout(t);
      await this.transferLoop(t);
      const id = t.writerId!;
      t.writerId = undefined;
      const hashed = await this.writer.finish(id);
      try {
        await this.opts.store.commitIngestFile(
          t.file,
          desc.digest,
          desc.size,
          hashed ? { hashedAsWritten: hashed } : {},
        );
      } finally {
        this.opts.db.prepare('DELETE FROM transport_transfers WHERE digest = ?').run(desc.digest);
      }
    } finally {
      if (t.writerId !== undefined) await this.writer.release(t.writerId).catch(() => undefined);
      if (t.fanoutTopic) this.opts.conn.unsubscribe(t.fanoutTopic);
      if (t.wantReqId) this.listeners.delete(t.wantReqId);
      this.active.delete(desc.digest);
    }
  }

  private async openTransfer(desc: { digest: Digest; size: number }): Promise<Transfer> {
    const { db, store } = this.opts;
    const file = await store.ingestPath(`transfer-${digestHex(desc.digest)}`);
    const row = db.prepare('SELECT * FROM transport_transfers WHERE digest = ?').get(desc.digest) as
      | { size: number; chunk_size: number; hashes: Buffer; key_id: string; sig: Buffer; bitmap: Buffer }
      | undefined;
    let plan: ChunkPlan | undefined;
    let bitmap: Bitmap | undefined;
    let writerId: number | undefined;
    if (row) {
      const p: ChunkPlan = {
        digest: desc.digest,
        size: row.size,
        chunkSize: row.chunk_size,
        hashes: row.hashes,
      };
      if (row.size === desc.size && planIsWellFormed(p) && this.planSignatureOk(p, row.key_id, row.sig)) {
        writerId = await this.writer.openFile(file, p.size, p.chunkSize, false).catch(() => undefined);
        if (writerId !== undefined) {
          plan = p;
          const v = await this.writer.verify(writerId, p.hashes, row.bitmap);
          bitmap = new Bitmap(chunkCount(p.size, p.chunkSize), v.bits);
          this.stats.resumedBytes += v.okBytes;
          this.persistBits(desc.digest, bitmap);
          this.opts.log.info(
            { digest: desc.digest, resumedBytes: v.okBytes, size: p.size },
            'resuming transfer',
          );
        }
      }
    }
    if (!plan || !bitmap || writerId === undefined) {
      const fresh = await this.fetchPlan(desc);
      plan = fresh.plan;
      bitmap = new Bitmap(chunkCount(plan.size, plan.chunkSize));
      writerId = await this.writer.openFile(file, plan.size, plan.chunkSize, true);
      const p = plan;
      const b = bitmap;
      const now = this.clock.now();
      tx(db, () => {
        db.prepare('DELETE FROM transport_transfers WHERE digest = ?').run(desc.digest);
        db.prepare(
          `INSERT INTO transport_transfers (digest, size, chunk_size, hashes, key_id, sig, bitmap, ingest_name, started_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(
          desc.digest,
          p.size,
          p.chunkSize,
          p.hashes,
          fresh.keyId,
          fresh.sig,
          b.bits,
          `transfer-${digestHex(desc.digest)}`,
          now,
          now,
        );
      });
    }
    let done = 0;
    for (let i = 0; i < bitmap.count; i++)
      if (bitmap.has(i)) done += chunkRange(plan.size, plan.chunkSize, i).length;
    return {
      plan,
      bitmap,
      file,
      writerId,
      granted: new Map(),
      writing: new Set(),
      unpersisted: 0,
      retry: [],
      cursor: 0,
      onProgress: undefined,
      done,
      wake: undefined,
      mode: 'unicast',
      streamEnded: false,
      lastStreamFrame: this.clock.now(),
      fanoutTopic: undefined,
      wantReqId: undefined,
      failed: undefined,
    };
  }

  private planSignatureOk(p: ChunkPlan, kid: string, sig: Buffer): boolean {
    return kid === this.fleetKeyId && verifyBytes(this.opts.publicKey, planSigningBytes(p), sig);
  }

  private async fetchPlan(desc: {
    digest: Digest;
    size: number;
  }): Promise<{ plan: ChunkPlan; keyId: string; sig: Buffer }> {
    const maxChunk = Math.min(
      this.opts.maxChunk ?? Number.MAX_SAFE_INTEGER,
      chunkSizeFor(this.opts.conn.maxPacket),
    );
    const r = await this.request({ kind: 'plan', digest: desc.digest, maxChunk }, (r) => {
      if (r.kind !== 'plan' || r.digest !== desc.digest || r.size !== desc.size) return false;
      const p: ChunkPlan = {
        digest: r.digest,
        size: r.size,
        chunkSize: r.chunkSize,
        hashes: Buffer.from(r.hashes, 'base64'),
      };
      // A forged or damaged plan is dropped here; the request keeps waiting for the real one.
      return (
        (planIsWellFormed(p) && this.planSignatureOk(p, r.keyId, Buffer.from(r.sig, 'base64'))) ||
        'plan signature does not verify'
      );
    });
    if (r.kind !== 'plan') throw corrupt('unexpected reply to plan');
    return {
      plan: {
        digest: r.digest,
        size: r.size,
        chunkSize: r.chunkSize,
        hashes: Buffer.from(r.hashes, 'base64'),
      },
      keyId: r.keyId,
      sig: Buffer.from(r.sig, 'base64'),
    };
  }

  private persistBits(digest: Digest, bitmap: Bitmap): void {
    this.updateBits ??= this.opts.db.prepare(
      'UPDATE transport_transfers SET bitmap = ?, updated_at = ? WHERE digest = ?',
    );
    this.updateBits.run(bitmap.bits, this.clock.now(), digest);
  }

  private persist(t: Transfer): void {
    this.persistBits(t.plan.digest, t.bitmap);
    t.unpersisted = 0;
  }

  private onFrame(buf: Buffer, fromStream: boolean): void {
    const d = decodeFrameHeader(buf);
    if (!d.ok) {
      this.stats.rejectedFrames++;
      this.opts.log.warn({ reason: d.reason, bytes: buf.length }, 'rejected chunk frame');
      return;
    }
    const f = d.frame;
    const t = this.active.get(f.digest);
    if (!t || t.writerId === undefined) return; // a stream or a late re-send for a blob not (or no longer) wanted
    if (f.type === FrameType.StreamEnd) {
      if (fromStream) {
        t.streamEnded = true;
        t.wake?.();
      }
      return;
    }
    if (!this.frameMatchesPlan(t, f, buf)) {
      this.stats.rejectedFrames++;
      this.opts.log.warn({ digest: f.digest, index: f.index }, 'rejected chunk not matching the signed plan');
      if (t.granted.delete(f.index)) {
        t.retry.push(f.index);
        this.pump(t);
      }
      return;
    }
    const i = f.index;
    const length = f.payload.length;
    if (fromStream) t.lastStreamFrame = this.clock.now();
    if (t.bitmap.has(i) || t.writing.has(i)) {
      this.stats.duplicateBytes += length;
      return;
    }
    t.granted.delete(i);
    t.writing.add(i);
    // The frame is this handler's alone (the connection hands chunk topics to the fetcher only): it
    // moves to the writer without a copy.
    this.writer
      .write(t.writerId, i, f.offset, planChunkHash(t.plan, i), buf, FRAME_HEADER_SIZE, length, true)
      .then(
        (ok) => this.onWritten(t, i, length, ok, fromStream),
        (err: unknown) => {
          t.writing.delete(i);
          // disk full (file or database): asking for the chunk again would fail the same way, forever
          t.failed ??= withContext(`storing chunk ${i} of ${t.plan.digest}`, err);
          t.wake?.();
        },
      );
  }

  private onWritten(t: Transfer, i: number, length: number, ok: boolean, fromStream: boolean): void {
    t.writing.delete(i);
    if (!this.active.has(t.plan.digest) || t.writerId === undefined) return;
    if (!ok) {
      // The header claimed the plan's hash but the bytes are not the plan's.
      this.stats.rejectedFrames++;
      this.opts.log.warn({ digest: t.plan.digest, index: i }, 'rejected chunk not matching the signed plan');
      t.retry.push(i);
      this.pump(t);
      return;
    }
    t.bitmap.set(i);
    t.unpersisted++;
    t.done += length;
    this.stats.receivedBytes += length;
    if (fromStream) this.stats.streamBytes += length;
    t.onProgress?.(t.done, t.plan.size);
    if (t.unpersisted >= this.ackEvery || t.done === t.plan.size) this.persist(t);
    if (t.done === t.plan.size) t.wake?.();
    else this.pump(t);
  }

  private frameMatchesPlan(t: Transfer, f: Frame, buf: Buffer): boolean {
    const p = t.plan;
    if (f.chunkSize !== p.chunkSize || f.index >= t.bitmap.count) return false;
    const { offset, length } = chunkRange(p.size, p.chunkSize, f.index);
    if (f.offset !== offset || f.payload.length !== length) return false;
    return frameChunkHash(buf).equals(planChunkHash(p, f.index));
  }

  /**
   * Say `want` for the blob (subscribed to its fan-out topic first). `stream` now or later moves the
   * transfer onto the stream; anything else (or no answer) leaves it on unicast.
   */
  private async askFanout(t: Transfer): Promise<void> {
    const topic = fanoutTopic(this.opts.fleet, t.plan.digest);
    await this.opts.conn.subscribe(topic, 0);
    t.fanoutTopic = topic;
    const reqId = randomBytes(8).toString('hex');
    const isStream = (r: Reply) => r.kind === 'fanout' && r.digest === t.plan.digest && r.mode === 'stream';
    try {
      const r = await this.request(
        { kind: 'want', digest: t.plan.digest, chunkSize: t.plan.chunkSize },
        (r) => r.kind === 'fanout' && r.digest === t.plan.digest,
        3000,
        2,
        reqId,
      );
      t.wantReqId = reqId;
      this.listeners.set(reqId, (later) => {
        if (isStream(later)) this.enterStream(t);
      });
      if (isStream(r)) this.enterStream(t);
    } catch (err) {
      this.opts.log.debug({ err: errorMessage(err) }, 'no fan-out answer; unicast');
    }
  }

  private enterStream(t: Transfer): void {
    if (t.mode === 'stream' || t.done >= t.plan.size) return;
    t.mode = 'stream';
    t.streamEnded = false;
    t.lastStreamFrame = this.clock.now();
    // Chunks granted by unicast may still come; nothing more is granted while the stream runs.
    t.granted.clear();
    t.retry = [];
    this.opts.log.debug({ digest: t.plan.digest }, 'taking the fan-out stream');
  }

  private async transferLoop(t: Transfer): Promise<void> {
    this.pump(t);
    while (t.done < t.plan.size) {
      if (this.stopped) throw unavailable('blob fetcher stopped');
      if (t.failed) throw t.failed;
      await new Promise<void>((resolve) => {
        const timer = this.clock.setTimeout(resolve, 1000);
        t.wake = () => {
          this.clock.clearTimeout(timer);
          resolve();
        };
      });
      t.wake = undefined;
      if (t.mode === 'stream' && (t.streamEnded || this.clock.now() - t.lastStreamFrame > STREAM_STALL_MS)) {
        // The stream is over (or gone quiet): the gaps come by unicast.
        t.mode = 'unicast';
        t.cursor = 0;
      }
      this.pump(t);
    }
    if (t.failed) throw t.failed;
  }

  /**
   * Grant credit for chunks neither present nor outstanding, as ranges, once at least `ackEvery`
   * credits are free (or nothing is outstanding at all).
   */
  private pump(t: Transfer): void {
    if (t.mode !== 'unicast' || t.done >= t.plan.size || !this.opts.conn.connected) return;
    const outstanding = t.granted.size + t.writing.size + t.unpersisted;
    const free = this.window - outstanding;
    if (free <= 0 || (free < this.ackEvery && outstanding > 0)) return;
    const want: number[] = [];
    const picked = new Set<number>();
    const usable = (i: number) =>
      !t.bitmap.has(i) && !t.granted.has(i) && !t.writing.has(i) && !picked.has(i);
    while (want.length < free && t.retry.length > 0) {
      const i = t.retry.shift()!;
      if (usable(i)) {
        want.push(i);
        picked.add(i);
      }
    }
    while (want.length < free && t.cursor < t.bitmap.count) {
      const i = t.cursor++;
      if (usable(i)) {
        want.push(i);
        picked.add(i);
      }
    }
    if (want.length === 0) {
      // Nothing left to ask for but the blob is incomplete: rescan from the start next time.
      if (t.granted.size === 0 && t.writing.size === 0) t.cursor = 0;
      return;
    }
    const now = this.clock.now();
    for (const i of want) t.granted.set(i, now);
    const ranges = toRanges(want);
    for (let k = 0; k < ranges.length; k += MAX_CREDIT_RANGES) {
      const part = ranges.slice(k, k + MAX_CREDIT_RANGES);
      const payload = encodeJson({
        v: 2,
        kind: 'credit',
        reqId: randomBytes(4).toString('hex'),
        digest: t.plan.digest,
        chunkSize: t.plan.chunkSize,
        ranges: part,
      });
      this.stats.credits++;
      this.opts.conn.publish(this.reqTopic, payload, { qos: 1 }).catch(() => {
        // Offline: these go back to the queue and are granted again after reconnect.
        for (const [first, n] of part)
          for (let i = first; i < first + n; i++) if (t.granted.delete(i)) t.retry.push(i);
      });
    }
  }

  private requeueGranted(t: Transfer): void {
    for (const i of t.granted.keys()) {
      t.retry.push(i);
      this.stats.rerequests++;
    }
    t.granted.clear();
    this.pump(t);
  }

  private tick(): void {
    const now = this.clock.now();
    for (const t of this.active.values()) {
      if (t.mode !== 'unicast') {
        if (t.streamEnded || now - t.lastStreamFrame > STREAM_STALL_MS) t.wake?.();
        continue;
      }
      let expired = false;
      for (const [i, at] of t.granted) {
        if (now - at > this.requestTimeoutMs) {
          t.granted.delete(i);
          t.retry.push(i);
          this.stats.rerequests++;
          expired = true;
        }
      }
      if (expired || t.granted.size === 0) this.pump(t);
    }
  }
}

/** Sorted chunk indexes → [first, count] ranges. */
export function toRanges(indexes: readonly number[]): Array<[number, number]> {
  const sorted = [...indexes].sort((a, b) => a - b);
  const out: Array<[number, number]> = [];
  for (const i of sorted) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === i && last[1] < MAX_CREDIT_RANGE) last[1]++;
    else out.push([i, 1]);
  }
  return out;
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
