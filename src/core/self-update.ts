/**
 * Self-update decisions, pure: version order, which executable fits this device (ELF header), whether a
 * release may be applied, what the launcher runs at start, and how a trial run is judged. The drivers
 * (src/agent/self-update/) own the files, the processes and the clock; docs/self-update.md is the
 * authority on the rules.
 *
 * Lifecycle of one update, and who decides each step here:
 *
 *   target names agent {version, release}      planAgentUpdate: none | refuse | fetch
 *   signed release manifest fetched, verified  checkRelease: the artifact for this arch, or a refusal
 *   executable fetched, staged                 checkExecutable: ELF class, byte order, machine
 *   switch (trial record, then `current`)      —
 *   launcher start                             decideBoot: trial | commit | rollback | run …
 *   trial run supervised                       judgeTrial: pending | passed | failed (+ why)
 */

// ---- versions ---------------------------------------------------------------------------------------

/**
 * Release versions are semantic versions without build metadata (so every version names one build and
 * is a safe directory name): `1.2.3`, `1.2.3-rc.1`.
 */
export const VERSION_PATTERN =
  /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})(?:-([0-9A-Za-z-]{1,32}(?:\.[0-9A-Za-z-]{1,32}){0,7}))?$/;

export interface Version {
  major: number;
  minor: number;
  patch: number;
  pre: Array<string | number>;
}

export function parseVersion(s: string): Version | undefined {
  const m = VERSION_PATTERN.exec(s);
  if (!m) return undefined;
  return {
    major: Number(m[1]),
    minor: Number(m[2]),
    patch: Number(m[3]),
    pre: m[4] ? m[4].split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p)) : [],
  };
}

export function isVersion(s: string): boolean {
  return parseVersion(s) !== undefined;
}

/** Semantic-version precedence: -1, 0, 1. A pre-release sorts before its release. */
export function compareVersions(a: string, b: string): -1 | 0 | 1 {
  const x = parseVersion(a);
  const y = parseVersion(b);
  if (!x || !y) throw new Error(`not a version: ${!x ? a : b}`);
  for (const k of ['major', 'minor', 'patch'] as const) {
    if (x[k] !== y[k]) return x[k] < y[k] ? -1 : 1;
  }
  if (x.pre.length === 0 || y.pre.length === 0) {
    if (x.pre.length === y.pre.length) return 0;
    return x.pre.length === 0 ? 1 : -1;
  }
  for (let i = 0; i < Math.max(x.pre.length, y.pre.length); i++) {
    const p = x.pre[i];
    const q = y.pre[i];
    if (p === undefined) return -1;
    if (q === undefined) return 1;
    if (p === q) continue;
    if (typeof p === 'number' && typeof q === 'number') return p < q ? -1 : 1;
    if (typeof p === 'number') return -1;
    if (typeof q === 'number') return 1;
    return p < q ? -1 : 1;
  }
  return 0;
}

// ---- architectures and ELF --------------------------------------------------------------------------

export interface AgentArch {
  /** process.arch of the Node that runs berth */
  nodeArch: string;
  /** the release manifest's key (an OCI platform) */
  platform: string;
  /** ELF e_machine, EI_CLASS (1 = 32-bit, 2 = 64-bit); all are little-endian */
  elfMachine: number;
  elfClass: 1 | 2;
  name: string;
}

export const AGENT_ARCHES: readonly AgentArch[] = [
  { nodeArch: 'x64', platform: 'linux/amd64', elfMachine: 62, elfClass: 2, name: 'x86-64' },
  { nodeArch: 'arm64', platform: 'linux/arm64', elfMachine: 183, elfClass: 2, name: 'AArch64' },
  { nodeArch: 'arm', platform: 'linux/arm/v7', elfMachine: 40, elfClass: 1, name: 'ARM' },
  { nodeArch: 'ppc64', platform: 'linux/ppc64le', elfMachine: 21, elfClass: 2, name: 'PowerPC64' },
];

export function agentArch(nodeArch: string): AgentArch | undefined {
  return AGENT_ARCHES.find((a) => a.nodeArch === nodeArch);
}

