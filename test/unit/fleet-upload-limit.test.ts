/**
 * The API's upload limit (src/fleet/api/routes/changes.ts limitStream): an upload whose first chunk is
 * already over the limit, before anything reads it, must fail the read with InvalidInput — not raise an
 * uncaught 'error' that takes the fleet server down (seen in CI: `body: larger than the 65536 byte upload
 * limit` as an uncaught exception).
 */
import { PassThrough } from 'node:stream';
import test from 'ava';
import { limitStream } from '../../src/fleet/api/routes/changes.js';

test('an upload over the limit before anyone reads it fails the read, and nothing is thrown', async (t) => {
  const src = new PassThrough();
  const limited = limitStream(src, 1024);
  src.write(Buffer.alloc(4096));
  // let the chunk reach the limiter while nobody is reading yet
  await new Promise((r) => setTimeout(r, 50));
  const read = async () => {
    for await (const _ of limited) {
      // drain
    }
  };
  await t.throwsAsync(read, { code: 'InvalidInput', message: /larger than the 1024 byte upload limit/ });
});

test('an upload within the limit passes through unchanged', async (t) => {
  const src = new PassThrough();
  const limited = limitStream(src, 1024);
  src.end(Buffer.from('x'.repeat(1000)));
  let n = 0;
  for await (const c of limited) n += (c as Buffer).length;
  t.is(n, 1000);
});
