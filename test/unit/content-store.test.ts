import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import test from 'ava';
import { ContentStore } from '../../src/content/store.js';
import { type Digest, sha256Digest } from '../../src/oci/digest.js';

const newStore = () => new ContentStore(mkdtempSync(path.join(tmpdir(), 'berth-cs-')));

test('put then get returns the same bytes under their digest', async (t) => {
  const s = newStore();
  const info = await s.put('hello');
  t.is(info.digest, sha256Digest('hello'));
  t.true(await s.has(info.digest));
  t.is((await s.get(info.digest)).toString(), 'hello');
  t.is((await s.info(info.digest)).size, 5);
});

test('a stream whose bytes do not match the expected digest never becomes present', async (t) => {
  const s = newStore();
  const expected = sha256Digest('good bytes');
  const err = await t.throwsAsync(s.putStream(Readable.from([Buffer.from('bad bytes')]), { expected }));
  t.is((err as { code?: string }).code, 'Corrupt');
  t.false(await s.has(expected));
  t.deepEqual(readdirSync(s.ingestDir), [], 'temp file removed');
});

test('a size mismatch is reported before the digest', async (t) => {
  const s = newStore();
  const data = Buffer.from('0123456789');
  const err = await t.throwsAsync(
    s.putStream(Readable.from([data]), { expected: sha256Digest(data), size: 4 }),
  );
  t.regex(err!.message, /larger than its declared size 4/);
});

test('concurrent writers of the same digest are safe', async (t) => {
  const s = newStore();
  const data = Buffer.alloc(3 * 1024 * 1024, 7);
  const expected = `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
  const chunks = () => Readable.from([data.subarray(0, 1 << 20), data.subarray(1 << 20)]);
  const results = await Promise.all(Array.from({ length: 8 }, () => s.putStream(chunks(), { expected })));
  t.true(results.every((r) => r.digest === expected));
  await t.notThrowsAsync(s.verify(expected));
  t.deepEqual(readdirSync(s.ingestDir), []);
});

test('walk lists blobs and skips foreign files; delete removes', async (t) => {
  const s = newStore();
  const a = await s.put('a');
  const b = await s.put('b');
  writeFileSync(path.join(s.blobsDir, 'not-a-digest'), 'x');
  const seen: string[] = [];
  for await (const blob of s.walk()) seen.push(blob.digest);
  t.deepEqual(seen.sort(), [a.digest, b.digest].sort());
  t.true(await s.delete(a.digest));
  t.false(await s.has(a.digest));
  t.false(await s.delete(a.digest));
});

test('verify removes a blob damaged on disk', async (t) => {
  const s = newStore();
  const a = await s.put('original');
  writeFileSync(s.blobPath(a.digest), 'tampered');
  const err = await t.throwsAsync(s.verify(a.digest));
  t.is((err as { code?: string }).code, 'Corrupt');
  t.false(await s.has(a.digest));
});

test('a resumable ingest file is adopted only when it verifies', async (t) => {
  const s = newStore();
  const good = await s.ingestPath('pull-1');
  writeFileSync(good, 'complete content');
  const info = await s.commitIngestFile(good, sha256Digest('complete content'), 16);
  t.true(await s.has(info.digest));
  const bad = await s.ingestPath('pull-2');
  writeFileSync(bad, 'partial');
  await t.throwsAsync(s.commitIngestFile(bad, sha256Digest('partial content!'), 16), {
    message: /7 bytes, expected 16/,
  });
  t.false(await s.has(sha256Digest('partial content!')));
  t.throws(() => s.blobPath('sha256:../../etc' as Digest), { message: /invalid digest/ });
  await t.throwsAsync(s.ingestPath('../escape'), { message: /invalid ingest name/ });
});