/** Bytes of the ELF header checkExecutable reads. */
export const ELF_HEADER_BYTES = 20;

/**
 * Why `header` (the first bytes of a file) is not a Linux executable for `arch`, or undefined when it is.
 * Checked before a staged executable may become `current`, and by the launcher before it runs one.
 */
export function checkExecutable(header: Uint8Array, arch: AgentArch): string | undefined {
  if (header[0] !== 0x7f || header[1] !== 0x45 || header[2] !== 0x4c || header[3] !== 0x46)
    return 'not an ELF file';
  if (header.length < ELF_HEADER_BYTES) return `too short for an ELF header (${header.length} bytes)`;
  const cls = header[4];
  const data = header[5];
  if (data !== 1) return `ELF byte order ${data === 2 ? 'big-endian' : data}, expected little-endian`;
  const type = header[16]! | (header[17]! << 8);
  if (type !== 2 && type !== 3) return `ELF type ${type} is not an executable`;
  const machine = header[18]! | (header[19]! << 8);
  if (machine !== arch.elfMachine || cls !== arch.elfClass) {
    const named = AGENT_ARCHES.find((a) => a.elfMachine === machine && a.elfClass === cls);
    return `ELF machine ${named ? named.name : `${machine} (class ${cls})`}, this device needs ${arch.name}`;
  }
  return undefined;
}

// ---- whether to update ------------------------------------------------------------------------------

/** What a target asks of the agent (`agent` in the signed target). */
export interface DesiredAgent {
  version: string;
  allowDowngrade: boolean;
}

/** What the device knows about itself when a target names an agent version. */
export interface AgentFacts {
  /** the version running now */
  running: string;
  /** the manifest key this executable needs (AgentArch.platform) */
  platform: string;
  /** the database's schema version (user_version) */
  schema: number;
  /** CONFIG_FORMAT of the running agent: the format of the device's config file */
  configFormat: number;
  /** versions that failed their trial here: never retried by the device on its own */
  failed: ReadonlyMap<string, string>;
}

export type Refusal = { code: 'InvalidInput' | 'Unsupported' | 'Conflict' | 'NotFound'; reason: string };

export type UpdatePlan = { kind: 'none' } | ({ kind: 'refuse' } & Refusal) | { kind: 'fetch' };

/** Before anything is fetched: is there anything to do, and is it allowed at all? */
export function planAgentUpdate(desired: DesiredAgent | undefined, facts: AgentFacts): UpdatePlan {
  if (!desired || desired.version === facts.running) return { kind: 'none' };
  const failed = facts.failed.get(desired.version);
  if (failed !== undefined)
    return {
      kind: 'refuse',
      code: 'Conflict',
      reason: `agent ${desired.version} failed its trial on this device (${failed}); it is not retried: release a new version`,
    };
  if (compareVersions(desired.version, facts.running) < 0 && !desired.allowDowngrade)
    return {
      kind: 'refuse',
      code: 'InvalidInput',
      reason: `agent ${desired.version} is older than the running ${facts.running}: a downgrade needs allowDowngrade`,
    };
  return { kind: 'fetch' };
}

/** The parts of a release manifest the device checks (src/transport/releases.ts has the schema). */
export interface ReleaseFacts {
  version: string;
  database: { schema: number; minSchema: number };
  config: { format: number; minFormat: number };
  artifacts: Record<string, { digest: string; size: number }>;
}

