import { createHash, type Hash, type KeyObject, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import type { ContentStore } from '../content/store.js';
import { type Db, tx } from '../db/database.js';
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
import type { MqttConnection } from './connection.js';
import { decodeFrame, type Frame, FrameType, frameChunkHash } from './frames.js';
import {
  type BlobRequest,
  decodeJson,
  encodeJson,
  MAX_REPLY_BYTES,
  type Reply,
  ReplySchema,
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
import { keyId, verifyBytes } from './signing.js';
import { deviceTopic, fanoutTopic, parseTopic } from './topics.js';

/**
 * The device side of blob transfer: receiver-driven, resumable, verified.
 *
 * Per blob: get the fleet-signed chunk plan (per-chunk sha256), create `ingest/transfer-<hex>` of the
 * blob's size, and keep `window` chunk requests in flight. Each arriving frame is checked (frame hash,
 * then against the signed plan: a well-formed frame with foreign bytes is rejected), written at its
 * offset, and its bit set in `transport_transfers.bitmap` — one row per blob, updated per chunk, so a
 * kill -9 loses at most the chunks in flight. Lost requests (broker restart, network loss) time out and
 * are asked again; on reconnect everything in flight is asked again at once. When the bitmap is full
 * the file is committed through ContentStore.commitIngestFile, checked against the digest: the fetcher
 * hashes the blob as chunks are written in order (reading back only chunks that came out of order), so
 * the commit needs no second pass over the file.
 * On resume, chunks marked present are re-read and checked against the plan (a reboot may have lost
 * page cache that the bitmap already counted), so only verified bytes are kept.
 *
 * Fan-out: for blobs of several chunks the fetcher first says `want` and, if the server answers
 * `stream`, takes chunks from the blob's shared fan-out topic until the stream ends, then fills the
 * gaps by unicast. Memory: at most `window` chunks requested at once, frames are written as they come.
 */
export interface BlobFetcherOptions {
  conn: MqttConnection;
  fleet: string;
  deviceId: string;
  store: ContentStore;
  db: Db;
  publicKey: KeyObject;
  log: Logger;
  /** Chunks requested and not yet received (default 16). */
  window?: number;
  /** A chunk not received this long after its request is asked again (default 5 s). */
  requestTimeoutMs?: number;
  /** Use fan-out for blobs of at least `fanoutMinChunks` chunks (default on, 8). */
  fanout?: boolean;
  fanoutMinChunks?: number;
  /** Upper bound for the chunk size asked for (default: what the broker's packet limit allows). */
  maxChunk?: number;
}

export interface FetchStats {
  /** Payload bytes written (each verified chunk once). */
  receivedBytes: number;
  /** Chunks that arrived again after being written (re-sent bytes). */
  duplicateBytes: number;
  /** Frames rejected: damaged, foreign, or not matching the plan. */
  rejectedFrames: number;
  /** Chunk requests repeated after a timeout or reconnect. */
  rerequests: number;
  /** Bytes found already verified on disk when a transfer resumed. */
  resumedBytes: number;
  /** Bytes that arrived on a fan-out stream. */
  streamBytes: number;
}

export type ProgressFn = (doneBytes: number, totalBytes: number) => void;

interface Transfer {
  plan: ChunkPlan;
  bitmap: Bitmap;
  fd: number;
  file: string;
  inflight: Map<number, number>; // index → sent at (ms)
  retry: number[];
  cursor: number;
  onProgress: ProgressFn | undefined;
  done: number;
  wake: (() => void) | undefined;
  streamEnded: boolean;
  lastStreamFrame: number;
  /** Requests are only sent in the unicast phase; during a fan-out stream the device listens. */
  unicast: boolean;
  /** sha256 of the blob's leading chunks, fed as they are written in order (see hashAhead). */
  hasher: Hash;
  hashedChunks: number;
  /** a write to the ingest file failed (disk full…): the fetch fails with it instead of asking forever */
  failed?: BerthError | undefined;
}

interface PendingReply {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  accept: (r: Reply) => boolean;
}

export class BlobFetcher {
  readonly stats: FetchStats = {
    receivedBytes: 0,
    duplicateBytes: 0,
    rejectedFrames: 0,
    rerequests: 0,
    resumedBytes: 0,
    streamBytes: 0,
  };
  private readonly active = new Map<Digest, Transfer>();
  private readonly fetches = new Map<Digest, Promise<void>>();
  private readonly pending = new Map<string, PendingReply>();
  private readonly window: number;
  private readonly requestTimeoutMs: number;
  private readonly replyTopic: string;
  private readonly chunksTopic: string;
  private readonly reqTopic: string;
  private readonly fleetKeyId: string;
  private ticker: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly onMessage = (topic: string, payload: Buffer) => this.route(topic, payload);
  private readonly onConnect = () => {
    // Whatever was in flight when the link dropped is gone: ask again now.
    for (const t of this.active.values()) this.requeueInflight(t);
  };

  constructor(private readonly opts: BlobFetcherOptions) {
    this.window = opts.window ?? 16;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    this.replyTopic = deviceTopic(opts.fleet, opts.deviceId, 'reply');
    this.chunksTopic = deviceTopic(opts.fleet, opts.deviceId, 'chunks');
    this.reqTopic = deviceTopic(opts.fleet, opts.deviceId, 'req');
    this.fleetKeyId = keyId(opts.publicKey);
  }

  async start(): Promise<void> {
    this.opts.conn.on('message', this.onMessage);
    this.opts.conn.on('connect', this.onConnect);
    await this.opts.conn.subscribe(this.replyTopic, 1);
    await this.opts.conn.subscribe(this.chunksTopic, 1);
    this.ticker = setInterval(() => this.tick(), 250);
    this.ticker.unref?.();
  }

  stop(): void {
    this.stopped = true;
    this.opts.conn.off('message', this.onMessage);
    this.opts.conn.off('connect', this.onConnect);
    if (this.ticker) clearInterval(this.ticker);
    for (const p of this.pending.values()) p.reject(unavailable('blob fetcher stopped'));
    this.pending.clear();
    for (const t of this.active.values()) t.wake?.();
  }

  /** Route one inbound message (exposed for tests that inject traffic). Never throws. */
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
    const msg = decodeJson(ReplySchema, payload, MAX_REPLY_BYTES);
    if (!msg.ok) {
      this.opts.log.warn({ topic: this.replyTopic, reason: msg.reason }, 'rejected reply');
      return;
    }
    const p = this.pending.get(msg.value.reqId);
    if (!p) {
      this.opts.log.debug({ reqId: msg.value.reqId }, 'reply to no pending request');
      return;
    }
    if (msg.value.kind === 'error') {
      this.pending.delete(msg.value.reqId);
      const code = (ErrorCodes as readonly string[]).includes(msg.value.code)
        ? (msg.value.code as ErrorCode)
        : 'Internal';
      p.reject(new BerthError(code, `fleet server: ${msg.value.message}`));
      return;
    }
    if (!p.accept(msg.value)) {
      this.opts.log.warn(
        { reqId: msg.value.reqId, kind: msg.value.kind },
        'rejected reply that does not answer its request',
      );
      return;
    }
    this.pending.delete(msg.value.reqId);
    p.resolve(msg.value);
  }

  /** Publish a request and wait for its reply, asking again on timeout; waits out disconnections. */
  private async request(
    body: DistributiveOmit<BlobRequest, 'reqId' | 'v'>,
    accept: (r: Reply) => boolean,
    timeoutMs = 5000,
    attempts = 6,
  ): Promise<Reply> {
    const reqId = randomBytes(8).toString('hex');
    const payload = encodeJson({ v: 1, reqId, ...body });
    const answer = new Promise<Reply>((resolve, reject) =>
      this.pending.set(reqId, { resolve, reject, accept }),
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
        let timer: NodeJS.Timeout | undefined;
        const r = await Promise.race([
          answer,
          new Promise<undefined>((res) => {
            timer = setTimeout(() => res(undefined), timeoutMs);
          }),
        ]).finally(() => clearTimeout(timer));
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

  /** Image name → the top-level descriptor the fleet holds for it. */
  async resolve(name: string): Promise<{ mediaType: string; digest: Digest; size: number }> {
    const r = await this.request({ kind: 'resolve', name }, (r) => r.kind === 'resolved' && r.name === name);
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
      this.hashAhead(t); // a resumed transfer: hash its verified prefix once, now

      onProgress?.(t.done, t.plan.size);
      const count = t.bitmap.count;
      if ((this.opts.fanout ?? true) && count >= (this.opts.fanoutMinChunks ?? 8) && !t.bitmap.complete()) {
        await this.fanoutPhase(t);
      }
      await this.unicastPhase(t);
      this.hashAhead(t);
      const hashed =
        t.hashedChunks === t.bitmap.count ? (`sha256:${t.hasher.digest('hex')}` as Digest) : undefined;
      fs.fsyncSync(t.fd);
      fs.closeSync(t.fd);
      t.fd = -1;
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
      if (t.fd >= 0) fs.closeSync(t.fd);
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
    if (row) {
      const p: ChunkPlan = {
        digest: desc.digest,
        size: row.size,
        chunkSize: row.chunk_size,
        hashes: row.hashes,
      };
      if (row.size === desc.size && planIsWellFormed(p) && this.planSignatureOk(p, row.key_id, row.sig)) {
        plan = p;
        bitmap = new Bitmap(chunkCount(p.size, p.chunkSize), row.bitmap);
      }
    }
    let fd: number;
    if (plan && bitmap && fs.existsSync(file)) {
      fd = fs.openSync(file, 'r+');
      const resumed = this.reverify(fd, plan, bitmap);
      this.stats.resumedBytes += resumed;
      this.persist(desc.digest, bitmap);
      this.opts.log.info(
        { digest: desc.digest, resumedBytes: resumed, size: plan.size },
        'resuming transfer',
      );
    } else {
      plan = await this.fetchPlan(desc);
      bitmap = new Bitmap(chunkCount(plan.size, plan.chunkSize));
      fd = fs.openSync(file, 'w+');
      fs.ftruncateSync(fd, plan.size);
      const r = this.lastPlanSig!;
      tx(db, () => {
        db.prepare('DELETE FROM transport_transfers WHERE digest = ?').run(desc.digest);
        db.prepare(
          `INSERT INTO transport_transfers (digest, size, chunk_size, hashes, key_id, sig, bitmap, ingest_name, started_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(
          desc.digest,
          plan!.size,
          plan!.chunkSize,
          plan!.hashes,
          r.keyId,
          r.sig,
          bitmap!.bits,
          `transfer-${digestHex(desc.digest)}`,
          Date.now(),
          Date.now(),
        );
      });
    }
    let done = 0;
    for (let i = 0; i < bitmap.count; i++)
      if (bitmap.has(i)) done += chunkRange(plan.size, plan.chunkSize, i).length;
    return {
      plan,
      bitmap,
      fd,
      file,
      inflight: new Map(),
      retry: [],
      cursor: 0,
      onProgress: undefined,
      done,
      wake: undefined,
      streamEnded: false,
      lastStreamFrame: Date.now(),
      unicast: false,
      hasher: createHash('sha256'),
      hashedChunks: 0,
    };
  }

  private lastPlanSig: { keyId: string; sig: Buffer } | undefined;

  private planSignatureOk(p: ChunkPlan, kid: string, sig: Buffer): boolean {
    return kid === this.fleetKeyId && verifyBytes(this.opts.publicKey, planSigningBytes(p), sig);
  }

  private async fetchPlan(desc: { digest: Digest; size: number }): Promise<ChunkPlan> {
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
      return planIsWellFormed(p) && this.planSignatureOk(p, r.keyId, Buffer.from(r.sig, 'base64'));
    });
    if (r.kind !== 'plan') throw corrupt('unexpected reply to plan');
    this.lastPlanSig = { keyId: r.keyId, sig: Buffer.from(r.sig, 'base64') };
    return {
      digest: r.digest,
      size: r.size,
      chunkSize: r.chunkSize,
      hashes: Buffer.from(r.hashes, 'base64'),
    };
  }

  /** Re-read chunks the bitmap counts as present; clear those that do not match the plan. */
  private reverify(fd: number, plan: ChunkPlan, bitmap: Bitmap): number {
    const buf = Buffer.allocUnsafe(plan.chunkSize);
    let ok = 0;
    for (let i = 0; i < bitmap.count; i++) {
      if (!bitmap.has(i)) continue;
      const { offset, length } = chunkRange(plan.size, plan.chunkSize, i);
      const n = fs.readSync(fd, buf, 0, length, offset);
      const h = n === length ? sha256(buf.subarray(0, length)) : undefined;
      if (h?.equals(planChunkHash(plan, i))) ok += length;
      else bitmap.clear(i);
    }
    return ok;
  }

  private persist(digest: Digest, bitmap: Bitmap): void {
    this.opts.db
      .prepare('UPDATE transport_transfers SET bitmap = ?, updated_at = ? WHERE digest = ?')
      .run(bitmap.bits, Date.now(), digest);
  }

  private onFrame(buf: Buffer, fromStream: boolean): void {
    const d = decodeFrame(buf);
    if (!d.ok) {
      this.stats.rejectedFrames++;
      this.opts.log.warn({ reason: d.reason, bytes: buf.length }, 'rejected chunk frame');
      return;
    }
    const f = d.frame;
    const t = this.active.get(f.digest);
    if (!t) return; // a stream or a late re-send for a blob not (or no longer) wanted
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
      if (t.inflight.has(f.index)) {
        t.inflight.delete(f.index);
        t.retry.push(f.index);
        this.pump(t);
      }
      return;
    }
    if (fromStream) {
      t.lastStreamFrame = Date.now();
      this.stats.streamBytes += f.payload.length;
    }
    t.inflight.delete(f.index);
    if (t.bitmap.has(f.index)) {
      this.stats.duplicateBytes += f.payload.length;
    } else {
      try {
        fs.writeSync(t.fd, f.payload, 0, f.payload.length, f.offset);
        t.bitmap.set(f.index);
        this.persist(f.digest, t.bitmap);
      } catch (err) {
        // Disk full (file or database): asking for the chunk again would fail the same way, forever.
        t.failed ??= withContext(`storing chunk ${f.index} of ${f.digest}`, err);
        t.wake?.();
        return;
      }
      if (f.index === t.hashedChunks) {
        t.hasher.update(f.payload);
        t.hashedChunks++;
        this.hashAhead(t);
      }
      this.stats.receivedBytes += f.payload.length;
      t.done += f.payload.length;
      t.onProgress?.(t.done, t.plan.size);
    }
    if (t.done === t.plan.size) t.wake?.();
    else if (this.window - t.inflight.size >= Math.max(1, this.window >> 2)) this.pump(t);
  }

  /**
   * Feed the running blob hash with chunks already on disk that now follow the hashed prefix (they
   * arrived out of order). Chunks mostly arrive in order, so this rarely reads anything.
   */
  private hashAhead(t: Transfer): void {
    const p = t.plan;
    let buf: Buffer | undefined;
    while (t.hashedChunks < t.bitmap.count && t.bitmap.has(t.hashedChunks)) {
      const { offset, length } = chunkRange(p.size, p.chunkSize, t.hashedChunks);
      buf ??= Buffer.allocUnsafe(p.chunkSize);
      const n = fs.readSync(t.fd, buf, 0, length, offset);
      if (n !== length) throw corrupt(`short read of ${t.file} at ${offset}`);
      t.hasher.update(buf.subarray(0, length));
      t.hashedChunks++;
    }
  }

  private frameMatchesPlan(t: Transfer, f: Frame, buf: Buffer): boolean {
    const p = t.plan;
    if (f.chunkSize !== p.chunkSize || f.index >= t.bitmap.count) return false;
    const { offset, length } = chunkRange(p.size, p.chunkSize, f.index);
    if (f.offset !== offset || f.payload.length !== length) return false;
    return frameChunkHash(buf).equals(planChunkHash(p, f.index));
  }

  private async fanoutPhase(t: Transfer): Promise<void> {
    const topic = fanoutTopic(this.opts.fleet, t.plan.digest);
    await this.opts.conn.subscribe(topic, 0);
    try {
      let r: Reply;
      try {
        r = await this.request(
          { kind: 'want', digest: t.plan.digest, chunkSize: t.plan.chunkSize },
          (r) => r.kind === 'fanout' && r.digest === t.plan.digest,
          3000,
          2,
        );
      } catch (err) {
        this.opts.log.debug({ err: errorMessage(err) }, 'no fan-out answer; unicast');
        return;
      }
      if (r.kind !== 'fanout' || r.mode !== 'stream') return;
      t.lastStreamFrame = Date.now();
      // Passive: take the stream until it ends, stalls, or gives us everything.
      while (
        !this.stopped &&
        !t.failed &&
        !t.streamEnded &&
        t.done < t.plan.size &&
        Date.now() - t.lastStreamFrame < 3000
      ) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 500);
          t.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        t.wake = undefined;
      }
    } finally {
      this.opts.conn.unsubscribe(topic);
    }
  }

  private async unicastPhase(t: Transfer): Promise<void> {
    t.cursor = 0;
    t.unicast = true;
    this.pump(t);
    while (t.done < t.plan.size) {
      if (this.stopped) throw unavailable('blob fetcher stopped');
      if (t.failed) throw t.failed;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        t.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      t.wake = undefined;
      this.pump(t);
    }
  }

  /** Top the window up with requests for chunks neither present nor in flight. */
  private pump(t: Transfer): void {
    if (!t.unicast || t.failed || t.done >= t.plan.size || !this.opts.conn.connected) return;
    const want: number[] = [];
    while (t.inflight.size + want.length < this.window) {
      let i: number | undefined = t.retry.shift();
      if (i === undefined) {
        while (t.cursor < t.bitmap.count && (t.bitmap.has(t.cursor) || t.inflight.has(t.cursor))) t.cursor++;
        if (t.cursor >= t.bitmap.count) break;
        i = t.cursor++;
      }
      if (t.bitmap.has(i) || t.inflight.has(i) || want.includes(i)) continue;
      want.push(i);
    }
    if (want.length === 0) {
      // Nothing left to ask for but the blob is incomplete: rescan from the start on the next tick.
      if (t.inflight.size === 0) t.cursor = 0;
      return;
    }
    const now = Date.now();
    for (const i of want) t.inflight.set(i, now);
    for (let k = 0; k < want.length; k += 64) {
      const indexes = want.slice(k, k + 64);
      const payload = encodeJson({
        v: 1,
        kind: 'chunks',
        reqId: randomBytes(4).toString('hex'),
        digest: t.plan.digest,
        chunkSize: t.plan.chunkSize,
        indexes,
      });
      this.opts.conn.publish(this.reqTopic, payload, { qos: 1 }).catch(() => {
        // Offline: these go back to the queue and are asked again after reconnect.
        for (const i of indexes) {
          if (t.inflight.delete(i)) t.retry.push(i);
        }
      });
    }
  }

  private requeueInflight(t: Transfer): void {
    for (const i of t.inflight.keys()) {
      t.retry.push(i);
      this.stats.rerequests++;
    }
    t.inflight.clear();
    this.pump(t);
  }

  private tick(): void {
    const now = Date.now();
    for (const t of this.active.values()) {
      let expired = false;
      for (const [i, sent] of t.inflight) {
        if (now - sent > this.requestTimeoutMs) {
          t.inflight.delete(i);
          t.retry.push(i);
          this.stats.rerequests++;
          expired = true;
        }
      }
      if (expired || t.inflight.size === 0) this.pump(t);
    }
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function sha256(b: Buffer): Buffer {
  return createHash('sha256').update(b).digest();
}
