/**
 * The running agent's half of a self-update (docs/self-update.md): from the `agent` a signed target
 * names to a staged executable and a switch, then back to the launcher, which runs the trial.
 *
 *   planAgentUpdate (pure)           nothing to do | refused (older, failed here before) | go on
 *   fetch the signed release manifest (blob transfer, pinned digest), verify key + domain tag
 *   checkRelease (pure)              this device's executable, schema and config formats
 *   space check                      executable + database copy + reserve, else NoSpace (nothing fetched)
 *   fetch the executable             resumable; its digest checked by the content store
 *   stage                            agent/<version>/berth: 0755, fsync, ELF machine checked
 *   wait until the apps are settled  no target applying or on probation
 *   switch (under the agent mutex)   database copy → trial journal → `current` → restart
 *
 * Refusals are final for the target that asked (a new target retries); failures (offline, no space)
 * are retried. Every phase is written to status.json and reported (events + reported state).
 */
import type { KeyObject } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Leases } from '../../content/leases.js';
import type { ContentStore } from '../../content/store.js';
import {
  type AgentArch,
  checkRelease,
  planAgentUpdate,
  type Refusal,
  type TrialRecord,
  type UpdatePhase,
  type UpdateStatus,
} from '../../core/self-update.js';
import type { Db } from '../../db/database.js';
import { fsyncDir, tempPathFor, writeFileAtomic } from '../../lib/atomic.js';
import { BerthError, errorMessage, isBerthError, noSpace, withContext } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { type Digest, sha256Digest } from '../../oci/digest.js';
import type { TargetAgent } from '../../transport/messages.js';
import { decodeSignedRelease, MAX_RELEASE_BYTES, type SignedRelease } from '../../transport/releases.js';
import type { Mutex } from '../mutex.js';
import type { Clock } from '../ports.js';
import { AgentDir } from './files.js';

export const RELEASE_FILE = 'release.json';

export interface SelfUpdaterOptions {
  dir: AgentDir;
  arch: AgentArch;
  /** the version running now */
  running: string;
  fleet: string;
  publicKey: KeyObject;
  /** the blob transfer (AgentConnection.fetcher.fetchBlob) */
  fetchBlob: (
    desc: { digest: Digest; size: number },
    onProgress?: (d: number, t: number) => void,
  ) => Promise<void>;
  online: () => boolean;
  store: ContentStore;
  db: Db;
  log: Logger;
  clock: Clock;
  mutex: Mutex;
  configFormat: number;
  reserveBytes: number;
  trialDeadlineMs: number;
  /** no target applying or on probation: the switch may happen */
  settled: () => boolean;
  /** report a phase change or progress */
  onUpdate: (u: UpdateStatus, phaseChanged: boolean) => void;
  /** the switch is done: stop the agent and go back to the launcher */
  restart: () => void;
  /** free bytes on the state dir's filesystem (statfs; tests inject) */
  freeBytes?: (dir: string) => Promise<number>;
  /** tests: called after each step of the switch (a kill -9 there must leave a bootable device) */
  afterSwitchStep?: (step: SwitchStep) => void | Promise<void>;
  retryMs?: number;
}

export type SwitchStep = 'db-copy' | 'journal' | 'current';

export class SelfUpdater {
  private desired: { agent: TargetAgent; key: string } | undefined;
  private refused: string | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private timer: ReturnType<Clock['setTimeout']> | undefined;
  private current: UpdateStatus | undefined;
  private lastProgressAt = 0;
  private switching = false;

  constructor(private readonly o: SelfUpdaterOptions) {}

  /** The update as last reported (null: none since this agent started and none on record). */
  get status(): UpdateStatus | undefined {
    return this.current;
  }

  /** Load the status on record (the launcher's commit or rollback) so it is reported. */
  async load(): Promise<UpdateStatus | undefined> {
    this.current = (await this.o.dir.readStatus()).update;
    return this.current;
  }

  /** What the latest target asks for; `key` names the target (a new key retries a refusal). */
  setDesired(agent: TargetAgent | undefined, key: string): void {
    this.desired = agent ? { agent, key } : undefined;
    this.poke();
  }

