/**
 * `berth-storage page-out <pid>` (native/storage/pageout.c) on a real process, and the agent handing its
 * start-up pages back once it has settled (src/agent/memory.ts). Hosts whose kernel cannot page out
 * another process (process_madvise MADV_PAGEOUT: Linux >= 5.10) test the fallback: a clear error, and an
 * agent that says so once and keeps running.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { exec } from '../../src/lib/exec.js';
import { developmentNativePath } from '../../src/lib/native.js';
import { needPrivileges } from '../helpers/privileged.js';
import { BERTH, cliEnv, waitUntil } from '../helpers/runtime-cli.js';
import { tempDir } from '../helpers/runtime-rootfs.js';

const STORAGE = developmentNativePath('storage');

/** resident KiB of the mappings of `file` in process `pid` (its own pages: nobody else maps the copy) */
function residentKiB(pid: number, file: string): number {
  let cur = false;
  let kib = 0;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s+(.*)$/.exec(line);
    if (m) cur = m[1] === file;
    else if (cur && line.startsWith('Rss:')) kib += Number(line.split(/\s+/)[1]);
  }
  return kib;
}

/** can this kernel page out another process? (the answer decides which half of each test runs) */
async function pageOutWorks(): Promise<boolean> {
  const r = await exec(STORAGE, ['page-out', String(process.pid)], { allowFailure: true });
  return r.code === 0;
}

test('page-out returns a process’s clean pages of its own executable; the process runs on', async (t) => {
  if (!needPrivileges(t, { root: true, paths: [STORAGE, '/bin/busybox'] })) return;
  const dir = await tempDir(t, 'berth-pageout-');
  // a private copy of a program: its pages are mapped by this process alone (the kernel leaves pages
  // other processes map, like libc's, where they are)
  const exe = path.join(dir, 'busybox-copy');
  copyFileSync('/bin/busybox', exe);
  const child = spawn(exe, ['sh', '-c', 'while :; do read -r line || exit 3; echo "got $line"; done'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stdin.write('one\n');
  await waitUntil('the first answer', async () => out.includes('got one'), 10_000);
  const before = residentKiB(child.pid!, exe);
  t.true(before > 0, 'the copy has resident pages before');

  const r = await exec(STORAGE, ['page-out', String(child.pid)], { allowFailure: true });
  if (!(await pageOutWorks())) {
    // the fallback: an old kernel (ENOSYS / EINVAL) or no CAP_SYS_NICE says so by name
    t.not(r.code, 0);
    t.regex(
      r.stderr,
      /berth-storage: page-out: (process_madvise|process \d+: no mapping could be paged out)/,
    );
    return;
  }
  t.is(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout) as { bytes: number; ranges: number };
  t.true(res.ranges >= 1 && res.bytes >= before * 1024, JSON.stringify(res));
  const after = residentKiB(child.pid!, exe);
  // most of it goes (measured: 1536 -> 192 KiB; MADV_COLD, which only ages pages, leaves ~90 %)
  t.true(after <= before / 2, `resident pages of the copy: ${before} KiB before, ${after} KiB after`);
  // what it needs comes back on the next fault: the shell still answers
  child.stdin.write('two\n');
  await waitUntil('the answer after the page-out', async () => out.includes('got two'), 10_000);
  t.is(child.exitCode, null);
});

test('page-out refuses what is not a live process, by name', async (t) => {
  if (!needPrivileges(t, { root: false, paths: [STORAGE] })) return;
  const bad = await exec(STORAGE, ['page-out', '12ab'], { allowFailure: true });
  t.is(bad.code, 22);
  t.regex(bad.stderr, /page-out: not a pid: 12ab/);
  const gone = spawn('/bin/true');
  await new Promise((r) => gone.once('exit', r));
  const r = await exec(STORAGE, ['page-out', String(gone.pid)], { allowFailure: true });
  t.is(r.code, 3, r.stderr); // ESRCH: the pid is free again (or, rarely, reused by a process we may not touch)
  t.regex(r.stderr, /page-out: pidfd_open \d+: No such process/);
});

test('the agent hands its start-up pages back once settled and keeps serving', async (t) => {
  if (!needPrivileges(t, { root: true, paths: [STORAGE] })) return;
  t.timeout(120_000);
  const env = await cliEnv(t, { agent: { pageOutAfterMs: 300 } });
  const agent = spawn(
    process.execPath,
    [
      BERTH,
      '--state-dir',
      env.stateDir,
      '--config',
      env.configPath,
      '--log-level',
      'debug',
      'agent',
      '--offline',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  agent.stderr!.on('data', (d: Buffer) => {
    log += d.toString();
  });
  t.teardown(() => {
    agent.kill('SIGTERM');
  });
  const works = await pageOutWorks();
  const expected = works ? 'start-up pages handed back' : 'cannot hand start-up pages back';
  await waitUntil(`"${expected}" in the agent's log`, async () => log.includes(expected), 60_000).catch(
    (err) => {
      t.log(log);
      throw err;
    },
  );
  const line = log.split('\n').find((l) => l.includes(expected))!;
  const rec = JSON.parse(line) as { advisedBytes?: number; err?: string };
  if (works) t.true((rec.advisedBytes ?? 0) > 0, line);
  else t.truthy(rec.err, line);
  // the agent runs on: its local API answers
  t.true(existsSync(path.join(env.stateDir, 'berth.sock')));
  const ps = await env.berth(['ps', '--json']);
  t.is(ps.code, 0);
  t.is(agent.exitCode, null, 'the agent is still running');
});
