/**
 * Reading the monitor's json-file logs: order across rotated files, --tail, and follow across a rotation
 * (lines written to the old file just before it was renamed are not lost).
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { followLogs, type LogEntry, readLogs } from '../../src/runtime/logs.js';
import { tempDir } from '../helpers/runtime-rootfs.js';

const line = (s: string, stream = 'stdout') =>
  `${JSON.stringify({ log: `${s}\n`, stream, time: '2026-01-01T00:00:00.000000000Z' })}\n`;

test('readLogs: oldest rotated file first, tail, torn last line skipped', async (t) => {
  const dir = await tempDir(t, 'berth-logs-');
  await fsp.writeFile(path.join(dir, 'log.json.2'), line('a') + line('b'));
  await fsp.writeFile(path.join(dir, 'log.json.1'), line('c'));
  await fsp.writeFile(path.join(dir, 'log.json'), `${line('d', 'stderr')}{"log":"tor`);
  t.deepEqual(
    (await readLogs(dir)).map((e) => e.log),
    ['a\n', 'b\n', 'c\n', 'd\n'],
  );
  t.deepEqual(
    (await readLogs(dir, { tail: 2 })).map((e) => [e.log, e.stream]),
    [
      ['c\n', 'stdout'],
      ['d\n', 'stderr'],
    ],
  );
});

test('followLogs: new lines, then a rotation, then done', async (t) => {
  const dir = await tempDir(t, 'berth-logs-');
  const file = path.join(dir, 'log.json');
  await fsp.writeFile(file, line('1') + line('2'));
  const seen: string[] = [];
  let done = false;
  const following = followLogs(dir, (e: LogEntry) => seen.push(e.log.trim()), {
    tail: 1,
    isDone: async () => done,
    pollMs: 20,
  });
  await new Promise((r) => setTimeout(r, 100));
  await fsp.appendFile(file, line('3'));
  await new Promise((r) => setTimeout(r, 100));
  await fsp.appendFile(file, line('4')); // written just before rotation
  await fsp.rename(file, path.join(dir, 'log.json.1'));
  await fsp.writeFile(file, line('5'));
  await new Promise((r) => setTimeout(r, 100));
  done = true;
  await following;
  t.deepEqual(seen, ['2', '3', '4', '5']);
});