/** After the signed manifest verified: the executable for this device, or why not. */
export function checkRelease(
  release: ReleaseFacts,
  desired: DesiredAgent,
  facts: AgentFacts,
): { ok: true; artifact: { digest: string; size: number } } | ({ ok: false } & Refusal) {
  if (release.version !== desired.version)
    return {
      ok: false,
      code: 'InvalidInput',
      reason: `release manifest is for ${release.version}, the target names ${desired.version}`,
    };
  const artifact = release.artifacts[facts.platform];
  if (!artifact)
    return {
      ok: false,
      code: 'NotFound',
      reason: `release ${release.version} has no executable for ${facts.platform} (it has ${Object.keys(release.artifacts).sort().join(', ') || 'none'})`,
    };
  const db = release.database;
  if (facts.schema < db.minSchema)
    return {
      ok: false,
      code: 'Unsupported',
      reason: `release ${release.version} migrates databases from schema ${db.minSchema} on, this device's is ${facts.schema}: update through an earlier release first`,
    };
  if (facts.schema > db.schema)
    return {
      ok: false,
      code: 'Unsupported',
      reason: `release ${release.version} reads database schema ≤ ${db.schema}, this device's is ${facts.schema}: a downgrade across a schema change is not possible`,
    };
  const cfg = release.config;
  if (facts.configFormat < cfg.minFormat || facts.configFormat > cfg.format)
    return {
      ok: false,
      code: 'Unsupported',
      reason: `release ${release.version} reads config format ${cfg.minFormat}–${cfg.format}, this device's is ${facts.configFormat}`,
    };
  return { ok: true, artifact };
}

// ---- trial and boot ---------------------------------------------------------------------------------

/** What a version on trial must reach, in order, before its deadline. */
export const TRIAL_MILESTONES = ['state', 'connected', 'reconciled'] as const;
export type TrialMilestone = (typeof TRIAL_MILESTONES)[number];

const MILESTONE_MISSED: Record<TrialMilestone, string> = {
  state: 'did not open its state (database) within',
  connected: 'did not connect to the fleet within',
  reconciled: 'did not complete a reconcile within',
};

/**
 * The switch's journal (`<state-dir>/agent/trial.json`): written before `current` moves, removed when
 * the trial is committed or rolled back. Every step after it is redone from it after a power cut.
 */
export interface TrialRecord {
  id: string;
  /** the version on trial (what `current` points at once the switch is done) */
  version: string;
  /** what `current` pointed at before: a version, or null for the launcher's own executable */
  previous: string | null;
  /** the version that ran before the switch (reports) */
  from: string;
  /** starts of the trial so far, counted before each start */
  boots: number;
  createdAt: number;
  deadlineMs: number;
  /** the database copy taken at the switch, and its schema version */
  db: { copy: string; schema: number } | null;
  /** set when the trial was judged: the rest of the commit or rollback is redone from here */
  verdict?: { result: 'passed' } | { result: 'failed'; reason: string } | undefined;
  /** decided once at a rollback (the trial migrated or broke the database), redone until done */
  restoreDb?: boolean | undefined;
  /** the trial's process, so a launcher started after a crash can end it before rolling back */
  child?: { pid: number; startTime: string } | undefined;
}

export interface InstalledVersion {
  version: string;
  /** why it cannot run (missing, not executable, wrong machine), if so */
  problem?: string | undefined;
}

export interface BootInput {
  /** the version of the executable the init started (the launcher) */
  self: string;
  current: InstalledVersion | null;
  previous: InstalledVersion | null;
  trial: TrialRecord | null;
  /** a trial cut short this many times (power loss, launcher killed) fails */
  maxTrialBoots: number;
  /**
   * execs of a version not yet confirmed by the version itself: a failing exec aborts the launcher
   * (Node cannot catch it), so after MAX_EXEC_ATTEMPTS the launcher stops trying that version
   */
  execAttempts?: { version: string; count: number } | null | undefined;
}

export const MAX_EXEC_ATTEMPTS = 3;

export type BootDecision =
  | { kind: 'commit'; trial: TrialRecord }
  | { kind: 'rollback'; trial: TrialRecord; reason: string }
  | { kind: 'discard-trial'; trial: TrialRecord; reason: string }
  | { kind: 'trial'; trial: TrialRecord }
  | { kind: 'run'; version: string }
  | { kind: 'run-self'; reason: string; dropCurrent: boolean };

/**
 * What the launcher does next. Steps that change files (commit, rollback, discard) are followed by
 * another decision; `trial`, `run` and `run-self` start something.
 */
