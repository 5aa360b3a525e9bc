/**
 * berth-monitor on its own (ASan + UBSan build), driven with a bundle and runc: JSON escaping, lines over
 * 16 KiB split like docker's json-file, a last line without newline, exit by signal, and argument errors.
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { exec } from '../../src/lib/exec.js';
import { buildBundleConfig } from '../../src/runtime/bundle.js';
import { ociArch } from '../../src/runtime/containers.js';
import { needPrivileges } from '../helpers/privileged.js';
import {
  removeSharedBusyboxRootfs,
  sharedBusyboxRootfs,
  tempDir,
  uniqueId,
} from '../helpers/runtime-rootfs.js';

test.after.always(removeSharedBusyboxRootfs);

const ASAN_MONITOR = path.resolve('native/build/x64-asan/berth-monitor');
const RUNC = '/usr/sbin/runc';

async function ensureAsan(): Promise<void> {
  await exec('make', ['-C', 'native', 'SANITIZE=1'], { timeoutMs: 120_000 });
}

async function runMonitor(t: import('ava').ExecutionContext, script: string) {
  await ensureAsan();
  const dir = await tempDir(t, 'berth-mon-');
  const rootfs = await sharedBusyboxRootfs();
  const id = uniqueId('mon');
  const bundle = path.join(dir, 'bundle');
  await fsp.mkdir(bundle);
  const { spec } = buildBundleConfig({
    id,
    image: { Cmd: ['sh', '-c', script] },
    arch: ociArch(),
    app: { readOnlyRootfs: true },
    user: { uid: 0, gid: 0, additionalGids: [] },
    rootfs,
    volumesDir: path.join(dir, 'volumes'),
  });
  await fsp.writeFile(path.join(bundle, 'config.json'), JSON.stringify(spec));
  const root = path.join(dir, 'runc');
  t.teardown(() => exec(RUNC, ['--root', root, 'delete', '--force', id], { allowFailure: true }));
  // Foreground mode: the monitor does not detach, so this returns when the container has exited.
  const r = await exec(
    ASAN_MONITOR,
    [
      '--runtime',
      RUNC,
      '--runtime-root',
      root,
      '--id',
      id,
      '--bundle',
      bundle,
      '--dir',
      dir,
      '--sync-fd',
      '1',
    ],
    {
      env: { ...process.env, BERTH_MONITOR_FOREGROUND: '1', ASAN_OPTIONS: 'detect_leaks=1' },
      timeoutMs: 60_000,
    },
  );
  const entries = (await fsp.readFile(path.join(dir, 'log.json'), 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { log: string; stream: string; time: string });
  const exit = JSON.parse(await fsp.readFile(path.join(dir, 'exit.json'), 'utf8'));
  return { r, entries, exit, dir, id, root };
}

test('log encoding: escapes, 16 KiB split, trailing partial line; ASan clean', async (t) => {
  if (!needPrivileges(t)) return;
  const { r, entries, exit } = await runMonitor(
    t,
    'printf "a\\tb\\"c\\\\\\\\d\\001\\n"; head -c 20000 /dev/zero | tr "\\0" x; echo; echo err >&2; printf "no newline"',
  );
  t.regex(r.stdout, /^\{"ok":true,"pid":\d+\}\n$/);
  t.is(r.stderr, '', 'no sanitizer report');
  const out = entries.filter((e) => e.stream === 'stdout').map((e) => e.log);
  t.is(out.length, 4, JSON.stringify(out.map((l) => l.slice(0, 40))));
  t.is(out[0], 'a\tb"c\\d\u0001\n');
  t.true(out[1] === 'x'.repeat(16384), 'a 16 KiB partial entry without newline');
  t.true(out[2] === `${'x'.repeat(20000 - 16384)}\n`, 'the rest of the long line');
  t.is(out[3], 'no newline');
  t.deepEqual(
    entries.filter((e) => e.stream === 'stderr').map((e) => e.log),
    ['err\n'],
  );
  t.regex(entries[0]!.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
  t.is(exit.exitCode, 0);
  t.is(exit.signal, 0);
});

test('exit code recorded in exit.json; runtime container and cgroup deleted by the monitor', async (t) => {
  if (!needPrivileges(t)) return;
  const { exit, id, root } = await runMonitor(t, 'exit 3');
  t.is(exit.exitCode, 3);
  const st = await exec(RUNC, ['--root', root, 'state', id], { allowFailure: true });
  t.not(st.code, 0, 'the monitor deleted the runtime container after recording the exit');
  t.false(existsSync(`/sys/fs/cgroup/memory/berth/${id}`), 'cgroup freed without berth');
  t.is(exit.signal, 0);
  t.false(exit.oomKilled);
  t.is(exit.error, null);
});

test('argument errors are reported, nothing runs', async (t) => {
  await ensureAsan();
  const r = await exec(
    ASAN_MONITOR,
    ['--id', '../x', '--runtime', '/bin/true', '--bundle', '/b', '--dir', '/d'],
    {
      allowFailure: true,
    },
  );
  t.is(r.code, 2);
  t.regex(r.stderr, /invalid container id/);
  const r2 = await exec(ASAN_MONITOR, ['--id', 'x'], { allowFailure: true });
  t.regex(r2.stderr, /required/);
});
