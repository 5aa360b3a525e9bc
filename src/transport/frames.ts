import { createHash } from 'node:crypto';
import type { Digest } from '../oci/digest.js';

/**
 * Binary frames for blob bytes (pure). One MQTT message = one frame:
 *
 *   offset size  field
 *   0      4     magic "BRTF"
 *   4      1     frame version (1)
 *   5      1     type: 1 = chunk, 2 = end of a fan-out stream
 *   6      2     flags (0; reserved)
 *   8      32    blob digest (raw sha256)
 *   40     8     byte offset of the payload in the blob (u64 BE)
 *   48     4     payload length (u32 BE)
 *   52     4     chunk index (u32 BE)
 *   56     4     chunk size of the plan this chunk belongs to (u32 BE)
 *   60     32    sha256 of the payload
 *   92     ...   payload
 *
 * The frame hash catches damage in transit; the signed chunk plan (see plan.ts) catches well-formed
 * frames with foreign bytes. All integers big-endian.
 */
export const FRAME_MAGIC = Buffer.from('BRTF', 'latin1');
const MAGIC_U32 = FRAME_MAGIC.readUInt32BE(0);
export const FRAME_VERSION = 1;
export const FRAME_HEADER_SIZE = 92;

export const FrameType = { Chunk: 1, StreamEnd: 2 } as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

export interface Frame {
  type: FrameTypeValue;
  digest: Digest;
  offset: number;
  index: number;
  chunkSize: number;
  payload: Buffer;
}

/** Encode a frame; `hash` (the payload's sha256, e.g. from the chunk plan) saves hashing it again. */
export function encodeFrame(f: Frame, hash?: Buffer): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE + f.payload.length);
  f.payload.copy(out, FRAME_HEADER_SIZE);
  writeFrameHeader(out, f, f.payload.length, hash ?? createHash('sha256').update(f.payload).digest());
  return out;
}

/**
 * Write the header of a frame whose `length` payload bytes already sit at `FRAME_HEADER_SIZE` in `out`
 * (the fleet reads chunks straight into a frame buffer: no second copy of the payload).
 */
export function writeFrameHeader(out: Buffer, f: Omit<Frame, 'payload'>, length: number, hash: Buffer): void {
  FRAME_MAGIC.copy(out, 0);
  out.writeUInt8(FRAME_VERSION, 4);
  out.writeUInt8(f.type, 5);
  out.writeUInt16BE(0, 6);
  out.write(f.digest.slice(7), 8, 32, 'hex');
  out.writeBigUInt64BE(BigInt(f.offset), 40);
  out.writeUInt32BE(length, 48);
  out.writeUInt32BE(f.index, 52);
  out.writeUInt32BE(f.chunkSize, 56);
  hash.copy(out, 60, 0, 32);
}

export type DecodeResult = { ok: true; frame: Frame } | { ok: false; reason: string };

/**
 * Decode a frame's header and check its shape; the payload is a view into `buf` (no copy) and is NOT
 * hashed: a receiver holding the signed plan compares the header's hash with the plan's and has the
 * payload hashed off the main thread (blob-fetcher.ts). Never throws.
 */
export function decodeFrameHeader(buf: Buffer): DecodeResult {
  if (!Buffer.isBuffer(buf) || buf.length < FRAME_HEADER_SIZE) return { ok: false, reason: 'short frame' };
  if (buf.readUInt32BE(0) !== MAGIC_U32) return { ok: false, reason: 'bad magic' };
  const version = buf.readUInt8(4);
  if (version !== FRAME_VERSION) return { ok: false, reason: `unsupported frame version ${version}` };
  const type = buf.readUInt8(5);
  if (type !== FrameType.Chunk && type !== FrameType.StreamEnd)
    return { ok: false, reason: `unknown frame type ${type}` };
  const offset = buf.readBigUInt64BE(40);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, reason: 'offset out of range' };
  const length = buf.readUInt32BE(48);
  if (length !== buf.length - FRAME_HEADER_SIZE)
    return { ok: false, reason: `length ${length} does not match payload ${buf.length - FRAME_HEADER_SIZE}` };
  return {
    ok: true,
    frame: {
      type: type as FrameTypeValue,
      digest: `sha256:${buf.toString('hex', 8, 40)}`,
      offset: Number(offset),
      index: buf.readUInt32BE(52),
      chunkSize: buf.readUInt32BE(56),
      payload: buf.subarray(FRAME_HEADER_SIZE),
    },
  };
}

/** Decode and check a frame, its payload hashed against the header's hash. Never throws. */
export function decodeFrame(buf: Buffer): DecodeResult {
  const d = decodeFrameHeader(buf);
  if (!d.ok) return d;
  const hash = createHash('sha256').update(d.frame.payload).digest();
  if (!hash.equals(buf.subarray(60, 92))) return { ok: false, reason: 'chunk hash mismatch' };
  return d;
}

/** sha256 of a frame's payload as carried in its header (for checking against a plan without rehashing). */
export function frameChunkHash(buf: Buffer): Buffer {
  return buf.subarray(60, 92);
}