  /** Look again now (a new target, the link back, the reconciler settled). */
  poke(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) this.o.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.running = (async () => {
      do {
        this.again = false;
        await this.step().catch((err: unknown) => this.failed(err));
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = undefined;
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.o.clock.clearTimeout(this.timer);
    await this.running;
  }

  /** Resolves when no pass is running (tests). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private later(ms = this.o.retryMs ?? 60_000): void {
    if (this.stopped) return;
    if (this.timer) this.o.clock.clearTimeout(this.timer);
    this.timer = this.o.clock.setTimeout(() => {
      this.timer = undefined;
      this.poke();
    }, ms);
  }

  private async step(): Promise<void> {
    const want = this.desired;
    if (!want || this.switching) return;
    const { agent } = want;
    const facts = {
      running: this.o.running,
      platform: this.o.arch.platform,
      schema: this.schema(),
      configFormat: this.o.configFormat,
      failed: new Map(Object.entries((await this.o.dir.readStatus()).failed)),
    };
    const plan = planAgentUpdate(
      { version: agent.version, allowDowngrade: agent.allowDowngrade ?? false },
      facts,
    );
    if (plan.kind === 'none') return;
    if (this.refused === want.key) return;
    if (plan.kind === 'refuse') {
      // Back from a rollback under the very target that asked for it: "rolled back" stays the news.
      const st = await this.o.dir.readStatus();
      const rolledBack = st.update?.phase === 'rolled-back' && st.update.version === agent.version;
      if (rolledBack && st.switchedFor === want.key) {
        this.refused = want.key;
        return;
      }
      return this.refuse(want.key, agent.version, plan);
    }

    let staged = await this.stagedRelease(agent);
    if (!staged) {
      if (!this.o.online()) return; // poked again when the link is back
      if (agent.release.size > MAX_RELEASE_BYTES)
        return this.refuse(want.key, agent.version, {
          code: 'InvalidInput',
          reason: `release manifest of ${agent.release.size} bytes exceeds ${MAX_RELEASE_BYTES}`,
        });
      const leases = new Leases(this.o.db);
      const lease = leases.create(`self-update-${agent.version}-${process.pid}`);
      try {
        lease.add(agent.release.digest as Digest);
        await this.o.fetchBlob({ digest: agent.release.digest as Digest, size: agent.release.size });
        const bytes = await this.o.store.get(agent.release.digest as Digest);
        const signed = decodeSignedRelease(bytes, this.o.publicKey);
        if (!signed.ok)
          return this.refuse(want.key, agent.version, { code: 'InvalidInput', reason: signed.reason });
        const release = signed.value.release;
        if (release.fleet !== this.o.fleet)
          return this.refuse(want.key, agent.version, {
            code: 'InvalidInput',
            reason: `release manifest is for fleet ${release.fleet}, this device is in ${this.o.fleet}`,
          });
        const checked = checkRelease(release, { version: agent.version, allowDowngrade: false }, facts);
        if (!checked.ok) return this.refuse(want.key, agent.version, checked);
        const artifact = { digest: checked.artifact.digest as Digest, size: checked.artifact.size };
        await this.checkSpace(agent.version, artifact.size);
        lease.add(artifact.digest);
        this.report({
          version: agent.version,
          phase: 'downloading',
          progress: { done: 0, total: artifact.size },
        });
        try {
          await this.o.fetchBlob(artifact, (done, total) => this.progress(agent.version, done, total));
        } catch (err) {
          if (isBerthError(err, 'Corrupt'))
            return this.refuse(want.key, agent.version, { code: 'InvalidInput', reason: errorMessage(err) });
          throw err;
        }
        try {
          await this.o.dir.stage(agent.version, this.o.store.blobPath(artifact.digest));
        } catch (err) {
          await this.o.store.delete(artifact.digest).catch(() => undefined);
          if (isBerthError(err, 'Corrupt'))
            return this.refuse(want.key, agent.version, { code: 'InvalidInput', reason: errorMessage(err) });
          throw err;
        }
        await writeFileAtomic(path.join(this.o.dir.root, agent.version, RELEASE_FILE), bytes);
        await this.o.store.delete(agent.release.digest as Digest).catch(() => undefined);
        staged = signed.value;
      } finally {
        lease.release();
      }
      this.o.log.info({ version: agent.version }, 'agent release staged');
    }
    this.report({ version: agent.version, phase: 'staged' });
    if (!this.o.settled()) {
      this.o.log.info({ version: agent.version }, 'agent switch waits for the apps to settle');
      this.later(5000);
      return;
    }
    await this.o.mutex.run(async () => {
      if (this.stopped || !this.o.settled() || this.desired?.agent.version !== agent.version) {
        this.later(5000);
        return;
      }
      await this.o.dir.writeStatus((st) => ({ ...st, switchedFor: want.key }));
      await this.switchTo(agent.version);
      this.switching = true;
    });
    if (this.switching) this.o.restart();
  }

  /** The staged executable and its verified manifest when `agent` is already staged here. */
  private async stagedRelease(agent: TargetAgent): Promise<SignedRelease | undefined> {
    if (!(await this.o.dir.isStaged(agent.version))) return undefined;
    let bytes: Buffer;
    try {
      bytes = await fsp.readFile(path.join(this.o.dir.root, agent.version, RELEASE_FILE));
    } catch {
      return undefined;
    }
    if (sha256Digest(bytes) !== agent.release.digest) return undefined;
    const signed = decodeSignedRelease(bytes, this.o.publicKey);
    return signed.ok ? signed.value : undefined;
  }

  private async checkSpace(version: string, exeBytes: number): Promise<void> {
    const dbBytes = await fileSize(this.o.dir.dbFile);
    const walBytes = await fileSize(`${this.o.dir.dbFile}-wal`);
    const need = exeBytes + dbBytes + walBytes;
    const free = await (this.o.freeBytes ?? statfsFree)(this.o.dir.stateDir);
    if (free - this.o.reserveBytes < need)
      throw noSpace(
        `not enough disk space for agent ${version}: need ${need} bytes (executable ${exeBytes} + database copy ${dbBytes + walBytes}) plus ${this.o.reserveBytes} reserve, ${free} available`,
      );
  }

  /**
   * The switch. Each step is durable before the next; a power cut between any two leaves either the
   * old version running (no journal, or a journal whose `current` never moved: discarded) or the new one
   * on trial.
   */
  async switchTo(version: string): Promise<TrialRecord> {
    const { dir } = this.o;
    await dir.ensure();
    const copy = dir.dbCopyFile();
    const tmp = tempPathFor(copy);
    try {
      this.o.db.prepare('VACUUM INTO ?').run(tmp);
      const fh = await fsp.open(tmp, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, copy);
      await fsyncDir(dir.root);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw withContext('copying the database for a rollback', err);
    }
    await this.o.afterSwitchStep?.('db-copy');
    const trial: TrialRecord = {
      id: AgentDir.newTrialId(),
      version,
      previous: await dir.link('current'),
      from: this.o.running,
      boots: 0,
      createdAt: this.o.clock.now(),
      deadlineMs: this.o.trialDeadlineMs,
      db: { copy: path.basename(copy), schema: this.schema() },
    };
    await dir.writeTrial(trial);
    await this.o.afterSwitchStep?.('journal');
    await dir.setLink('current', version);
    await this.o.afterSwitchStep?.('current');
    this.o.log.info(
      { version, from: this.o.running },
      'switched to the new agent; restarting into its trial',
    );
    return trial;
  }

  private schema(): number {
    return this.o.db.pragma('user_version', { simple: true }) as number;
  }

  private refuse(key: string, version: string, r: Refusal): void {
    this.refused = key;
    this.o.log.error({ version, code: r.code, reason: r.reason }, 'agent release refused');
    this.report({ version, phase: 'refused', reason: `${r.code}: ${r.reason}` });
  }

  private failed(err: unknown): void {
    const e = err instanceof BerthError ? err : withContext('agent update', err);
    const version = this.desired?.agent.version ?? '?';
    this.o.log.warn({ version, code: e.code, err: e.message }, 'agent update failed; retrying later');
    this.report({ version, phase: 'failed', reason: `${e.code}: ${e.message}` });
    this.later();
  }

  private progress(version: string, done: number, total: number): void {
    const now = this.o.clock.now();
    if (done < total && now - this.lastProgressAt < 1000) return;
    this.lastProgressAt = now;
    this.report({ version, phase: 'downloading', progress: { done, total } });
  }

  private report(u: {
    version: string;
    phase: UpdatePhase;
    reason?: string;
    progress?: UpdateStatus['progress'];
  }) {
    const prev = this.current;
    const next: UpdateStatus = { ...u, from: this.o.running, at: this.o.clock.now() };
    const changed =
      prev?.phase !== next.phase || prev.version !== next.version || prev.reason !== next.reason;
    if (!changed && !u.progress) return;
    this.current = next;
    if (changed)
      void this.o.dir
        .setUpdate(next)
        .catch((err: unknown) => this.o.log.warn({ err: errorMessage(err) }, 'update status not written'));
    this.o.onUpdate(next, changed);
  }
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await fsp.stat(file)).size;
  } catch {
    return 0;
  }
}

async function statfsFree(dir: string): Promise<number> {
  const s = await fsp.statfs(dir);
  return s.bavail * s.bsize;
}
