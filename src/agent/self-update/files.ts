/**
 * The agent's own releases on the device, `<state-dir>/agent/` (docs/self-update.md):
 *
 *   <version>/berth     a staged executable (0755, fsynced, ELF-checked for this machine)
 *   current  → <version> the version the launcher runs; absent: the executable the init started
 *   previous → <version> the version before current (kept for the next rollback and for reports)
 *   trial.json          the switch's journal: present from just before `current` moves until the trial
 *                       is committed or rolled back (src/core/self-update.ts TrialRecord)
 *   rollback.db         the database as it was at the switch, for the version rolled back to
 *   status.json         the latest update's phase, and the versions that failed their trial here
 *
 * Links move by symlink(tmp) + rename + fsync(dir), files by temp + fsync + rename + fsync(dir), so a
 * power cut leaves each one old or new. Nothing here is in SQLite on purpose: the launcher decides before
 * any database is opened, and a rollback may replace the database itself.
 */
import { randomBytes } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import {
  type AgentArch,
  checkExecutable,
  ELF_HEADER_BYTES,
  type InstalledVersion,
  isVersion,
  type TrialRecord,
  UPDATE_PHASES,
  type UpdateStatus,
} from '../../core/self-update.js';
import { fsyncDir, tempPathFor, writeFileAtomic } from '../../lib/atomic.js';
import { corrupt, withContext } from '../../lib/errors.js';

const MAX_RECORD_BYTES = 64 * 1024;
export const EXECUTABLE_NAME = 'berth';

const version = z.string().refine(isVersion, { message: 'expected a version' });

const TrialRecordSchema: z.ZodType<TrialRecord> = z
  .object({
    id: z.string().regex(/^[a-f0-9]{8,32}$/),
    version,
    previous: version.nullable(),
    from: z.string().max(64),
    boots: z.number().int().nonnegative(),
    createdAt: z.number(),
    deadlineMs: z.number().int().positive(),
    db: z
      .object({ copy: z.string().max(64), schema: z.number().int().nonnegative() })
      .strict()
      .nullable(),
    verdict: z
      .discriminatedUnion('result', [
        z.object({ result: z.literal('passed') }).strict(),
        z.object({ result: z.literal('failed'), reason: z.string().max(2048) }).strict(),
      ])
      .optional(),
    restoreDb: z.boolean().optional(),
    child: z
      .object({ pid: z.number().int().positive(), startTime: z.string().max(32) })
      .strict()
      .optional(),
  })
  .strict() as unknown as z.ZodType<TrialRecord>;

const UpdateStatusSchema = z
  .object({
    version: z.string().max(64),
    phase: z.enum(UPDATE_PHASES),
    from: z.string().max(64).optional(),
    reason: z.string().max(2048).optional(),
    progress: z.object({ done: z.number(), total: z.number() }).strict().optional(),
    at: z.number(),
  })
  .strict();

const StatusFileSchema = z
  .object({
    update: UpdateStatusSchema.optional(),
    /** version → why its trial failed */
    failed: z.record(z.string().max(2048)).default({}),
    /** the update outcome the running agent has already sent as an event */
    told: z.string().max(256).optional(),
    /** the target (scope@version) the last switch was made for: its refusal after a rollback is not news */
    switchedFor: z.string().max(512).optional(),
  })
  .strict();
export type StatusFile = z.infer<typeof StatusFileSchema>;

export class AgentDir {
  readonly root: string;
  private statusWrites: Promise<unknown> = Promise.resolve();

  constructor(
    readonly stateDir: string,
    readonly arch: AgentArch,
  ) {
    this.root = path.join(stateDir, 'agent');
  }

  get trialFile(): string {
    return path.join(this.root, 'trial.json');
  }
  get statusFile(): string {
    return path.join(this.root, 'status.json');
  }
  get dbFile(): string {
    return path.join(this.stateDir, 'berth.db');
  }
  dbCopyFile(name = 'rollback.db'): string {
    return path.join(this.root, name);
  }
  executable(v: string): string {
    if (!isVersion(v)) throw corrupt(`not a version: ${JSON.stringify(v)}`);
    return path.join(this.root, v, EXECUTABLE_NAME);
  }

  async ensure(): Promise<void> {
    await fsp.mkdir(this.root, { recursive: true, mode: 0o755 });
  }

  // ---- links ----------------------------------------------------------------------------------------

  /** The version a link names, or null when it does not exist. */
  async link(name: 'current' | 'previous'): Promise<string | null> {
    try {
      const target = await fsp.readlink(path.join(this.root, name));
      if (!isVersion(target)) throw corrupt(`${this.root}/${name} points at ${JSON.stringify(target)}`);
      return target;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw withContext(`reading ${name} link`, err);
    }
  }

  /** Point `name` at `v` atomically (null removes it). */
  async setLink(name: 'current' | 'previous', v: string | null): Promise<void> {
    const link = path.join(this.root, name);
    if (v === null) {
      await fsp.rm(link, { force: true });
    } else {
      if (!isVersion(v)) throw corrupt(`not a version: ${JSON.stringify(v)}`);
      const tmp = tempPathFor(link);
      await fsp.symlink(v, tmp);
      try {
        await fsp.rename(tmp, link);
      } catch (err) {
        await fsp.rm(tmp, { force: true });
        throw err;
      }
    }
    await fsyncDir(this.root);
  }

  /** A version as the launcher sees it: whether its executable can run here. */
  async inspect(v: string | null): Promise<InstalledVersion | null> {
    if (v === null) return null;
    return { version: v, problem: await this.executableProblem(this.executable(v)) };
  }

