import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { BerthError } from '../../src/lib/errors.js';
import { mountOf, parseMountinfo } from '../../src/lib/mountinfo.js';
import { APPENDED_MAGIC, FOOTER_SIZE, readAppended } from '../../src/packaged/appended.js';
import { candidateDirs, extractPayload, payloadId } from '../../src/packaged/extract.js';
import type { EmbeddedFile, EmbeddedPayload } from '../../src/packaged/payload.js';

function embedded(name: string, content: string): EmbeddedFile {
  const bytes = Buffer.from(content);
  return {
    name,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    size: bytes.length,
    base64: bytes.toString('base64'),
  };
}

const PAYLOAD: EmbeddedPayload = {
  arch: 'x64',
  sqlite: embedded('better_sqlite3.node', 'not really an addon'),
  native: [embedded('berth-hello', '#!/bin/sh\necho hello from the payload\n')],
};

function tempDir(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'berth-extract-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// A mountinfo where /tmp (where the test dirs live) is a plain mount; `noexecAt` adds a noexec one.
function mountinfo(noexecAt?: string): string {
  const lines = [
    '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
    `23 22 0:5 / ${tmpdir()} rw,nosuid,nodev shared:2 - tmpfs tmpfs rw`,
  ];
  if (noexecAt) lines.push(`24 23 0:6 / ${noexecAt} rw,nosuid,nodev,noexec shared:3 - tmpfs tmpfs rw`);
  return `${lines.join('\n')}\n`;
}

test('extracts every embedded file, executable and sha256-checked, into a payload-named dir', (t) => {
  const base = tempDir(t);
  const dir = extractPayload(PAYLOAD, { candidates: [base], mountinfo: mountinfo() });
  t.is(dir, path.join(base, payloadId(PAYLOAD)));
  t.is(readFileSync(path.join(dir, 'better_sqlite3.node'), 'utf8'), 'not really an addon');
  t.is(statSync(path.join(dir, 'berth-hello')).mode & 0o777, 0o755);
  t.is(execFileSync(path.join(dir, 'berth-hello')).toString(), 'hello from the payload\n');
});

test('`files` writes and re-checks only the files named (a command that opens the database: the addon)', (t) => {
  const base = tempDir(t);
  const dir = extractPayload(PAYLOAD, {
    candidates: [base],
    mountinfo: mountinfo(),
    files: [PAYLOAD.sqlite],
  });
  t.is(readFileSync(path.join(dir, 'better_sqlite3.node'), 'utf8'), 'not really an addon');
  t.false(existsSync(path.join(dir, 'berth-hello')));
  extractPayload(PAYLOAD, { candidates: [base], mountinfo: mountinfo(), files: PAYLOAD.native });
  t.is(execFileSync(path.join(dir, 'berth-hello')).toString(), 'hello from the payload\n');
});

test('a damaged extracted file is rewritten on the next start', (t) => {
  const base = tempDir(t);
  const dir = extractPayload(PAYLOAD, { candidates: [base], mountinfo: mountinfo() });
  const file = path.join(dir, 'berth-hello');
  writeFileSync(file, '#!/bin/sh\necho tampered\n');
  chmodSync(file, 0o755);
  extractPayload(PAYLOAD, { candidates: [base], mountinfo: mountinfo() });
  t.is(execFileSync(file).toString(), 'hello from the payload\n');
});

test('a candidate on a noexec mount is skipped for the next one', (t) => {
  const noexec = tempDir(t);
  const fallback = tempDir(t);
  const dir = extractPayload(PAYLOAD, { candidates: [noexec, fallback], mountinfo: mountinfo(noexec) });
  t.true(dir.startsWith(fallback));
});

test('no usable candidate is a PermissionDenied error naming each and why', (t) => {
  const noexec = tempDir(t);
  const file = path.join(tempDir(t), 'a-file');
  writeFileSync(file, '');
  const err = t.throws(
    () =>
      extractPayload(PAYLOAD, {
        candidates: [noexec, path.join(file, 'below-a-file')],
        mountinfo: mountinfo(noexec),
      }),
    { instanceOf: BerthError },
  );
  t.is(err.code, 'PermissionDenied');
  t.regex(err.message, new RegExp(`${noexec}: filesystem at ${noexec} is mounted noexec`));
  t.regex(err.message, /below-a-file: cannot create \(ENOTDIR\)/);
  t.regex(err.message, /BERTH_NATIVE_CACHE/);
});

test('a candidate writable by others is refused (files could be swapped after the check)', (t) => {
  const shared = tempDir(t);
  chmodSync(shared, 0o777);
  const fallback = tempDir(t);
  const dir = extractPayload(PAYLOAD, { candidates: [shared, fallback], mountinfo: mountinfo() });
  t.true(dir.startsWith(fallback));
  const err = t.throws(() => extractPayload(PAYLOAD, { candidates: [shared], mountinfo: mountinfo() }), {
    instanceOf: BerthError,
  });
  t.regex(err.message, /writable by group or others/);
});

test('a payload whose bytes do not match their build-time sha256 is refused as Corrupt', (t) => {
  const base = tempDir(t);
  const bad: EmbeddedPayload = {
    ...PAYLOAD,
    native: [{ ...PAYLOAD.native[0]!, base64: Buffer.from('something else').toString('base64') }],
  };
  const err = t.throws(() => extractPayload(bad, { candidates: [base], mountinfo: mountinfo() }), {
    instanceOf: BerthError,
  });
  t.is(err.code, 'Corrupt');
});

test('candidates: BERTH_NATIVE_CACHE alone when set, else state dir, user cache, tmp', (t) => {
  t.deepEqual(candidateDirs('/var/lib/berth', { BERTH_NATIVE_CACHE: '/opt/berth-native' }), [
    '/opt/berth-native',
  ]);
  const dirs = candidateDirs('/var/lib/berth', { HOME: '/root' });
  t.deepEqual(dirs.slice(0, 2), ['/var/lib/berth/native', '/root/.cache/berth/native']);
  t.true(dirs[2]!.startsWith(tmpdir()));
});

test('mountOf picks the longest mount point holding the path, with octal escapes decoded', (t) => {
  const mounts = parseMountinfo(
    ['1 0 8:1 / / rw - ext4 /dev/sda1 rw', '2 1 0:5 / /mnt/my\\040disk rw,noexec - tmpfs t rw'].join('\n'),
  );
  t.deepEqual(mountOf('/mnt/my disk/x', mounts)?.options, ['rw', 'noexec']);
  t.is(mountOf('/mnt/my diskette', mounts)?.point, '/');
});

/** An "executable" with the parts appended as scripts/packaging/bundle.mjs appendPayload does. */
function withAppended(t: { teardown: (fn: () => void) => void }, parts: string[]) {
  const dir = tempDir(t);
  const exe = path.join(dir, 'berth');
  const data = Buffer.concat(parts.map((p) => Buffer.from(p)));
  const footer = Buffer.alloc(FOOTER_SIZE);
  footer.write(APPENDED_MAGIC, 0, 'latin1');
  footer.writeBigUInt64LE(BigInt(data.length), 16);
  writeFileSync(exe, Buffer.concat([Buffer.from('\x7fELF and the rest of node'), data, footer]));
  let offset = 0;
  const files = parts.map((p, i) => {
    const bytes = Buffer.from(p);
    const f: EmbeddedFile = {
      name: i === 0 ? 'better_sqlite3.node' : `berth-part${i}`,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      size: bytes.length,
      offset,
    };
    offset += bytes.length;
    return f;
  });
  return { exe, payload: { arch: 'x64', sqlite: files[0]!, native: files.slice(1) } as EmbeddedPayload };
}

test('parts appended to the executable (not in the bundle) are extracted from it by offset', (t) => {
  const { exe, payload } = withAppended(t, ['addon bytes', '#!/bin/sh\necho appended\n']);
  const dir = extractPayload(payload, { candidates: [tempDir(t)], mountinfo: mountinfo(), executable: exe });
  t.is(readFileSync(path.join(dir, 'better_sqlite3.node'), 'utf8'), 'addon bytes');
  t.is(execFileSync(path.join(dir, 'berth-part1')).toString(), 'appended\n');
});

test('a stripped executable (no footer) or an offset past the appended data is Corrupt, not garbage', (t) => {
  const { exe, payload } = withAppended(t, ['addon bytes', 'program']);
  const past = { ...payload, native: [{ ...payload.native[0]!, offset: 11 + 7 - 3 }] };
  t.throws(() => readAppended(exe, 11 + 7 - 3, 7), { instanceOf: BerthError, message: /out of bounds/ });
  t.throws(
    () => extractPayload(past, { candidates: [tempDir(t)], mountinfo: mountinfo(), executable: exe }),
    {
      instanceOf: BerthError,
    },
  );
  const stripped = path.join(tempDir(t), 'stripped');
  writeFileSync(stripped, readFileSync(exe).subarray(0, -FOOTER_SIZE));
  t.throws(() => readAppended(stripped, 0, 11), { instanceOf: BerthError, message: /stripped/ });
});
