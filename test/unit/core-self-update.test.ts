/**
 * Self-update decisions (src/core/self-update.ts): version order, the ELF check, whether a release may
 * be applied, what the launcher runs at start (every state of the journal), and how a trial is judged.
 */
import test from 'ava';
import {
  AGENT_ARCHES,
  type AgentFacts,
  agentArch,
  type BootInput,
  checkExecutable,
  checkRelease,
  compareVersions,
  decideBoot,
  isVersion,
  judgeTrial,
  MAX_EXEC_ATTEMPTS,
  planAgentUpdate,
  type ReleaseFacts,
  type TrialMilestone,
  type TrialRecord,
} from '../../src/core/self-update.js';

test('versions: semver precedence, pre-releases before their release, no build metadata', (t) => {
  const ordered = [
    '0.0.0-dev',
    '0.1.0-alpha',
    '0.1.0-alpha.1',
    '0.1.0-alpha.beta',
    '0.1.0-beta.2',
    '0.1.0-beta.11',
    '0.1.0-rc.1',
    '0.1.0',
    '0.2.0',
    '0.10.0',
    '1.0.0',
  ];
  for (let i = 0; i < ordered.length - 1; i++) {
    t.is(compareVersions(ordered[i]!, ordered[i + 1]!), -1, `${ordered[i]} < ${ordered[i + 1]}`);
    t.is(compareVersions(ordered[i + 1]!, ordered[i]!), 1);
  }
  t.is(compareVersions('1.2.3', '1.2.3'), 0);
  for (const bad of [
    '1.2',
    '01.2.3',
    '1.2.3+build',
    'v1.2.3',
    '1.2.3-',
    '1.2.3-a..b',
    '../1.2.3',
    'current',
    '',
  ])
    t.false(isVersion(bad), bad);
  t.throws(() => compareVersions('1.2', '1.2.3'));
});

function elf(machine: number, cls = 2, data = 1, type = 3): Buffer {
  const h = Buffer.alloc(64);
  h.set([0x7f, 0x45, 0x4c, 0x46, cls, data, 1], 0);
  h.writeUInt16LE(type, 16);
  h.writeUInt16LE(machine, 18);
  return h;
}

test('ELF check: this machine only, named when wrong; not ELF, big-endian, relocatable refused', (t) => {
  const x64 = agentArch('x64')!;
  t.is(checkExecutable(elf(62), x64), undefined);
  t.is(checkExecutable(elf(62, 2, 1, 2), x64), undefined, 'ET_EXEC too');
  t.regex(checkExecutable(elf(183), x64)!, /ELF machine AArch64, this device needs x86-64/);
  t.regex(checkExecutable(elf(40, 1), agentArch('arm64')!)!, /ELF machine ARM, this device needs AArch64/);
  t.regex(checkExecutable(elf(62, 1), x64)!, /ELF machine 62 \(class 1\)/, '32-bit x86-64 header is not x64');
  t.regex(checkExecutable(elf(21, 2, 2), agentArch('ppc64')!)!, /big-endian/);
  t.regex(checkExecutable(elf(62, 2, 1, 1), x64)!, /not an executable/);
  t.regex(checkExecutable(Buffer.from('#!/bin/sh\necho hi\n'), x64)!, /not an ELF file/);
  t.regex(checkExecutable(elf(62).subarray(0, 12), x64)!, /too short/);
  t.regex(checkExecutable(Buffer.alloc(2), x64)!, /not an ELF file/);
  for (const a of AGENT_ARCHES) t.is(checkExecutable(elf(a.elfMachine, a.elfClass), a), undefined, a.name);
});

const facts = (over: Partial<AgentFacts> = {}): AgentFacts => ({
  running: '0.2.0',
  platform: 'linux/amd64',
  schema: 10,
  configFormat: 1,
  failed: new Map(),
  ...over,
});