export function decideBoot(i: BootInput): BootDecision {
  const t = i.trial;
  if (t) {
    if (t.verdict?.result === 'passed') return { kind: 'commit', trial: t };
    if (t.verdict?.result === 'failed') return { kind: 'rollback', trial: t, reason: t.verdict.reason };
    if (i.current?.version !== t.version)
      return {
        kind: 'discard-trial',
        trial: t,
        reason: `the switch to ${t.version} was cut short before \`current\` moved`,
      };
    if (i.current.problem)
      return { kind: 'rollback', trial: t, reason: `staged executable: ${i.current.problem}` };
    if (t.boots >= i.maxTrialBoots)
      return {
        kind: 'rollback',
        trial: t,
        reason: `its trial was cut short ${t.boots} time(s) (power loss, or the launcher was killed)`,
      };
    return { kind: 'trial', trial: t };
  }
  const cur = i.current;
  if (!cur) return { kind: 'run-self', reason: 'no self-update installed', dropCurrent: false };
  if (cur.problem) {
    if (i.previous && !i.previous.problem && compareVersions(i.previous.version, i.self) > 0)
      return { kind: 'run', version: i.previous.version };
    return { kind: 'run-self', reason: `current ${cur.version}: ${cur.problem}`, dropCurrent: true };
  }
  const tries = i.execAttempts;
  if (tries && tries.version === cur.version && tries.count >= MAX_EXEC_ATTEMPTS)
    return {
      kind: 'run-self',
      reason: `${cur.version} did not start after ${tries.count} attempts`,
      dropCurrent: true,
    };
  const order = compareVersions(cur.version, i.self);
  if (order < 0)
    return {
      kind: 'run-self',
      reason: `the installed ${i.self} is newer than the self-updated ${cur.version}`,
      dropCurrent: true,
    };
  if (order === 0) return { kind: 'run-self', reason: `current is this version`, dropCurrent: false };
  return { kind: 'run', version: cur.version };
}

export interface TrialRun {
  reached: ReadonlySet<TrialMilestone>;
  /** set once the process ended */
  exit?: { code: number | null; signal: string | null } | undefined;
  elapsedMs: number;
  deadlineMs: number;
}

export type TrialJudgement =
  | { result: 'pending' }
  | { result: 'passed' }
  | { result: 'failed'; reason: string };

/** Judge a trial run: every milestone before the deadline passes; an exit first or the deadline fails. */
export function judgeTrial(run: TrialRun): TrialJudgement {
  if (TRIAL_MILESTONES.every((m) => run.reached.has(m))) return { result: 'passed' };
  const missing = TRIAL_MILESTONES.find((m) => !run.reached.has(m))!;
  const reached = TRIAL_MILESTONES.filter((m) => run.reached.has(m));
  const at = `after ${(run.elapsedMs / 1000).toFixed(1)} s${reached.length ? ` (reached: ${reached.join(', ')})` : ''}`;
  if (run.exit) {
    const how =
      run.exit.signal !== null ? `was killed by ${run.exit.signal}` : `exited with code ${run.exit.code}`;
    return { result: 'failed', reason: `${how} during its trial, ${at}` };
  }
  if (run.elapsedMs >= run.deadlineMs)
    return {
      result: 'failed',
      reason: `${MILESTONE_MISSED[missing]} ${Math.round(run.deadlineMs / 1000)} s${reached.length ? ` (reached: ${reached.join(', ')})` : ''}`,
    };
  return { result: 'pending' };
}

// ---- progress, as reported ----------------------------------------------------------------------------

/** Where an agent update stands (reported state `agent.update`, status `agentUpdate`, events). */
export const UPDATE_PHASES = [
  'downloading',
  'staged',
  'trial',
  'committed',
  'rolled-back',
  'refused',
  'failed',
] as const;
export type UpdatePhase = (typeof UPDATE_PHASES)[number];

export interface UpdateStatus {
  version: string;
  phase: UpdatePhase;
  /** the version it started from */
  from?: string | undefined;
  reason?: string | undefined;
  /** bytes of the executable fetched so far (downloading) */
  progress?: { done: number; total: number } | undefined;
  at: number;
}
