/**
 * Power loss during a self-update: a process doing the agent's switch (database copy → journal →
 * `current`) or the launcher's trial, commit or rollback is SIGKILLed right after each durable step
 * (test/helpers/self-update-kill.ts), then a launcher starts as after a reboot. Every time the device
 * ends up running a working version with a consistent agent dir and a database that version can open:
 * the new one committed, or the old one with the new one still staged (the agent switches again), or,
 * when the new one fails its trial, the old one with the database as it was at the switch.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { MIGRATIONS } from '../../src/db/migrations.js';
import {
  makeDb,
  readDb,
  removeFakeAgents,
  type SelfUpdateDevice,
  selfUpdateDevice,
  testLauncher,
  trialRecord,
} from '../helpers/self-update.js';

test.after.always(removeFakeAgents);

const HARNESS = path.join(import.meta.dirname, '..', 'helpers', 'self-update-kill.ts');

/** Run the harness; resolves with how it ended (SIGKILL when the step was reached). */
function harness(mode: 'switch' | 'launch', d: SelfUpdateDevice, step: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', HARNESS, mode, d.stateDir, step], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, FAKE_LOG: d.log },
    });
    p.once('error', reject);
    p.once('exit', (code, signal) => resolve(signal ?? `exit ${code}`));
  });
}

/** A launcher as after a reboot; resolves with how many times the installed version ran. */
async function reboot(d: SelfUpdateDevice): Promise<number> {
  const { launcher, selfRuns } = testLauncher(d.dir, { trialBoots: 3, env: { FAKE_LOG: d.log } });
  await launcher.run();
  return selfRuns();
}

/** No journal, no temp files, only the versions `current`/`previous` name (and `staged`) on disk. */
async function clean(t: ExecutionContext, d: SelfUpdateDevice, staged: string[] = []): Promise<void> {
  t.is(await d.dir.readTrial(), null, 'no journal left');
  const names = (await fsp.readdir(d.dir.root)).filter(
    (n) => n !== 'status.json' && !n.startsWith('launcher-'),
  );
  const links = [await d.dir.link('current'), await d.dir.link('previous')].filter(Boolean) as string[];
  const expected = new Set([...links, ...staged, ...(links.length ? ['current'] : [])]);
  if (await d.dir.link('previous')) expected.add('previous');
  t.deepEqual(names.sort(), [...expected].sort(), 'agent dir');
}

for (const step of ['db-copy', 'journal', 'current'] as const) {
  test(`kill -9 after the switch step "${step}": the device boots a working version`, async (t) => {
    const d = await selfUpdateDevice(t);
    makeDb(d.dir.dbFile, MIGRATIONS.length, 'before');
    await d.stage('0.2.0', 'GOOD');
    t.is(await harness('switch', d, step), 'SIGKILL');
    const selfRuns = await reboot(d);
    if (step === 'current') {
      // the switch was complete: the trial ran and passed
      t.is(selfRuns, 0);
      t.is(await d.dir.link('current'), '0.2.0');
      t.like((await d.dir.readStatus()).update, { version: '0.2.0', phase: 'committed' });
      await clean(t, d);
    } else {
      // not switched: the installed version runs, 0.2.0 stays staged for the agent to switch again
      t.is(selfRuns, 1);
      t.is(await d.dir.link('current'), null);
      t.true(await d.dir.isStaged('0.2.0'));
      await clean(t, d, ['0.2.0']);
    }
    t.deepEqual(readDb(d.dir.dbFile), { schema: MIGRATIONS.length, tag: 'before' });
  });
}

for (const step of ['trial-boot', 'verdict', 'previous', 'status', 'pruned'] as const) {
  test(`kill -9 of the launcher after "${step}" of a passing trial: committed after the reboot`, async (t) => {
    const d = await selfUpdateDevice(t);
    makeDb(d.dir.dbFile, 3, 'before');
    await d.stage('0.2.0', 'GOOD');
    await d.dir.writeTrial(trialRecord());
    await d.dir.setLink('current', '0.2.0');
    t.is(await harness('launch', d, step), 'SIGKILL');
    t.is(await reboot(d), 0);
    t.is(await d.dir.link('current'), '0.2.0');
    t.like((await d.dir.readStatus()).update, { version: '0.2.0', phase: 'committed' });
    await clean(t, d);
    const starts = await d.starts();
    t.is(starts.at(-1)?.slice(0, 3).join(' '), '0.2.0 spawn run', 'ends running 0.2.0 for good');
    for (const s of starts) t.false(isAlive(Number(s[3])), `no ${s.slice(0, 3).join(' ')} left running`);
  });
}

for (const step of [
  'trial-boot',
  'verdict',
  'db-decided',
  'db-restored',
  'current',
  'status',
  'pruned',
] as const) {
  test(`kill -9 of the launcher after "${step}" of a failing trial: rolled back, database as at the switch`, async (t) => {
    const d = await selfUpdateDevice(t);
    await d.stage('0.2.0', 'GOOD');
    await d.stage('0.3.0', 'EXIT');
    await d.dir.setLink('current', '0.2.0');
    makeDb(d.dir.dbCopyFile(), 3, 'at-switch');
    makeDb(d.dir.dbFile, 4, 'migrated-by-trial');
    await d.dir.writeTrial(
      trialRecord({
        version: '0.3.0',
        previous: '0.2.0',
        from: '0.2.0',
        db: { copy: 'rollback.db', schema: 3 },
      }),
    );
    await d.dir.setLink('current', '0.3.0');
    t.is(await harness('launch', d, step), 'SIGKILL');
    t.is(await reboot(d), 0);
    t.is(await d.dir.link('current'), '0.2.0');
    const st = await d.dir.readStatus();
    t.like(st.update, { version: '0.3.0', phase: 'rolled-back' });
    t.regex(st.failed['0.3.0'] ?? '', /exited with code 1/);
    t.deepEqual(readDb(d.dir.dbFile), { schema: 3, tag: 'at-switch' });
    await clean(t, d);
    t.is((await d.starts()).at(-1)?.slice(0, 3).join(' '), '0.2.0 spawn run');
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
