import * as tar from 'tar-stream';

/** One tar entry for a test layer; content is for regular files. */
export type TarEntry = Partial<tar.Header> & { name: string; content?: string | Buffer };

/** Build an uncompressed layer tar in memory with tar-stream (the corpus of the safety tests). */
export async function makeTar(entries: readonly TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    pack.on('data', (c: unknown) => chunks.push(c as Buffer));
    pack.on('end', () => resolve(Buffer.concat(chunks)));
    pack.on('error', reject);
  });
  for (const e of entries) {
    const { content, ...header } = e;
    const body = content === undefined ? undefined : Buffer.from(content);
    const h: Parameters<tar.Pack['entry']>[0] = {
      mode: header.type === 'directory' ? 0o755 : 0o644,
      mtime: new Date(1_700_000_000_000),
      uid: 0,
      gid: 0,
      ...header,
      ...(body ? { size: body.length } : {}),
    };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (body) pack.entry(h, body, cb);
      else pack.entry(h, cb);
    });
  }
  pack.finalize();
  return done;
}
