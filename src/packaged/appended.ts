/**
 * The packaged executable's native parts ride after the end of the ELF file, not inside the JS bundle: a
 * 4–5 MiB base64 literal in the bundle was read, compiled and kept on the heap by every start (measured:
 * +23 MiB RSS and +~0.1 s CPU for `berth version`). scripts/packaging/bundle.mjs appends them after pkg or
 * postject made the executable; the kernel and Node ignore bytes past the last segment.
 *
 * Layout at the end of the file: <data> <MAGIC (16 bytes)> <length of data, u64 little-endian>.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { BerthError } from '../lib/errors.js';

export const APPENDED_MAGIC = 'BERTH-PAYLOAD-v1';
export const FOOTER_SIZE = 24;

function readAt(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return buf.subarray(0, done);
}

/** `size` bytes at `offset` of the data appended to `file` (the running executable). */
export function readAppended(file: string, offset: number, size: number): Buffer {
  const damaged = (why: string) =>
    new BerthError('Corrupt', `${file}: the embedded native parts are damaged (${why}); reinstall berth`);
  const fd = openSync(file, 'r');
  try {
    const total = fstatSync(fd).size;
    if (total < FOOTER_SIZE) throw damaged('no payload footer');
    const footer = readAt(fd, FOOTER_SIZE, total - FOOTER_SIZE);
    if (footer.subarray(0, 16).toString('latin1') !== APPENDED_MAGIC)
      throw damaged('no payload footer: was the executable stripped?');
    const length = Number(footer.readBigUInt64LE(16));
    const start = total - FOOTER_SIZE - length;
    if (start < 0 || offset < 0 || size < 0 || offset + size > length) throw damaged('payload out of bounds');
    const bytes = readAt(fd, size, start + offset);
    if (bytes.length !== size) throw damaged('short read');
    return bytes;
  } finally {
    closeSync(fd);
  }
}
