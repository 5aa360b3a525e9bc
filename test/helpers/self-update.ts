/**
 * Helpers for the self-update tests: stand-in versions (test/helpers/fake-agent.c compiled per version and
 * behaviour), a state dir with an agent dir, and journal states to start the launcher from.
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import type BetterSqlite3 from 'better-sqlite3';
import { AgentDir } from '../../src/agent/self-update/files.js';
import { type AgentExit, Launcher, type LauncherOptions } from '../../src/agent/self-update/launcher.js';
import { agentArch, type TrialRecord } from '../../src/core/self-update.js';
import { databaseSchemaVersion, openDatabase } from '../../src/db/database.js';
import { MIGRATIONS } from '../../src/db/migrations.js';
import { exec } from '../../src/lib/exec.js';
import { silentLogger } from '../../src/lib/logger.js';

export type FakeMode = 'GOOD' | 'EXIT' | 'HANG' | 'NOCONNECT' | 'CRASH';

const SOURCE = path.join(import.meta.dirname, 'fake-agent.c');
const built = new Map<string, Promise<string>>();
let buildDir: string | undefined;

/** A fake berth executable of `version` behaving as `mode` (compiled once per test process). */
export function fakeAgent(version: string, mode: FakeMode, cc = 'gcc'): Promise<string> {
  const key = `${version}-${mode}-${cc}`;
  let p = built.get(key);
  if (!p) {
    p = (async () => {
      buildDir ??= await fsp.mkdtemp(path.join(tmpdir(), 'berth-fake-agents-'));
      const out = path.join(buildDir, key);
      await exec(cc, ['-O1', '-static', `-DVERSION="${version}"`, `-DMODE_${mode}`, '-o', out, SOURCE]);
      return out;
    })();
    built.set(key, p);
  }
  return p;
}

export async function removeFakeAgents(): Promise<void> {
  if (buildDir) await fsp.rm(buildDir, { recursive: true, force: true });
}

export interface SelfUpdateDevice {
  stateDir: string;
  dir: AgentDir;
  log: string;
  /** lines of the fake agents' log: [version, mode, trial|run, pid] */
  starts(): Promise<string[][]>;
  /** copy a fake version into agent/<version>/berth (as a staged release) */
  stage(version: string, mode: FakeMode): Promise<void>;
}

export async function selfUpdateDevice(t: ExecutionContext): Promise<SelfUpdateDevice> {
  const work = await fsp.mkdtemp(path.join(tmpdir(), 'berth-su-'));
  t.teardown(() => fsp.rm(work, { recursive: true, force: true }));
  const stateDir = path.join(work, 'state');
  await fsp.mkdir(stateDir);
  const dir = new AgentDir(stateDir, agentArch(process.arch)!);
  await dir.ensure();
  const log = path.join(work, 'starts.log');
  return {
    stateDir,
    dir,
    log,
    async starts() {
      const text = await fsp.readFile(log, 'utf8').catch(() => '');
      return text
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(' '));
    },
    async stage(version, mode) {
      await fsp.mkdir(path.join(dir.root, version), { recursive: true });
      await fsp.copyFile(await fakeAgent(version, mode), dir.executable(version));
      await fsp.chmod(dir.executable(version), 0o755);
    },
  };
}

export function trialRecord(over: Partial<TrialRecord> = {}): TrialRecord {
  return {
    id: 'feedfacecafebeef',
    version: '0.2.0',
    previous: null,
    from: '0.1.0',
    boots: 0,
    createdAt: Date.now(),
    deadlineMs: 20_000,
    db: null,
    ...over,
  };
}

/**
 * A launcher over `dir` in spawn mode (this Node has no execve) whose in-process agent (the installed
 * version) only counts its runs.
 */
export function testLauncher(
  dir: AgentDir,
  o: {
    self?: string;
    deadlineMs?: number;
    trialBoots?: number;
    selfExit?: AgentExit;
    env?: NodeJS.ProcessEnv;
    afterStep?: LauncherOptions['afterStep'];
  } = {},
): { launcher: Launcher; selfRuns: () => number } {
  let runs = 0;
  const launcher = new Launcher({
    dir,
    selfVersion: o.self ?? '0.1.0',
    selfArgv: ['/nonexistent/berth', 'agent'],
    agentArgs: ['agent'],
    log: silentLogger(),
    trialDeadlineMs: o.deadlineMs ?? 20_000,
    trialBoots: o.trialBoots ?? 2,
    execve: undefined,
    env: { ...process.env, ...o.env },
    stopGraceMs: 500,
    databaseSchema: async (file) => databaseSchemaVersion(file),
    runSelf: async () => {
      runs++;
      return o.selfExit ?? { restart: false, code: 0 };
    },
    ...(o.afterStep ? { afterStep: o.afterStep } : {}),
  });
  return { launcher, selfRuns: () => runs };
}

/** A database at `schema` (berth's own migrations when it is theirs) with one row naming `tag`. */
export function makeDb(file: string, schema: number, tag: string): void {
  const db = openDatabase(file, {
    migrations:
      schema === MIGRATIONS.length
        ? [...MIGRATIONS]
        : Array.from({ length: schema }, (_, i) => ({
            name: `m${i}`,
            up: (x: BetterSqlite3.Database) => x.exec(`CREATE TABLE t${i} (x)`),
          })),
  });
  db.exec('CREATE TABLE IF NOT EXISTS marker (tag TEXT)');
  db.prepare('DELETE FROM marker').run();
  db.prepare('INSERT INTO marker VALUES (?)').run(tag);
  db.close();
}

export function readDb(file: string): { schema: number; tag: string } {
  const db = openDatabase(file, { readonly: true });
  try {
    const tag = (db.prepare('SELECT tag FROM marker').get() as { tag: string }).tag;
    return { schema: db.pragma('user_version', { simple: true }) as number, tag };
  } finally {
    db.close();
  }
}