  /** Why `file` cannot run on this machine (missing, not executable, not ELF for this arch), if so. */
  async executableProblem(file: string): Promise<string | undefined> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(file, 'r');
    } catch (err) {
      return `${file}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) return `${file} is not a file`;
      if ((st.mode & 0o111) === 0) return `${file} is not executable`;
      const header = Buffer.alloc(ELF_HEADER_BYTES);
      const { bytesRead } = await fh.read(header, 0, header.length, 0);
      const why = checkExecutable(header.subarray(0, bytesRead), this.arch);
      return why ? `${file}: ${why}` : undefined;
    } finally {
      await fh.close();
    }
  }

  // ---- staging --------------------------------------------------------------------------------------

  /**
   * Make `source` (a verified blob) the executable of version `v`: moved (renamed, or copied when on
   * another filesystem), made executable, fsynced, checked for this machine's ELF, then renamed to its
   * final name. The source is gone afterwards. A wrong executable is removed and refused.
   */
  async stage(v: string, source: string): Promise<string> {
    const dir = path.join(this.root, v);
    await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
    const final = this.executable(v);
    const tmp = tempPathFor(final);
    try {
      await fsp.rename(source, tmp);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw withContext(`staging ${v}`, err);
      await fsp.copyFile(source, tmp, constants.COPYFILE_EXCL);
      await fsp.rm(source, { force: true });
    }
    try {
      await fsp.chmod(tmp, 0o755);
      const fh = await fsp.open(tmp, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      const problem = await this.executableProblem(tmp);
      if (problem) throw corrupt(`release ${v}: ${problem.replace(`${tmp}: `, '')}`);
      await fsp.rename(tmp, final);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    }
    await fsyncDir(dir);
    await fsyncDir(this.root);
    return final;
  }

  async isStaged(v: string): Promise<boolean> {
    return (await this.executableProblem(this.executable(v))) === undefined;
  }

  /**
   * Without a journal: the leftovers of a switch cut short (temp files, a database copy no journal
   * names). Staged versions stay: the agent switches to them again.
   */
  async removeLeftovers(): Promise<void> {
    let names: string[];
    try {
      names = await fsp.readdir(this.root);
    } catch {
      return;
    }
    for (const name of names)
      if (name.startsWith('.tmp-') || name === path.basename(this.dbCopyFile()))
        await fsp.rm(path.join(this.root, name), { recursive: true, force: true });
  }

  /** Remove version directories other than `keep`, and leftovers of interrupted writes. */
  async prune(keep: ReadonlyArray<string | null>): Promise<string[]> {
    const removed: string[] = [];
    let names: string[];
    try {
      names = await fsp.readdir(this.root);
    } catch {
      return removed;
    }
    for (const name of names) {
      const leftover = name.startsWith('.tmp-');
      if (leftover || (isVersion(name) && !keep.includes(name))) {
        await fsp.rm(path.join(this.root, name), { recursive: true, force: true });
        removed.push(name);
      }
    }
    return removed;
  }

  // ---- records --------------------------------------------------------------------------------------

  async readTrial(): Promise<TrialRecord | null> {
    const raw = await readBounded(this.trialFile);
    if (raw === undefined) return null;
    const parsed = TrialRecordSchema.safeParse(parseJson(raw));
    if (!parsed.success) throw corrupt(`${this.trialFile} is not a trial record`);
    return parsed.data as TrialRecord;
  }

  writeTrial(t: TrialRecord): Promise<void> {
    return writeFileAtomic(this.trialFile, `${JSON.stringify(t)}\n`);
  }

  async removeTrial(): Promise<void> {
    await fsp.rm(this.trialFile, { force: true });
    await fsyncDir(this.root);
  }

  async readStatus(): Promise<StatusFile> {
    const raw = await readBounded(this.statusFile).catch(() => undefined);
    const parsed = raw === undefined ? undefined : StatusFileSchema.safeParse(parseJson(raw));
    return parsed?.success ? parsed.data : { failed: {} };
  }

  /** Read-change-write of status.json, one at a time (writers in one process never lose each other's change). */
  writeStatus(change: (s: StatusFile) => StatusFile): Promise<StatusFile> {
    const run = this.statusWrites.then(async () => {
      await this.ensure();
      const next = change(await this.readStatus());
      await writeFileAtomic(this.statusFile, `${JSON.stringify(next)}\n`);
      return next;
    });
    this.statusWrites = run.catch(() => undefined);
    return run;
  }

  setUpdate(update: UpdateStatus): Promise<StatusFile> {
    return this.writeStatus((s) => ({ ...s, update }));
  }

  /** execs of a version it has not yet confirmed (see BootInput.execAttempts) */
  async readExecAttempts(): Promise<{ version: string; count: number } | null> {
    const raw = await readBounded(path.join(this.root, 'exec.json')).catch(() => undefined);
    const parsed =
      raw === undefined
        ? undefined
        : z.object({ version, count: z.number().int().nonnegative() }).strict().safeParse(parseJson(raw));
    return parsed?.success ? parsed.data : null;
  }

  writeExecAttempts(a: { version: string; count: number }): Promise<void> {
    return writeFileAtomic(path.join(this.root, 'exec.json'), `${JSON.stringify(a)}\n`);
  }

  /** The exec'd version confirms it runs. */
  async clearExecAttempts(): Promise<void> {
    await fsp.rm(path.join(this.root, 'exec.json'), { force: true });
  }

  static newTrialId(): string {
    return randomBytes(8).toString('hex');
  }
}

async function readBounded(file: string): Promise<string | undefined> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw withContext(`reading ${file}`, err);
  }
  try {
    const buf = Buffer.alloc(MAX_RECORD_BYTES + 1);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    if (bytesRead > MAX_RECORD_BYTES) throw corrupt(`${file} is larger than ${MAX_RECORD_BYTES} bytes`);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}
