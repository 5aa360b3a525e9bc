/**
 * Agent releases (docs/self-update.md): `berth fleet release push dist/ --version 0.2.0` stores the
 * executables `npm run package` built (one per arch, with their build records) as blobs, and a release
 * manifest listing them, signed with the fleet key; targets then pin it (`DeployInput.agent`, see
 * deploy.ts). Everything a device would refuse is refused here first, before anything is stored for good:
 * a build record for another version, an executable that does not match its record (size, sha256) or is
 * not an ELF executable for its arch, records that disagree on the database or config they read, a
 * version pushed before.
 */
import type { KeyObject } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import type { ContentStore } from '../../content/store.js';
import {
  AGENT_ARCHES,
  checkExecutable,
  compareVersions,
  ELF_HEADER_BYTES,
  isVersion,
} from '../../core/self-update.js';
import { conflict, corrupt, invalidInput, notFound, withContext } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import type { Digest } from '../../oci/digest.js';
import type { TargetAgent } from '../../transport/messages.js';
import { type ReleaseManifest, signRelease } from '../../transport/releases.js';
import type { FleetStores, ReleaseRow } from '../store/index.js';

/** What `scripts/package.mjs` writes next to each executable (dist/berth-linux-<arch>.json). */
const BuildRecordSchema = z
  .object({
    arch: z.string().max(32),
    ociPlatform: z.string().max(64),
    version: z.string().max(64),
    node: z.string().max(128).optional(),
    size: z.number().int().positive(),
    sha256: z.string().regex(/^[a-f0-9]{64}$/),
    database: z.object({ schema: z.number().int().nonnegative(), minSchema: z.number().int().nonnegative() }),
    config: z.object({ format: z.number().int().min(1), minFormat: z.number().int().min(1) }),
  })
  .passthrough();

const MAX_RECORD_BYTES = 64 * 1024;
const RECORD = /^berth-linux-([a-z0-9]+)\.json$/;

export interface ReleaseServiceOptions {
  stores: FleetStores;
  store: ContentStore;
  fleet: string;
  privateKey: KeyObject;
  log: Logger;
  now?: () => number;
}

export class ReleaseService {
  private readonly now: () => number;

