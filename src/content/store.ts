import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp, type ReadStream } from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { fsyncDir } from '../lib/atomic.js';
import { BerthError, corrupt, notFound, withContext } from '../lib/errors.js';
import { type Digest, digestHex, isDigest, parseDigest } from '../oci/digest.js';

export interface BlobInfo {
  digest: Digest;
  size: number;
  /** Set by put/putStream: true when this call made the blob present (it was not there before). */
  created?: boolean;
}

export interface PutOptions {
  /** The digest the bytes must have; a mismatch throws Corrupt and nothing becomes present. */
  expected?: Digest | undefined;
  /** The size the bytes must have (checked before the digest, for a clearer error). */
  size?: number | undefined;
}

/**
 * Blobs by sha256 digest under `<root>/blobs/sha256/<hex>`, the OCI image-layout shape.
 *
 * Invariant: a file under blobs/ always matches its name. Writers stream into `<root>/ingest/` while
 * hashing, fsync, check digest and size, then rename into place (atomic on one filesystem) and fsync
 * the directory. Concurrent writers of one digest each use their own temp file; whichever rename lands
 * last replaces identical bytes, so readers never see a partial or foreign blob. A crash leaves only
 * temp files in ingest/, which `cleanIngest` removes.
 */
export class ContentStore {
  readonly blobsDir: string;
  readonly ingestDir: string;
  private ready: Promise<void> | undefined;

  constructor(readonly root: string) {
    this.blobsDir = path.join(root, 'blobs', 'sha256');
    this.ingestDir = path.join(root, 'ingest');
  }

  private ensureDirs(): Promise<void> {
    if (!this.ready) {
      this.ready = (async () => {
        await fsp.mkdir(this.blobsDir, { recursive: true });
        await fsp.mkdir(this.ingestDir, { recursive: true });
      })();
    }
    return this.ready;
  }

  /** Path of a blob (it may not exist). */
  blobPath(digest: Digest): string {
    return path.join(this.blobsDir, digestHex(parseDigest(digest)));
  }

  async has(digest: Digest): Promise<boolean> {
    try {
      const st = await fsp.stat(this.blobPath(digest));
      return st.isFile();
    } catch {
      return false;
    }
  }

