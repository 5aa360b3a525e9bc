import type { Digest } from '../oci/digest.js';

/**
 * Chunk geometry and progress bitmaps (pure). A blob of `size` bytes is cut into chunks of `chunkSize`
 * (the last one shorter). The chunk plan is the list of each chunk's sha256, computed by the fleet server
 * from the stored blob and signed with the fleet key, so a device can check every chunk on arrival and
 * never needs to rehash the whole blob to find which chunk was bad.
 */
export const MIN_CHUNK = 16 * 1024;
export const MAX_CHUNK = 1024 * 1024;
/** Allowance for the MQTT fixed header, topic, properties and our frame header inside one packet. */
export const PACKET_OVERHEAD = 1024;

export function chunkCount(size: number, chunkSize: number): number {
  return size === 0 ? 0 : Math.ceil(size / chunkSize);
}

export function chunkRange(
  size: number,
  chunkSize: number,
  index: number,
): { offset: number; length: number } {
  const offset = index * chunkSize;
  return { offset, length: Math.max(0, Math.min(chunkSize, size - offset)) };
}

/** The largest power-of-two chunk in [MIN_CHUNK, MAX_CHUNK] whose frame fits in `maxPacket` bytes. */
export function chunkSizeFor(maxPacket: number): number {
  let c = MAX_CHUNK;
  while (c > MIN_CHUNK && c + PACKET_OVERHEAD > maxPacket) c /= 2;
  return c;
}

export function isValidChunkSize(c: number): boolean {
  return Number.isInteger(c) && c >= MIN_CHUNK && c <= MAX_CHUNK && (c & (c - 1)) === 0;
}

export class Bitmap {
  readonly bits: Buffer;
  constructor(
    readonly count: number,
    bits?: Uint8Array,
  ) {
    const len = Math.ceil(count / 8);
    this.bits = Buffer.alloc(len);
    if (bits && bits.length === len) Buffer.from(bits).copy(this.bits);
  }
  has(i: number): boolean {
    return (this.bits[i >> 3]! & (1 << (i & 7))) !== 0;
  }
  set(i: number): void {
    this.bits[i >> 3]! |= 1 << (i & 7);
  }
  clear(i: number): void {
    this.bits[i >> 3]! &= ~(1 << (i & 7));
  }
  cardinality(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) if (this.has(i)) n++;
    return n;
  }
  complete(): boolean {
    return this.cardinality() === this.count;
  }
  /** Indexes not yet present, in order. */
  *missing(): Generator<number> {
    for (let i = 0; i < this.count; i++) if (!this.has(i)) yield i;
  }
}

export interface ChunkPlan {
  digest: Digest;
  size: number;
  chunkSize: number;
  /** sha256 of each chunk, concatenated (32 bytes each). */
  hashes: Buffer;
}

/** The exact bytes the fleet key signs for a plan: domain tag, digest, size, chunk size, hashes. */
export function planSigningBytes(p: ChunkPlan): Buffer {
  const head = Buffer.alloc(8 + 4);
  head.writeBigUInt64BE(BigInt(p.size), 0);
  head.writeUInt32BE(p.chunkSize, 8);
  return Buffer.concat([Buffer.from(`berth-chunk-plan-v1\0${p.digest}\0`, 'utf8'), head, p.hashes]);
}

export function planChunkHash(p: ChunkPlan, index: number): Buffer {
  return p.hashes.subarray(index * 32, index * 32 + 32);
}

export function planIsWellFormed(p: ChunkPlan): boolean {
  return (
    isValidChunkSize(p.chunkSize) &&
    Number.isSafeInteger(p.size) &&
    p.size >= 0 &&
    p.hashes.length === chunkCount(p.size, p.chunkSize) * 32
  );
}
