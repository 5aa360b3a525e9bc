/**
 * The launcher (src/agent/self-update/launcher.ts) with real processes and files: stand-in versions
 * (test/helpers/fake-agent.c, real ELF executables) on trial pass and are committed, or exit, crash, hang,
 * never connect and are rolled back — with the reason, the failed list, the database copy restored only
 * when the trial changed its schema, and a trial child a killed launcher left behind ended first. Run in
 * spawn mode (this Node has no process.execve); exec mode runs in self-update-package.test.ts.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { createServer } from 'node:net';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { type AgentExit, processStartTime } from '../../src/agent/self-update/launcher.js';
import type { TrialRecord } from '../../src/core/self-update.js';
import { processAlive } from '../../src/lib/process.js';
import {
  fakeAgent,
  makeDb,
  readDb,
  removeFakeAgents,
  type SelfUpdateDevice,
  selfUpdateDevice,
  testLauncher,
  trialRecord,
} from '../helpers/self-update.js';

test.after.always(removeFakeAgents);

interface Run {
  code: number;
  selfRuns: number;
}

function launcher(
  t: ExecutionContext,
  d: SelfUpdateDevice,
  o: { self?: string; deadlineMs?: number; selfExit?: AgentExit; env?: NodeJS.ProcessEnv } = {},
) {
  const { launcher: l, selfRuns } = testLauncher(d.dir, { ...o, env: { FAKE_LOG: d.log, ...o.env } });
  return {
    run: async (): Promise<Run> => {
      const code = await l.run();
      t.log(`launcher exit ${code} after ${selfRuns()} in-process run(s)`);
      return { code, selfRuns: selfRuns() };
    },
  };
}

async function onTrial(d: SelfUpdateDevice, over: Partial<TrialRecord> = {}): Promise<TrialRecord> {
  const tr = trialRecord(over);
  await d.dir.writeTrial(tr);
  await d.dir.setLink('current', tr.version);
  return tr;
}

test('a version that reaches every milestone is committed, then runs for good', async (t) => {
  const d = await selfUpdateDevice(t);
  await d.stage('0.2.0', 'GOOD');
  await onTrial(d);
  const r = await launcher(t, d).run();
  t.is(r.code, 0);
  t.is(r.selfRuns, 0);
  const starts = await d.starts();
  t.deepEqual(
    starts.map((s) => s.slice(0, 3)),
    [
      ['0.2.0', 'spawn', 'trial'],
      ['0.2.0', 'spawn', 'run'],
    ],
  );
  t.is(await d.dir.readTrial(), null);
  t.is(await d.dir.link('current'), '0.2.0');
  t.is(await d.dir.link('previous'), null, 'previous: the installed executable');
  t.like((await d.dir.readStatus()).update, { version: '0.2.0', phase: 'committed', from: '0.1.0' });
});

for (const [mode, reason, deadlineMs] of [
  ['EXIT', /exited with code 1 during its trial/, 20_000],
  ['CRASH', /was killed by SIGSEGV during its trial.*\(reached: state\)/, 20_000],
  ['NOCONNECT', /did not connect to the fleet within 2 s \(reached: state\)/, 2000],
  ['HANG', /did not open its state \(database\) within 2 s/, 2000],
] as const) {
  test(`a version that ${mode.toLowerCase()}s on trial is rolled back, reported and never run again`, async (t) => {
    const d = await selfUpdateDevice(t);
    await d.stage('0.2.0', 'GOOD');
    await d.stage('0.3.0', mode);
    await d.dir.setLink('current', '0.2.0');
    await onTrial(d, { version: '0.3.0', previous: '0.2.0', from: '0.2.0', deadlineMs });
    const r = await launcher(t, d, { deadlineMs }).run();
    t.is(r.code, 0);
    const starts = await d.starts();
    t.deepEqual(
      starts.map((s) => s.slice(0, 3)),
      [
        ['0.3.0', 'spawn', 'trial'],
        ['0.2.0', 'spawn', 'run'],
      ],
    );
    const trialPid = Number(starts[0]![3]);
    t.false(
      processAlive(trialPid),
      'the trial process is gone (SIGKILL after the grace when it ignores SIGTERM)',
    );
    t.is(await d.dir.link('current'), '0.2.0');
    t.is(await d.dir.readTrial(), null);
    const st = await d.dir.readStatus();
    t.like(st.update, { version: '0.3.0', phase: 'rolled-back', from: '0.2.0' });
    t.regex(st.update?.reason ?? '', reason);
    t.regex(st.failed['0.3.0'] ?? '', reason);
    await t.throwsAsync(fsp.stat(path.join(d.dir.root, '0.3.0')), undefined, 'the failed version is removed');
  });
}

test('rolled back to the installed executable when there was no previous version', async (t) => {
  const d = await selfUpdateDevice(t);
  await d.stage('0.2.0', 'EXIT');
  await onTrial(d);
  const r = await launcher(t, d).run();
  t.is(r.selfRuns, 1, 'the installed version runs in the launcher process');
  t.is(await d.dir.link('current'), null);
  t.like((await d.dir.readStatus()).update, { phase: 'rolled-back' });
});

test('a trial cut short too often (boot counter) is rolled back without starting it again', async (t) => {
  const d = await selfUpdateDevice(t);
  await d.stage('0.2.0', 'GOOD');
  await onTrial(d, { boots: 2 });
  const r = await launcher(t, d).run();
  t.is(r.selfRuns, 1);
  t.deepEqual(await d.starts(), [], 'never started');
  t.regex((await d.dir.readStatus()).update?.reason ?? '', /cut short 2 time/);
});

test('a trial run a killed launcher left behind is ended before the next decision', async (t) => {
  const d = await selfUpdateDevice(t);
  await d.stage('0.2.0', 'HANG');
  const orphan = spawn(await fakeAgent('0.2.0', 'HANG'), [], { stdio: 'ignore', env: { BERTH_TRIAL: 'x' } });
  const exited = new Promise((r) => orphan.once('exit', r));
  await new Promise((r) => setTimeout(r, 100));
  const pid = orphan.pid!;
  await onTrial(d, { boots: 2, child: { pid, startTime: processStartTime(pid)! } });
  await launcher(t, d).run();
  await exited;
  t.is(orphan.signalCode, 'SIGKILL');
  t.is(await d.dir.link('current'), null);
});

test('a journal whose `current` never moved (power cut mid-switch) is discarded: the old version runs', async (t) => {
  const d = await selfUpdateDevice(t);
  await d.stage('0.2.0', 'GOOD');
  await d.dir.writeTrial(trialRecord());
  const r = await launcher(t, d).run();
  t.is(r.selfRuns, 1);
  t.is(await d.dir.readTrial(), null);
  t.deepEqual(await d.starts(), []);
  t.true(await d.dir.isStaged('0.2.0'), 'staged stays for the agent to switch again');
});

test('an unreadable journal: back to the previous version', async (t) => {
  const d = await selfUpdateDevice(t);
  await d.stage('0.2.0', 'GOOD');
  await d.stage('0.3.0', 'GOOD');
  await d.dir.setLink('previous', '0.2.0');
  await d.dir.setLink('current', '0.3.0');
  await fsp.writeFile(d.dir.trialFile, '{"id": garbage');
  const r = await launcher(t, d).run();
  t.is(r.code, 0);
  t.deepEqual(
    (await d.starts()).map((s) => s.slice(0, 3)),
    [['0.2.0', 'spawn', 'run']],
  );
});

test('a newer installed executable wins over an older self-update; a missing current falls back', async (t) => {
  const d = await selfUpdateDevice(t);
  await d.stage('0.2.0', 'GOOD');
  await d.dir.setLink('current', '0.2.0');
  t.is((await launcher(t, d, { self: '0.3.0' }).run()).selfRuns, 1);
  t.is(await d.dir.link('current'), null);
  await d.dir.setLink('current', '0.2.0');
  await fsp.rm(d.dir.executable('0.2.0'));
  t.is((await launcher(t, d).run()).selfRuns, 1);
  t.is(await d.dir.link('current'), null);
});

test('an agent that switched exits 75: the launcher decides again (spawn mode restart loop)', async (t) => {
  const d = await selfUpdateDevice(t);
  await d.stage('0.2.0', 'GOOD');
  await d.dir.setLink('current', '0.2.0');
  // the committed 0.2.0 "switches": exits 75 the first time; the test then clears `current`
  const l = launcher(t, d, { env: { FAKE_EXIT: '75' } });
  const done = l.run();
  for (let i = 0; i < 200 && (await d.starts()).length < 2; i++) await new Promise((r) => setTimeout(r, 25));
  await d.dir.setLink('current', null);
  const r = await done;
  t.true((await d.starts()).length >= 2);
  t.is(r.selfRuns, 1);
});

test('rollback restores the database copy when the trial migrated it, keeps it when it did not', async (t) => {
  for (const migrated of [true, false]) {
    const d = await selfUpdateDevice(t);
    const live = d.dir.dbFile;
    makeDb(d.dir.dbCopyFile(), 3, 'at-switch');
    // what the trial left: one more migration (or not) and its own writes, some still in the WAL
    makeDb(live, migrated ? 4 : 3, 'written-by-trial');
    await d.stage('0.2.0', 'EXIT');
    await onTrial(d, { db: { copy: 'rollback.db', schema: 3 } });
    await launcher(t, d).run();
    t.deepEqual(
      readDb(live),
      migrated ? { schema: 3, tag: 'at-switch' } : { schema: 3, tag: 'written-by-trial' },
    );
    await t.throwsAsync(fsp.stat(d.dir.dbCopyFile()), undefined, 'the copy is gone after the rollback');
  }
});

test('a database the trial broke is replaced by the copy', async (t) => {
  const d = await selfUpdateDevice(t);
  makeDb(d.dir.dbCopyFile(), 3, 'at-switch');
  await fsp.writeFile(d.dir.dbFile, 'not a database at all, garbage garbage garbage garbage garbage garbage');
  await d.stage('0.2.0', 'EXIT');
  await onTrial(d, { db: { copy: 'rollback.db', schema: 3 } });
  await launcher(t, d).run();
  t.deepEqual(readDb(d.dir.dbFile), { schema: 3, tag: 'at-switch' });
});

test('a launched `berth agent` that fails before it runs exits (its launcher socket does not hold it)', async (t) => {
  const d = await selfUpdateDevice(t);
  const sock = path.join(d.dir.root, 'launcher-test.sock');
  const server = createServer((c) => c.resume());
  await new Promise<void>((r) => server.listen(sock, r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const bin = path.join(import.meta.dirname, '..', '..', 'dist', 'berth.mjs');
  // a broker but no fleet key: the agent refuses to start (InvalidInput)
  const p = spawn(
    process.execPath,
    [bin, '--state-dir', d.stateDir, 'agent', '--broker', 'mqtt://127.0.0.1:1'],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, BERTH_LAUNCHED: 'spawn', BERTH_LAUNCHER_SOCKET: sock },
    },
  );
  let err = '';
  p.stderr.on('data', (b: Buffer) => {
    err += b.toString();
  });
  // 'close', not 'exit': the exit can be reported before the last of its stderr has been read
  const code = await new Promise<number | null>((r) => p.once('close', (c) => r(c)));
  t.is(code, 2, err);
  t.regex(err, /no fleet public key/);
});