test('planAgentUpdate: same version nothing, failed before refused, older refused unless allowed', (t) => {
  t.deepEqual(planAgentUpdate(undefined, facts()), { kind: 'none' });
  t.deepEqual(planAgentUpdate({ version: '0.2.0', allowDowngrade: false }, facts()), { kind: 'none' });
  t.deepEqual(planAgentUpdate({ version: '0.3.0', allowDowngrade: false }, facts()), { kind: 'fetch' });
  const older = planAgentUpdate({ version: '0.1.0', allowDowngrade: false }, facts());
  t.is(older.kind, 'refuse');
  t.regex((older as { reason: string }).reason, /older than the running 0\.2\.0.*allowDowngrade/);
  t.deepEqual(planAgentUpdate({ version: '0.1.0', allowDowngrade: true }, facts()), { kind: 'fetch' });
  t.is(planAgentUpdate({ version: '0.2.0-rc.1', allowDowngrade: false }, facts()).kind, 'refuse');
  const failed = planAgentUpdate(
    { version: '0.3.0', allowDowngrade: true },
    facts({ failed: new Map([['0.3.0', 'exited with code 1']]) }),
  );
  t.like(failed, { kind: 'refuse', code: 'Conflict' });
  t.regex((failed as { reason: string }).reason, /failed its trial on this device \(exited with code 1\)/);
});

const release = (over: Partial<ReleaseFacts> = {}): ReleaseFacts => ({
  version: '0.3.0',
  database: { schema: 11, minSchema: 0 },
  config: { format: 1, minFormat: 1 },
  artifacts: {
    'linux/amd64': { digest: 'sha256:aa', size: 10 },
    'linux/arm64': { digest: 'sha256:bb', size: 10 },
  },
  ...over,
});
const want = { version: '0.3.0', allowDowngrade: false };