  constructor(private readonly o: ReleaseServiceOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Push the executables in `dir` (their build records name them) as release `version`. */
  async push(dir: string, version: string, o: { createdBy?: string | undefined } = {}): Promise<ReleaseRow> {
    if (!isVersion(version))
      throw invalidInput(`version ${JSON.stringify(version)}: expected a semantic version like 0.2.0`);
    if (this.o.stores.releases.get(version)) throw conflict(`release ${version} exists; remove it first`);
    let names: string[];
    try {
      names = (await fsp.readdir(dir)).filter((n) => RECORD.test(n)).sort();
    } catch (err) {
      throw withContext(`reading ${dir}`, err);
    }
    if (names.length === 0)
      throw invalidInput(`${dir} holds no build records (berth-linux-<arch>.json): run npm run package`);
    const records = await Promise.all(names.map((n) => this.record(dir, n, version)));
    const first = records[0]!.rec;
    for (const { rec, file } of records) {
      if (JSON.stringify(rec.database) !== JSON.stringify(first.database))
        throw invalidInput(
          `${file}: database ${JSON.stringify(rec.database)} differs from the other arches'`,
        );
      if (JSON.stringify(rec.config) !== JSON.stringify(first.config))
        throw invalidInput(`${file}: config ${JSON.stringify(rec.config)} differs from the other arches'`);
    }
    const added: Digest[] = [];
    try {
      const artifacts: ReleaseManifest['artifacts'] = {};
      for (const { rec, exe } of records) {
        const info = await this.o.store.putStream(createReadStream(exe), {
          expected: `sha256:${rec.sha256}` as Digest,
          size: rec.size,
        });
        if (info.created) added.push(info.digest);
        artifacts[rec.ociPlatform] = {
          digest: info.digest,
          size: info.size,
          ...(rec.node ? { node: rec.node } : {}),
        };
      }
      const manifest: ReleaseManifest = {
        v: 1,
        fleet: this.o.fleet,
        version,
        createdAt: new Date(this.now()).toISOString(),
        database: first.database,
        config: { format: first.config.format, minFormat: first.config.minFormat },
        artifacts,
      };
      const m = await this.o.store.put(JSON.stringify(signRelease(manifest, this.o.privateKey)));
      if (m.created) added.push(m.digest);
      const row: ReleaseRow = {
        version,
        manifest: { digest: m.digest, size: m.size },
        artifacts: artifacts as ReleaseRow['artifacts'],
        database: manifest.database,
        config: manifest.config,
        createdAt: this.now(),
        createdBy: o.createdBy ?? null,
      };
      if (!this.o.stores.releases.insert(row)) throw conflict(`release ${version} exists; remove it first`);
      this.o.log.info({ version, platforms: Object.keys(artifacts) }, 'agent release pushed');
      return row;
    } catch (err) {
      for (const d of added) await this.o.store.delete(d).catch(() => undefined);
      throw err;
    }
  }

  /** One build record, checked against its executable (without reading the executable twice). */
  private async record(dir: string, name: string, version: string) {
    const file = path.join(dir, name);
    const text = await readBounded(file);
    let rec: z.infer<typeof BuildRecordSchema>;
    try {
      rec = BuildRecordSchema.parse(JSON.parse(text));
    } catch (err) {
      throw invalidInput(`${file} is not a build record: ${(err as Error).message.slice(0, 200)}`);
    }
    if (rec.version !== version)
      throw invalidInput(`${file} is the build of version ${rec.version}, not ${version}`);
    const arch = AGENT_ARCHES.find((a) => a.platform === rec.ociPlatform);
    if (!arch || `berth-linux-${rec.arch}.json` !== name)
      throw invalidInput(`${file}: platform ${rec.ociPlatform} (arch ${rec.arch}) is not one berth builds`);
    const exe = path.join(dir, `berth-linux-${rec.arch}`);
    let header: Buffer;
    let size: number;
    try {
      const fh = await fsp.open(exe, 'r');
      try {
        size = (await fh.stat()).size;
        header = Buffer.alloc(ELF_HEADER_BYTES);
        await fh.read(header, 0, header.length, 0);
      } finally {
        await fh.close();
      }
    } catch (err) {
      throw withContext(`executable for ${rec.arch}`, err);
    }
    if (size !== rec.size) throw corrupt(`${exe} is ${size} bytes, its build record says ${rec.size}`);
    const why = checkExecutable(header, arch);
    if (why) throw invalidInput(`${exe}: ${why}`);
    return { rec, exe, file };
  }

  /** Newest version first. */
  list(): ReleaseRow[] {
    return this.o.stores.releases.list().sort((a, b) => compareVersions(b.version, a.version));
  }

  /** Remove a release no current target names; its blobs go unless another release lists them. */
  async remove(version: string): Promise<void> {
    const row = this.o.stores.releases.get(version);
    if (!row) throw notFound(`no release ${version} in the fleet`);
    const users = this.o.stores.deployments.agentInUse(version);
    if (users.length > 0)
      throw conflict(
        `release ${version} is named by the current target of ${users.map((u) => `${u.kind} ${u.id}`).join(', ')}: deploy another first`,
      );
    this.o.stores.releases.remove(version);
    for (const d of [row.manifest.digest, ...Object.values(row.artifacts).map((a) => a.digest)])
      if (!this.o.stores.releases.blobInUse(d, version)) await this.o.store.delete(d).catch(() => undefined);
    this.o.log.info({ version }, 'agent release removed');
  }

  /** What a target names for `agent`: the release's signed manifest, pinned. */
  pin(agent: { version: string; allowDowngrade?: boolean | undefined }): {
    agent: TargetAgent;
    release: ReleaseRow;
  } {
    const release = this.o.stores.releases.get(agent.version);
    if (!release) throw notFound(`agent release ${agent.version} is not in the fleet: push it first`);
    return {
      release,
      agent: {
        version: release.version,
        release: release.manifest,
        ...(agent.allowDowngrade ? { allowDowngrade: true } : {}),
      },
    };
  }
}

async function readBounded(file: string): Promise<string> {
  let st: import('node:fs').Stats;
  try {
    st = await fsp.stat(file);
  } catch (err) {
    throw withContext(`reading ${file}`, err);
  }
  if (st.size > MAX_RECORD_BYTES) throw invalidInput(`${file} is larger than ${MAX_RECORD_BYTES} bytes`);
  return fsp.readFile(file, 'utf8');
}
