import { Worker } from 'node:worker_threads';
import { BerthError, codeForErrno, type ErrorCode } from '../lib/errors.js';
import type { Digest } from '../oci/digest.js';

/**
 * Where a device's blob bytes are hashed and written: a worker thread, so the event loop that reads
 * the MQTT socket never spends its time in sha256 or in write(2). Per chunk the worker hashes the
 * payload, compares it with the signed plan's hash for that index (the main thread has already checked
 * everything else about the frame), writes it at its offset, and feeds the whole-blob sha256 with every
 * chunk that extends the in-order prefix (chunks that came early are read back once the prefix reaches
 * them). On resume it re-reads and re-checks the chunks the persisted bitmap counts, off the main thread
 * too. `finish` hashes whatever the prefix still lacks, fsyncs and closes, and returns the digest the
 * content store checks at commit.
 *
 * One worker serves every transfer of a fetcher (transfers are keyed by id); it is started on the
 * first `open` and ended by `close()` of the writer (or after a quiet spell, so an idle agent holds no
 * extra isolate). The worker is plain JavaScript run with `eval`, so the bundle and the packaged
 * executable carry it without a second file; it uses node built-ins only.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const crypto = require('node:crypto');
const transfers = new Map();
const has = (bits, i) => (bits[i >> 3] & (1 << (i & 7))) !== 0;
const set = (bits, i) => { bits[i >> 3] |= 1 << (i & 7); };
const clear = (bits, i) => { bits[i >> 3] &= ~(1 << (i & 7)); };
function range(t, i) {
  const offset = i * t.chunkSize;
  return { offset, length: Math.max(0, Math.min(t.chunkSize, t.size - offset)) };
}
function readChunk(t, i) {
  const { offset, length } = range(t, i);
  t.buf = t.buf && t.buf.length >= t.chunkSize ? t.buf : Buffer.allocUnsafe(t.chunkSize);
  const n = fs.readSync(t.fd, t.buf, 0, length, offset);
  if (n !== length) throw Object.assign(new Error('short read of ' + t.file + ' at ' + offset), { code: 'EIO' });
  return t.buf.subarray(0, length);
}
function hashAhead(t) {
  while (t.hashed < t.count && has(t.bits, t.hashed)) {
    t.hasher.update(readChunk(t, t.hashed));
    t.hashed++;
  }
}
const ops = {
  open(m) {
    const fd = fs.openSync(m.file, m.create ? 'w+' : 'r+');
    if (m.create) fs.ftruncateSync(fd, m.size);
    const count = m.size === 0 ? 0 : Math.ceil(m.size / m.chunkSize);
    transfers.set(m.id, { fd, file: m.file, size: m.size, chunkSize: m.chunkSize, count,
      bits: new Uint8Array(Math.ceil(count / 8)), hasher: crypto.createHash('sha256'), hashed: 0, buf: undefined });
    return {};
  },
  verify(m) {
    const t = transfers.get(m.id);
    const hashes = Buffer.from(m.hashes);
    const bits = new Uint8Array(m.bits);
    let ok = 0;
    for (let i = 0; i < t.count; i++) {
      if (!has(bits, i)) continue;
      let good = false;
      try {
        const b = readChunk(t, i);
        good = crypto.createHash('sha256').update(b).digest().equals(hashes.subarray(i * 32, i * 32 + 32));
        if (good) ok += b.length;
      } catch {}
      if (good) set(t.bits, i); else clear(bits, i);
    }
    hashAhead(t);
    return { bits, ok };
  },
  chunk(m) {
    const t = transfers.get(m.id);
    const data = Buffer.from(m.data, m.start, m.length);
    const h = crypto.createHash('sha256').update(data).digest();
    if (!h.equals(Buffer.from(m.hash))) return { ok: false };
    let off = 0;
    while (off < data.length) off += fs.writeSync(t.fd, data, off, data.length - off, m.offset + off);
    set(t.bits, m.index);
    if (m.index === t.hashed) {
      t.hasher.update(data);
      t.hashed++;
      hashAhead(t);
    }
    return { ok: true };
  },
  finish(m) {
    const t = transfers.get(m.id);
    hashAhead(t);
    const complete = t.hashed === t.count;
    fs.fsyncSync(t.fd);
    fs.closeSync(t.fd);
    transfers.delete(m.id);
    return { digest: complete ? 'sha256:' + t.hasher.digest('hex') : undefined };
  },
  close(m) {
    const t = transfers.get(m.id);
    if (t) { try { fs.closeSync(t.fd); } catch {} transfers.delete(m.id); }
    return {};
  },
};
parentPort.on('message', (m) => {
  let reply;
  try {
    reply = ops[m.op](m);
  } catch (err) {
    reply = { error: { errno: err && err.code, message: String(err && err.message || err) } };
  }
  reply.seq = m.seq;
  parentPort.postMessage(reply, reply.bits ? [reply.bits.buffer] : []);
});
`;

interface Reply {
  seq: number;
  error?: { errno?: string; message: string };
  ok?: boolean | number;
  bits?: Uint8Array;
  digest?: Digest;
}

export class ChunkWriter {
  private worker: Worker | undefined;
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private open = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  /** `idleMs`: end the worker after this long with no transfer open. */
  constructor(private readonly opts: { idleMs?: number } = {}) {}

  private call(msg: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<Reply> {
    const w = this.ensureWorker();
    const seq = ++this.seq;
    if (this.pending.size === 0) w.ref();
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      w.postMessage({ ...msg, seq }, transfer);
    }).then((r) => {
      if (r.error) {
        const code: ErrorCode = r.error.errno ? codeForErrno(r.error.errno) : 'Internal';
        throw new BerthError(code, `chunk writer: ${r.error.message}`);
      }
      return r;
    });
  }

  private ensureWorker(): Worker {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (this.worker) return this.worker;
    const w = new Worker(WORKER_SOURCE, { eval: true, stdout: false, stderr: false });
    w.unref();
    w.on('message', (r: Reply) => {
      const p = this.pending.get(r.seq);
      if (!p) return;
      this.pending.delete(r.seq);
      if (this.pending.size === 0) w.unref();
      p.resolve(r);
    });
    const fail = (err: Error) => {
      if (this.worker === w) this.worker = undefined;
      for (const p of this.pending.values())
        p.reject(new BerthError('Internal', `chunk writer died: ${err.message}`));
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`exit ${code}`)));
    this.worker = w;
    return w;
  }

  /** Open (or create, sized) the ingest file of one transfer; returns its id. */
  async openFile(file: string, size: number, chunkSize: number, create: boolean): Promise<number> {
    const id = ++this.nextId;
    this.open++;
    try {
      await this.call({ op: 'open', id, file, size, chunkSize, create });
    } catch (err) {
      this.released();
      throw err;
    }
    return id;
  }

  /** Re-read the chunks `bits` marks; returns the bits whose bytes match the plan (and their bytes). */
  async verify(id: number, hashes: Buffer, bits: Buffer): Promise<{ bits: Buffer; okBytes: number }> {
    const r = await this.call({
      op: 'verify',
      id,
      hashes: new Uint8Array(hashes),
      bits: new Uint8Array(bits),
    });
    return { bits: Buffer.from(r.bits!), okBytes: Number(r.ok) };
  }

  /**
   * Hash the `length` bytes at `start` of `frame`, compare with `hash` (the plan's), write them at
   * `offset`. False: the bytes are not the plan's (nothing written). With `give`, a caller whose frame
   * owns its whole ArrayBuffer (an MQTT message of a few hundred KiB does) hands it over: it moves to
   * the worker without a copy and is unusable here afterwards. Anything else is copied.
   */
  async write(
    id: number,
    index: number,
    offset: number,
    hash: Buffer,
    frame: Buffer,
    start: number,
    length: number,
    give = false,
  ): Promise<boolean> {
    const whole = frame.buffer;
    let data: ArrayBuffer;
    let at: number;
    if (give && whole instanceof ArrayBuffer && frame.byteOffset === 0 && frame.length === whole.byteLength) {
      data = whole;
      at = start;
    } else {
      data = new ArrayBuffer(length);
      new Uint8Array(data).set(frame.subarray(start, start + length));
      at = 0;
    }
    const h = new Uint8Array(32);
    h.set(hash);
    const r = await this.call({ op: 'chunk', id, index, offset, hash: h, data, start: at, length }, [data]);
    return r.ok === true;
  }

  /** fsync and close; the sha256 of the whole file when every chunk was hashed in order. */
  async finish(id: number): Promise<Digest | undefined> {
    try {
      return (await this.call({ op: 'finish', id })).digest;
    } finally {
      this.released();
    }
  }

  /** Close without finishing (the transfer failed or stopped; the file stays for a resume). */
  async release(id: number): Promise<void> {
    try {
      if (this.worker) await this.call({ op: 'close', id });
    } finally {
      this.released();
    }
  }

  private released(): void {
    this.open = Math.max(0, this.open - 1);
    if (this.open > 0 || !this.worker) return;
    const w = this.worker;
    this.idleTimer = setTimeout(() => {
      if (this.open === 0 && this.worker === w) void this.close();
    }, this.opts.idleMs ?? 10_000);
    this.idleTimer.unref();
  }

  async close(): Promise<void> {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
  }
}