test('checkRelease: the artifact for this platform; missing arch, wrong version, schema and config refused', (t) => {
  t.deepEqual(checkRelease(release(), want, facts()), {
    ok: true,
    artifact: { digest: 'sha256:aa', size: 10 },
  });
  const arm = checkRelease(release(), want, facts({ platform: 'linux/arm/v7' }));
  t.like(arm, { ok: false, code: 'NotFound' });
  t.regex(
    (arm as { reason: string }).reason,
    /no executable for linux\/arm\/v7 \(it has linux\/amd64, linux\/arm64\)/,
  );
  t.like(checkRelease(release({ version: '0.3.1' }), want, facts()), { ok: false, code: 'InvalidInput' });
  const tooOld = checkRelease(release({ database: { schema: 30, minSchema: 20 } }), want, facts());
  t.like(tooOld, { ok: false, code: 'Unsupported' });
  t.regex((tooOld as { reason: string }).reason, /from schema 20 on, this device's is 10/);
  const down = checkRelease(release({ database: { schema: 9, minSchema: 0 } }), want, facts());
  t.regex(
    (down as { reason: string }).reason,
    /schema ≤ 9, this device's is 10: a downgrade across a schema change/,
  );
  t.like(checkRelease(release({ config: { format: 3, minFormat: 2 } }), want, facts()), {
    ok: false,
    code: 'Unsupported',
  });
  t.like(checkRelease(release({ config: { format: 1, minFormat: 1 } }), want, facts({ configFormat: 2 })), {
    ok: false,
  });
  t.like(checkRelease(release({ database: { schema: 10, minSchema: 10 } }), want, facts()), { ok: true });
});

const trial = (over: Partial<TrialRecord> = {}): TrialRecord => ({
  id: 'abcdef0123456789',
  version: '0.3.0',
  previous: '0.2.0',
  from: '0.2.0',
  boots: 0,
  createdAt: 0,
  deadlineMs: 120_000,
  db: { copy: 'rollback.db', schema: 10 },
  ...over,
});
const boot = (over: Partial<BootInput> = {}): BootInput => ({
  self: '0.1.0',
  current: { version: '0.3.0' },
  previous: { version: '0.2.0' },
  trial: trial(),
  maxTrialBoots: 2,
  ...over,
});

test('decideBoot with a trial journal: trial, commit, rollback, discard, boot counter', (t) => {
  t.like(decideBoot(boot()), { kind: 'trial' });
  t.like(decideBoot(boot({ trial: trial({ boots: 1 }) })), { kind: 'trial' });
  const cut = decideBoot(boot({ trial: trial({ boots: 2 }) }));
  t.like(cut, { kind: 'rollback' });
  t.regex((cut as { reason: string }).reason, /cut short 2 time/);
  t.like(decideBoot(boot({ trial: trial({ verdict: { result: 'passed' } }) })), { kind: 'commit' });
  t.like(decideBoot(boot({ trial: trial({ verdict: { result: 'failed', reason: 'x' } }) })), {
    kind: 'rollback',
    reason: 'x',
  });
  // journal written, `current` not moved yet (power cut between the two)
  t.like(decideBoot(boot({ current: { version: '0.2.0' } })), { kind: 'discard-trial' });
  t.like(decideBoot(boot({ current: null, trial: trial({ previous: null }) })), { kind: 'discard-trial' });
  // the staged executable became unrunnable
  const bad = decideBoot(boot({ current: { version: '0.3.0', problem: 'not executable' } }));
  t.like(bad, { kind: 'rollback' });
  t.regex((bad as { reason: string }).reason, /staged executable: not executable/);
  // a verdict wins over everything else, so a commit or rollback cut short is finished
  t.like(
    decideBoot(
      boot({ current: { version: '0.2.0' }, trial: trial({ verdict: { result: 'failed', reason: 'y' } }) }),
    ),
    { kind: 'rollback' },
  );
});

test('decideBoot without a trial: current, installed newer, broken current, exec attempts', (t) => {
  const none = { trial: null };
  t.deepEqual(decideBoot(boot({ ...none, current: null })), {
    kind: 'run-self',
    reason: 'no self-update installed',
    dropCurrent: false,
  });
  t.deepEqual(decideBoot(boot({ ...none })), { kind: 'run', version: '0.3.0' });
  t.like(decideBoot(boot({ ...none, self: '0.3.0' })), { kind: 'run-self', dropCurrent: false });
  t.like(decideBoot(boot({ ...none, self: '0.4.0' })), { kind: 'run-self', dropCurrent: true });
  // current broken: previous if it is newer than the installed one, else the installed one
  const broken = { version: '0.3.0', problem: 'ENOENT' };
  t.deepEqual(decideBoot(boot({ ...none, current: broken })), { kind: 'run', version: '0.2.0' });
  t.like(decideBoot(boot({ ...none, current: broken, previous: null })), {
    kind: 'run-self',
    dropCurrent: true,
  });
  t.like(decideBoot(boot({ ...none, current: broken, self: '0.2.5' })), {
    kind: 'run-self',
    dropCurrent: true,
  });
  t.deepEqual(
    decideBoot(boot({ ...none, execAttempts: { version: '0.3.0', count: MAX_EXEC_ATTEMPTS - 1 } })),
    { kind: 'run', version: '0.3.0' },
  );
  const gaveUp = decideBoot(boot({ ...none, execAttempts: { version: '0.3.0', count: MAX_EXEC_ATTEMPTS } }));
  t.like(gaveUp, { kind: 'run-self', dropCurrent: true });
  t.regex((gaveUp as { reason: string }).reason, /did not start after 3 attempts/);
  t.deepEqual(
    decideBoot(boot({ ...none, execAttempts: { version: '0.2.0', count: 9 } })),
    { kind: 'run', version: '0.3.0' },
    'attempts of another version do not count',
  );
});

test('judgeTrial: all milestones pass; an exit, a signal or the deadline fail, naming what was missing', (t) => {
  const all = new Set<TrialMilestone>(['state', 'connected', 'reconciled']);
  const some = new Set<TrialMilestone>(['state']);
  t.deepEqual(judgeTrial({ reached: all, elapsedMs: 1000, deadlineMs: 120_000 }), { result: 'passed' });
  t.deepEqual(judgeTrial({ reached: some, elapsedMs: 1000, deadlineMs: 120_000 }), { result: 'pending' });
  const exited = judgeTrial({
    reached: new Set(),
    exit: { code: 1, signal: null },
    elapsedMs: 300,
    deadlineMs: 1,
  });
  t.like(exited, { result: 'failed' });
  t.regex((exited as { reason: string }).reason, /exited with code 1 during its trial, after 0\.3 s$/);
  const killed = judgeTrial({
    reached: some,
    exit: { code: null, signal: 'SIGSEGV' },
    elapsedMs: 2000,
    deadlineMs: 9e9,
  });
  t.regex((killed as { reason: string }).reason, /killed by SIGSEGV.*\(reached: state\)/);
  const late = judgeTrial({ reached: some, elapsedMs: 120_000, deadlineMs: 120_000 });
  t.regex(
    (late as { reason: string }).reason,
    /did not connect to the fleet within 120 s \(reached: state\)/,
  );
  const noReconcile = judgeTrial({
    reached: new Set<TrialMilestone>(['state', 'connected']),
    elapsedMs: 121_000,
    deadlineMs: 120_000,
  });
  t.regex((noReconcile as { reason: string }).reason, /did not complete a reconcile within 120 s/);
  t.deepEqual(
    judgeTrial({ reached: all, exit: { code: 0, signal: null }, elapsedMs: 5, deadlineMs: 1 }),
    { result: 'passed' },
    'an exit after every milestone (the launcher stopped it) is still a pass',
  );
});
