/**
 * Helpers for the self-update tests: stand-in versions (test/helpers/fake-agent.c compiled per version and
 * behaviour), a state dir with an agent dir, and journal states to start the launcher from.
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { AgentDir } from '../../src/agent/self-update/files.js';
import { agentArch, type TrialRecord } from '../../src/core/self-update.js';
import { exec } from '../../src/lib/exec.js';

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