  async info(digest: Digest): Promise<BlobInfo> {
    try {
      const st = await fsp.stat(this.blobPath(digest));
      return { digest, size: st.size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw notFound(`blob ${digest} is not in the content store`);
      throw withContext(`stat blob ${digest}`, err);
    }
  }

  async get(digest: Digest): Promise<Buffer> {
    try {
      return await fsp.readFile(this.blobPath(digest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw notFound(`blob ${digest} is not in the content store`);
      throw withContext(`read blob ${digest}`, err);
    }
  }

  /** A read stream over a blob, optionally a byte range [start, end] inclusive. */
  async reader(digest: Digest, range?: { start: number; end: number }): Promise<ReadStream> {
    await this.info(digest);
    return createReadStream(this.blobPath(digest), range);
  }

  /** Store bytes already in memory. */
  async put(data: Uint8Array | string, opts: PutOptions = {}): Promise<BlobInfo> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;
    checkExpected(digest, bytes.length, opts);
    if (await this.has(digest)) return { digest, size: bytes.length, created: false };
    await this.ensureDirs();
    const tmp = this.tempPath();
    try {
      const fh = await fsp.open(tmp, 'wx', 0o644);
      try {
        await fh.writeFile(bytes);
        await fh.sync();
      } finally {
        await fh.close();
      }
      const existed = await this.has(digest);
      await this.publish(tmp, digest);
      return { digest, size: bytes.length, created: !existed };
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw mapWriteError(err, digest);
    }
  }

  /** Store a stream: hashed while written, verified before it becomes visible. */
  async putStream(src: Readable, opts: PutOptions = {}): Promise<BlobInfo> {
    if (opts.expected && (await this.has(opts.expected))) {
      // Still drain and check the bytes, so a caller never mistakes bad input for success.
      const { digest, size } = await hashStream(src);
      checkExpected(digest, size, opts);
      return { digest, size, created: false };
    }
    await this.ensureDirs();
    const tmp = this.tempPath();
    const hash = createHash('sha256');
    let size = 0;
    try {
      const fh = await fsp.open(tmp, 'wx', 0o644);
      try {
        for await (const chunk of src) {
          const b = chunk as Buffer;
          size += b.length;
          if (opts.size !== undefined && size > opts.size) {
            throw corrupt(
              `blob ${opts.expected ?? ''} is larger than its declared size ${opts.size}`.replace('  ', ' '),
            );
          }
          hash.update(b);
          await fh.write(b);
        }
        await fh.sync();
      } finally {
        await fh.close();
      }
      const digest = `sha256:${hash.digest('hex')}` as Digest;
      checkExpected(digest, size, opts);
      const existed = await this.has(digest);
      await this.publish(tmp, digest);
      return { digest, size, created: !existed };
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw mapWriteError(err, opts.expected);
    }
  }

  /**
   * Adopt a file that a caller wrote into ingest/ (resumable transfers write chunks at offsets, then
   * commit). The file is fsynced, rehashed and renamed into place, or removed if it does not match.
   */
  async commitIngestFile(
    file: string,
    expected: Digest,
    size?: number,
    opts: { hashedAsWritten?: Digest } = {},
  ): Promise<BlobInfo> {
    try {
      const fh = await fsp.open(file, 'r+');
      let st: { size: number };
      try {
        await fh.sync();
        st = await fh.stat();
      } finally {
        await fh.close();
      }
      // A writer that hashed every byte in order as it wrote them (the MQTT fetcher) hands in that
      // digest; reading the whole file back would only check the page cache against itself.
      const got =
        opts.hashedAsWritten !== undefined
          ? { digest: opts.hashedAsWritten, size: st.size }
          : await hashStream(createReadStream(file));
      try {
        checkExpected(got.digest, got.size, { expected, size });
      } catch (err) {
        await fsp.rm(file, { force: true });
        throw err;
      }
      await this.publish(file, expected);
      return got;
    } catch (err) {
      throw mapWriteError(err, expected);
    }
  }

  /** A fresh path under ingest/ for a caller-managed (e.g. resumable) write. */
  async ingestPath(name: string): Promise<string> {
    await this.ensureDirs();
    if (!/^[A-Za-z0-9_.-]+$/.test(name) || name.startsWith('.'))
      throw new BerthError('InvalidInput', `invalid ingest name ${name}`);
    return path.join(this.ingestDir, name);
  }

  async delete(digest: Digest): Promise<boolean> {
    try {
      await fsp.unlink(this.blobPath(digest));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw withContext(`delete blob ${digest}`, err);
    }
  }

  /** Every blob present. Files whose names are not digests (foreign debris) are skipped. */
  async *walk(): AsyncGenerator<BlobInfo> {
    let names: string[];
    try {
      names = await fsp.readdir(this.blobsDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const name of names.sort()) {
      const digest = `sha256:${name}`;
      if (!isDigest(digest)) continue;
      try {
        const st = await fsp.stat(path.join(this.blobsDir, name));
        if (st.isFile()) yield { digest, size: st.size };
      } catch {
        /* deleted while walking */
      }
    }
  }

  /** Rehash a stored blob; a blob damaged on disk is removed and reported Corrupt. */
  async verify(digest: Digest): Promise<void> {
    const got = await hashStream(await this.reader(digest));
    if (got.digest !== digest) {
      await this.delete(digest);
      throw corrupt(`blob ${digest} was damaged on disk (hashes to ${got.digest}); removed`);
    }
  }

  /** Remove one-shot temp files left by a crash (resumable ingests, named by their owners, are kept). */
  async cleanIngest(): Promise<number> {
    await this.ensureDirs();
    let n = 0;
    for (const name of await fsp.readdir(this.ingestDir)) {
      if (name.startsWith('tmp-')) {
        await fsp.rm(path.join(this.ingestDir, name), { force: true });
        n++;
      }
    }
    return n;
  }

  private tempPath(): string {
    return path.join(this.ingestDir, `tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  }

  private async publish(tmp: string, digest: Digest): Promise<void> {
    await fsp.rename(tmp, this.blobPath(digest));
    await fsyncDir(this.blobsDir);
  }
}

function checkExpected(digest: Digest, size: number, opts: PutOptions): void {
  if (opts.size !== undefined && size !== opts.size) {
    throw corrupt(`blob ${opts.expected ?? digest} has ${size} bytes, expected ${opts.size}`);
  }
  if (opts.expected && digest !== opts.expected) {
    throw corrupt(`blob content hashes to ${digest}, expected ${opts.expected}`);
  }
}

function mapWriteError(err: unknown, digest: Digest | undefined): BerthError {
  if (err instanceof BerthError) return err;
  return withContext(`store blob${digest ? ` ${digest}` : ''}`, err);
}

export async function hashStream(src: Readable): Promise<BlobInfo> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of src) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}
