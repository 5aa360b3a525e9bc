import { existsSync, promises as fsp, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { exec } from '../../../src/lib/exec.js';
import { developmentNativePath } from '../../../src/lib/native.js';
import { needPrivileges } from '../../helpers/privileged.js';
import { freshSnapshotter, unpackTar } from '../../helpers/storage-fixture.js';

/**
 * The tar reader of the native extractor (native/storage/tar.c) on hand-made archives: what Go's
 * archive/tar and GNU tar read, it reads the same way; where readers disagree, or a layer would need
 * more than the bounds allow, it refuses (and the fallback refuses too, or cannot be fed such a tar).
 * Archives are built byte by byte here, so malformed headers can be made.
 */
interface RawEntry {
  name: string;
  type?: string; // one character
  size?: number; // the header's size field (defaults to the data's length)
  data?: Buffer;
  mode?: number;
  uid?: number | Buffer; // a Buffer is written raw (base-256)
  linkname?: string;
  magic?: 'ustar' | 'gnu' | 'v7';
  prefix?: string;
}

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, '0')}\0`;
}

function header(e: RawEntry): Buffer {
  const b = Buffer.alloc(512);
  b.write(e.name, 0, 100, 'utf8');
  b.write(octal(e.mode ?? 0o644, 8), 100);
  if (Buffer.isBuffer(e.uid)) e.uid.copy(b, 108);
  else b.write(octal(e.uid ?? 0, 8), 108);
  b.write(octal(0, 8), 116);
  b.write(octal(e.size ?? e.data?.length ?? 0, 12), 124);
  b.write(octal(1_700_000_000, 12), 136);
  b.write(e.type ?? '0', 156);
  if (e.linkname) b.write(e.linkname, 157, 100, 'utf8');
  const magic = e.magic ?? 'ustar';
  if (magic === 'ustar') b.write('ustar\x0000', 257, 'latin1');
  else if (magic === 'gnu') b.write('ustar  \x00', 257, 'latin1');
  if (e.prefix) b.write(e.prefix, 345, 155, 'utf8');
  b.fill(' ', 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

function pad(data: Buffer): Buffer {
  const rest = (512 - (data.length % 512)) % 512;
  return Buffer.concat([data, Buffer.alloc(rest)]);
}

function pax(records: Array<[string, string | Buffer]>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of records) {
    const body = Buffer.concat([Buffer.from(` ${k}=`), Buffer.from(v), Buffer.from('\n')]);
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    parts.push(Buffer.from(String(len)), body);
  }
  return Buffer.concat(parts);
}

function archive(...entries: RawEntry[]): Buffer {
  const out: Buffer[] = [];
  for (const e of entries) {
    out.push(header(e));
    if (e.data) out.push(pad(e.data));
  }
  out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}

/** Run berth-storage extract on `tar` into a fresh directory. */
async function extract(tar: Buffer, dir: string) {
  return exec(developmentNativePath('storage'), ['extract', dir], { input: tar, allowFailure: true });
}

function scratch(t: ExecutionContext): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'berth-extract-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

const EBADMSG = 74;
const EINVAL = 22;

test('what follows a lone zero block is corrupt, not silently applied or silently dropped', async (t) => {
  if (!needPrivileges(t, { root: true })) return;
  const dir = scratch(t);
  const tar = Buffer.concat([
    header({ name: 'a', data: Buffer.from('a') }),
    pad(Buffer.from('a')),
    Buffer.alloc(512), // one zero block…
    header({ name: 'hidden', data: Buffer.from('h') }), // …and an entry after it
    pad(Buffer.from('h')),
    Buffer.alloc(1024),
  ]);
  const r = await extract(tar, dir);
  t.is(r.code, EBADMSG, r.stderr);
  t.regex(r.stderr, /data after a zero block/);
  t.false(existsSync(path.join(dir, 'hidden')));
  // after the real end marker, trailing bytes are read (the pipe writer sees no EPIPE) and ignored
  const ok = await extract(
    Buffer.concat([archive({ name: 'b', data: Buffer.from('b') }), Buffer.alloc(8192, 7)]),
    dir,
  );
  t.is(ok.code, 0, ok.stderr);
  t.is(await fsp.readFile(path.join(dir, 'b'), 'utf8'), 'b');
});

test('a header-only entry with a size, an unknown type, a star prefix or a bad checksum fails the layer', async (t) => {
  if (!needPrivileges(t, { root: true })) return;
  const dir = scratch(t);
  const cases: Array<[Buffer, number, RegExp]> = [
    // readers disagree on whether 512 bytes of data follow a symlink header
    [
      Buffer.concat([
        header({ name: 'l', type: '2', linkname: 'x', size: 512 }),
        Buffer.alloc(512),
        Buffer.alloc(1024),
      ]),
      EBADMSG,
      /'2' entry cannot carry 512 bytes/,
    ],
    [archive({ name: 'v', type: 'V' }), EINVAL, /unsupported type 'V'/],
    [archive({ name: 'd', type: 'D' }), EINVAL, /unsupported type 'D'/],
    [
      (() => {
        const h = header({ name: 'x', data: Buffer.from('x') });
        h.write('tar\0', 508, 'latin1'); // star: its prefix field is shorter than ustar's
        h.write('pre', 345);
        h.fill(' ', 148, 156);
        let sum = 0;
        for (const c of h) sum += c;
        h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
        return Buffer.concat([h, pad(Buffer.from('x')), Buffer.alloc(1024)]);
      })(),
      EBADMSG,
      /star header with a name prefix/,
    ],
    [
      (() => {
        const a = archive({ name: 'c', data: Buffer.from('c') });
        a[0] = 'C'.charCodeAt(0);
        return a;
      })(),
      EBADMSG,
      /checksum/,
    ],
  ];
  for (const [tar, code, why] of cases) {
    const r = await extract(tar, dir);
    t.is(r.code, code, r.stderr);
    t.regex(r.stderr, why);
  }
});

test('PAX records: binary xattr values, owners beyond ustar, long names; global headers are not applied', async (t) => {
  if (!needPrivileges(t, { root: true })) return;
  const dir = scratch(t);
  const longName = `${'d'.repeat(200)}/${'f'.repeat(200)}`;
  const records = pax([
    ['path', longName],
    ['uid', '4000000'],
    ['mtime', '1234567890.25'],
    ['SCHILY.xattr.user.bin', Buffer.from([0xff, 0x00, 0xfe])],
  ]);
  const global = pax([['uid', '4242']]);
  const tar = archive(
    { name: 'pax_global_header', type: 'g', data: global },
    { name: 'g-file', data: Buffer.from('g') },
    { name: 'PaxHeaders/x', type: 'x', data: records },
    { name: 'short', data: Buffer.from('long') },
    // base-256 uid in the ustar field
    { name: 'b256', data: Buffer.from('b'), uid: Buffer.from([0x80, 0, 0, 0, 0, 0x3d, 0x09, 0x00]) },
  );
  const r = await extract(tar, dir);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /"entries":3/);
  const st = await fsp.stat(path.join(dir, longName));
  t.is(st.uid, 4_000_000);
  t.is(st.mtimeMs, 1_234_567_890_250);
  const x = await exec('getfattr', ['-e', 'hex', '-n', 'user.bin', path.join(dir, longName)]);
  t.regex(x.stdout, /user\.bin=0xff00fe/);
  t.is((await fsp.stat(path.join(dir, 'g-file'))).uid, 0, 'the global uid is not applied (as Go)');
  t.is((await fsp.stat(path.join(dir, 'b256'))).uid, 0x3d0900);
});

test('out-of-bounds and malformed extended headers are refused', async (t) => {
  if (!needPrivileges(t, { root: true })) return;
  const dir = scratch(t);
  const cases: Array<[Buffer, RegExp]> = [
    [
      archive({ name: 'p', type: 'x', data: Buffer.alloc(2 * 1024 * 1024, 0x31) }, { name: 'f' }),
      /exceeds the limit/,
    ],
    [
      archive({ name: 'p', type: 'x', data: Buffer.from('99 path=x\n') }, { name: 'f' }),
      /bad PAX record length/,
    ],
    [archive({ name: 'p', type: 'x', data: pax([['path', 'a\0b']]) }, { name: 'f' }), /NUL byte in PAX path/],
    [
      archive({ name: 'p', type: 'x', data: pax([['path', 'x'.repeat(70_000)]]) }, { name: 'f' }),
      /PAX path too long/,
    ],
    [
      archive(
        {
          name: 'p',
          type: 'x',
          data: pax([
            ['GNU.sparse.map', '0,10,5,10'], // overlapping segments
            ['GNU.sparse.size', '100'],
          ]),
        },
        { name: 's', data: Buffer.alloc(20) },
      ),
      /invalid sparse map/,
    ],
    [
      archive(
        {
          name: 'p',
          type: 'x',
          data: pax([
            ['GNU.sparse.map', '0,10'],
            ['GNU.sparse.size', '5'],
          ]),
        },
        { name: 's', data: Buffer.alloc(10) },
      ),
      /sparse map beyond the file size/,
    ],
    [
      archive({ name: 'L', type: 'L', data: Buffer.from('x') }),
      /unexpected end of data after an extended header/,
    ],
  ];
  for (const [tar, why] of cases) {
    const r = await extract(tar, dir);
    t.is(r.code, EBADMSG, `${why}: ${r.stderr}`);
    t.regex(r.stderr, why);
  }
});

test('a size on a link header fails the layer with the fallback unpacker too', async (t) => {
  if (!needPrivileges(t, { root: true })) return;
  const fx = await freshSnapshotter('overlay');
  t.teardown(() => fx.cleanup());
  const tar = Buffer.concat([
    header({ name: 'l', type: '2', linkname: 'x', size: 512 }),
    header({ name: 'smuggled', data: Buffer.from('s') }), // the "data" of the symlink, a header to Go
    pad(Buffer.from('s')),
    Buffer.alloc(1024),
  ]);
  for (const unpacker of ['native', 'node'] as const) {
    const err = await t.throwsAsync(unpackTar(fx.sn, tar, undefined, unpacker));
    t.is((err as { code?: string }).code, 'Corrupt', `${unpacker}: ${err?.message}`);
  }
});
