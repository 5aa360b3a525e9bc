/**
 * The running agent's half of a self-update (src/agent/self-update/updater.ts) over a real broker and
 * fleet blob server: a release is fetched with the blob transfer, verified, staged and switched to (the
 * trial journal, the database copy, `current`) — and every bad input is refused with nothing switched:
 * a manifest signed by another key or tampered with, a blob that does not hash to its digest, no
 * executable for this arch, an executable for another machine (ELF), an older release (unless allowed),
 * a version that failed here before, and a disk too full to stage it (NoSpace, before and during the fetch).
 * The executables are small real ELF programs (test/helpers/fake-agent.c); self-update-package.test.ts
 * runs the real ones.
 */
import type { KeyObject } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { AgentConnection } from '../../src/agent/connection.js';
import { Mutex } from '../../src/agent/mutex.js';
import { systemClock } from '../../src/agent/ports.js';
import { AgentDir } from '../../src/agent/self-update/files.js';
import { SelfUpdater } from '../../src/agent/self-update/updater.js';
import { ContentStore } from '../../src/content/store.js';
import { agentArch, type UpdateStatus } from '../../src/core/self-update.js';
import { openDatabase } from '../../src/db/database.js';
import { MIGRATIONS } from '../../src/db/migrations.js';
import { loadFleetPrivateKey, resolvePublicKey } from '../../src/fleet/keys.js';
import { exec } from '../../src/lib/exec.js';
import type { Digest } from '../../src/oci/digest.js';
import type { TargetAgent } from '../../src/transport/messages.js';
import { type ReleaseManifest, signRelease } from '../../src/transport/releases.js';
import { generateFleetKey, loadPrivateKey } from '../../src/transport/signing.js';
import { FLEET, type FleetSide, startFleet, tempDir, testLog, waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';
import { fakeAgent, removeFakeAgents } from '../helpers/self-update.js';

test.after.always(removeFakeAgents);

const ARCH = agentArch(process.arch)!;

interface Release {
  version: string;
  /** platform → executable file */
  exes?: Record<string, string>;
  key?: KeyObject;
  edit?: (m: ReleaseManifest) => ReleaseManifest;
  /** change the signed bytes after signing */
  tamper?: boolean;
}

/** Put a release into the fleet's content store as the fleet's release push would; the target's `agent`. */
async function release(fleet: FleetSide, r: Release): Promise<TargetAgent & { exeDigest: Digest }> {
  const exes = r.exes ?? { [ARCH.platform]: await fakeAgent(r.version, 'GOOD') };
  const artifacts: ReleaseManifest['artifacts'] = {};
  for (const [platform, file] of Object.entries(exes)) {
    const info = await fleet.store.put(await fsp.readFile(file));
    artifacts[platform] = { digest: info.digest, size: info.size };
  }
  let manifest: ReleaseManifest = {
    v: 1,
    fleet: FLEET,
    version: r.version,
    createdAt: new Date().toISOString(),
    database: { schema: MIGRATIONS.length, minSchema: 0 },
    config: { format: 1, minFormat: 1 },
    artifacts,
  };
  if (r.edit) manifest = r.edit(manifest);
  const signed = signRelease(manifest, r.key ?? (await loadFleetPrivateKey(fleet.dir)));
  if (r.tamper) signed.release = { ...signed.release, createdAt: new Date(0).toISOString() };
  const info = await fleet.store.put(JSON.stringify(signed));
  const exe = Object.values(artifacts)[0]!;
  return {
    version: r.version,
    release: { digest: info.digest, size: info.size },
    exeDigest: exe.digest as Digest,
  };
}

interface Device {
  dir: AgentDir;
  store: ContentStore;
  updater: SelfUpdater;
  updates: UpdateStatus[];
  restarts: number;
  conn: AgentConnection;
  /** the updater's pass for `agent` has finished */
  apply(agent: TargetAgent): Promise<UpdateStatus | undefined>;
}

async function device(
  t: ExecutionContext,
  fleet: FleetSide,
  o: { running?: string; stateDir?: string; freeBytes?: (d: string) => Promise<number> } = {},
): Promise<Device> {
  const stateDir = o.stateDir ?? (await tempDir(t, 'su-device'));
  const db = openDatabase(path.join(stateDir, 'berth.db'));
  const store = new ContentStore(path.join(stateDir, 'content'));
  const publicKey = await resolvePublicKey(fleet.publicKeyFile);
  const deviceId = `su-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const conn = new AgentConnection({
    fleet: FLEET,
    deviceId,
    groups: [],
    platform: { os: 'linux', architecture: 'amd64' },
    agentVersion: o.running ?? '0.1.0',
    mqtt: {
      url: fleet.server.brokerUrl,
      protocolVersion: 'auto',
      backoff: { initialMs: 50, maxMs: 500 },
      ...(await fleet.credentials(deviceId)),
    },
    store,
    db,
    publicKey,
    log: testLog(),
  });
  await conn.start(true);
  const dir = new AgentDir(stateDir, ARCH);
  const d: Device = {
    dir,
    store,
    updates: [],
    restarts: 0,
    conn,
    updater: undefined as unknown as SelfUpdater,
    async apply(agent) {
      d.updater.setDesired(agent, `device/x@${Math.random()}`);
      await d.updater.idle();
      return d.updater.status;
    },
  };
  d.updater = new SelfUpdater({
    dir,
    arch: ARCH,
    running: o.running ?? '0.1.0',
    fleet: FLEET,
    publicKey,
    fetchBlob: (desc, p) => conn.fetcher.fetchBlob(desc, p),
    online: () => conn.conn.connected,
    store,
    db,
    log: testLog(),
    clock: systemClock,
    mutex: new Mutex(),
    configFormat: 1,
    reserveBytes: 0,
    trialDeadlineMs: 30_000,
    settled: () => true,
    onUpdate: (u, changed) => {
      if (changed) d.updates.push(u);
    },
    restart: () => {
      d.restarts++;
    },
    ...(o.freeBytes ? { freeBytes: o.freeBytes } : {}),
  });
  t.teardown(async () => {
    await d.updater.stop();
    await conn.stop();
    db.close();
  });
  return d;
}

/** Nothing switched: no journal, no `current`, no restart asked, no executable left staged. */
async function nothingSwitched(t: ExecutionContext, d: Device, version: string): Promise<void> {
  t.is(await d.dir.readTrial(), null);
  t.is(await d.dir.link('current'), null);
  t.is(d.restarts, 0);
  t.false(await d.dir.isStaged(version));
}

test('a good release: fetched, verified, staged 0755, switched (database copy, journal, current), restart asked', async (t) => {
  const fleet = await startFleet(t);
  const d = await device(t, fleet);
  const agent = await release(fleet, { version: '0.2.0' });
  const st = await d.apply(agent);
  t.is(st?.phase, 'staged');
  t.deepEqual(
    d.updates.map((u) => u.phase),
    ['downloading', 'staged'],
  );
  t.is(d.restarts, 1);
  const exe = d.dir.executable('0.2.0');
  t.is((await fsp.stat(exe)).mode & 0o777, 0o755);
  t.deepEqual(await fsp.readFile(exe), await fsp.readFile(await fakeAgent('0.2.0', 'GOOD')));
  t.is(await d.dir.link('current'), '0.2.0');
  const journal = await d.dir.readTrial();
  t.like(journal, { version: '0.2.0', previous: null, from: '0.1.0', boots: 0, deadlineMs: 30_000 });
  t.is(journal?.db?.schema, MIGRATIONS.length);
  const copy = openDatabase(d.dir.dbCopyFile(), { readonly: true });
  t.is(copy.pragma('user_version', { simple: true }), MIGRATIONS.length);
  copy.close();
  t.false(await d.store.has(agent.exeDigest), 'the executable moved out of the content store');
  t.false(await d.store.has(agent.release.digest as Digest));
});

test('an already staged release is switched to without fetching it again', async (t) => {
  const fleet = await startFleet(t);
  const d = await device(t, fleet);
  const agent = await release(fleet, { version: '0.2.0' });
  // staged by an agent that was killed before its switch
  await d.apply(agent);
  await d.dir.setLink('current', null);
  await d.dir.removeTrial();
  const egress = fleet.server.blobs!.egressBytes;
  const next = await device(t, fleet, { stateDir: d.dir.stateDir });
  t.is((await next.apply(agent))?.phase, 'staged');
  t.is(fleet.server.blobs!.egressBytes, egress, 'nothing fetched');
  t.is(await d.dir.link('current'), '0.2.0');
  t.is(next.restarts, 1);
});

const refusals: Array<[string, (f: FleetSide) => Promise<Release>, RegExp]> = [
  [
    'a manifest signed by another key',
    async () => ({ version: '0.2.0', key: loadPrivateKey(generateFleetKey().privateKeyPem) }),
    /InvalidInput: release manifest signature: signed with key/,
  ],
  ['a tampered manifest', async () => ({ version: '0.2.0', tamper: true }), /signature does not verify/],
  [
    'no executable for this arch',
    async () => ({ version: '0.2.0', exes: { 'linux/arm64': await fakeAgent('0.2.0', 'GOOD') } }),
    /NotFound: release 0.2.0 has no executable for linux\/amd64 \(it has linux\/arm64\)/,
  ],
  [
    'an executable for another machine (ELF)',
    async () => ({
      version: '0.2.0',
      exes: { [ARCH.platform]: await fakeAgent('0.2.0', 'GOOD', 'aarch64-linux-gnu-gcc') },
    }),
    /ELF machine AArch64, this device needs x86-64/,
  ],
  [
    'a release that cannot read this database',
    async () => ({
      version: '0.2.0',
      edit: (m) => ({ ...m, database: { schema: MIGRATIONS.length + 5, minSchema: MIGRATIONS.length + 1 } }),
    }),
    /Unsupported: release 0.2.0 migrates databases from schema/,
  ],
  [
    'a manifest for another version',
    async () => ({ version: '0.2.0', edit: (m) => ({ ...m, version: '0.2.1' }) }),
    /release manifest is for 0.2.1, the target names 0.2.0/,
  ],
];

for (const [what, make, reason] of refusals) {
  test(`refused: ${what}; nothing switched`, async (t) => {
    if (process.arch !== 'x64') return t.pass('x64 fixtures');
    const fleet = await startFleet(t);
    const d = await device(t, fleet);
    const r = await make(fleet);
    const agent = await release(fleet, r);
    const st = await d.apply({ ...agent, version: '0.2.0' });
    t.is(st?.phase, 'refused');
    t.regex(st?.reason ?? '', reason);
    await nothingSwitched(t, d, '0.2.0');
    // refused for this target: the same target does not retry; a new one does (and is refused again)
    const before = fleet.server.blobs!.egressBytes;
    d.updater.poke();
    await d.updater.idle();
    t.is(fleet.server.blobs!.egressBytes, before);
  });
}

test('refused: a blob that does not hash to its digest (the fleet copy is damaged); nothing switched', async (t) => {
  const fleet = await startFleet(t);
  const d = await device(t, fleet);
  const agent = await release(fleet, { version: '0.2.0' });
  const blob = fleet.store.blobPath(agent.exeDigest);
  const bytes = await fsp.readFile(blob);
  const at = bytes.length - 100;
  bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at);
  await fsp.chmod(blob, 0o644);
  await fsp.writeFile(blob, bytes);
  const st = await d.apply(agent);
  t.is(st?.phase, 'refused');
  t.regex(st?.reason ?? '', /Corrupt|hashes to sha256|does not match its digest/);
  await nothingSwitched(t, d, '0.2.0');
  t.false(await d.store.has(agent.exeDigest), 'no damaged blob in the device store');
});

test('an older release is refused unless the target allows the downgrade; a failed version is never retried', async (t) => {
  const fleet = await startFleet(t);
  const d = await device(t, fleet, { running: '0.3.0' });
  const older = await release(fleet, { version: '0.2.0' });
  const st = await d.apply(older);
  t.is(st?.phase, 'refused');
  t.regex(
    st?.reason ?? '',
    /InvalidInput: agent 0.2.0 is older than the running 0.3.0: a downgrade needs allowDowngrade/,
  );
  await nothingSwitched(t, d, '0.2.0');
  t.is((await d.apply({ ...older, allowDowngrade: true }))?.phase, 'staged');
  t.is(await d.dir.link('current'), '0.2.0');

  // back from a rollback of 0.2.0, switched for target `device/d@7`
  const e = await device(t, fleet, { running: '0.1.0' });
  const reason = 'exited with code 1 during its trial';
  await e.dir.writeStatus((s) => ({
    ...s,
    failed: { '0.2.0': reason },
    switchedFor: 'device/d@7',
    update: { version: '0.2.0', phase: 'rolled-back', reason, at: 1 },
  }));
  await e.updater.load();
  e.updater.setDesired(older, 'device/d@7');
  await e.updater.idle();
  t.like(
    e.updater.status,
    { version: '0.2.0', phase: 'rolled-back' },
    'the same target: the rollback stays the news',
  );
  t.deepEqual(e.updates, []);
  e.updater.setDesired(older, 'device/d@8');
  await e.updater.idle();
  const again = e.updater.status;
  t.is(again?.phase, 'refused', 'deployed again: refused');
  t.regex(again?.reason ?? '', /Conflict: agent 0.2.0 failed its trial on this device \(exited with code 1/);
  await nothingSwitched(t, e, '0.2.0');
});

test('offline: nothing happens until the link is back', async (t) => {
  const fleet = await startFleet(t);
  const d = await device(t, fleet);
  const agent = await release(fleet, { version: '0.2.0' });
  await d.conn.stop();
  t.is(await d.apply(agent), undefined);
  await nothingSwitched(t, d, '0.2.0');
});

/** A state dir on a tmpfs of `size` (unmounted at teardown). */
async function smallDisk(t: ExecutionContext, size: string): Promise<string> {
  const dir = await tempDir(t, 'su-small');
  await exec('mount', ['-t', 'tmpfs', '-o', `size=${size}`, `berth-su-${process.pid}`, dir]);
  t.teardown(() => exec('umount', ['-l', dir], { allowFailure: true }).then(() => undefined));
  return dir;
}

async function fill(dir: string, leaveBytes: number): Promise<void> {
  const free = (await fsp.statfs(dir)).bavail * (await fsp.statfs(dir)).bsize;
  await fsp.writeFile(path.join(dir, 'filler'), Buffer.alloc(Math.max(0, free - leaveBytes)));
}

test('disk full: the space check refuses before fetching (NoSpace), nothing switched', async (t) => {
  if (!needPrivileges(t)) return;
  const fleet = await startFleet(t);
  const stateDir = await smallDisk(t, '8m');
  const d = await device(t, fleet, { stateDir });
  const agent = await release(fleet, { version: '0.2.0' });
  await fill(stateDir, 256 * 1024);
  const egress = fleet.server.blobs!.egressBytes;
  const st = await d.apply(agent);
  t.is(st?.phase, 'failed');
  t.regex(
    st?.reason ?? '',
    /NoSpace: not enough disk space for agent 0.2.0: need \d+ bytes \(executable \d+ \+ database copy \d+\)/,
  );
  t.true(fleet.server.blobs!.egressBytes - egress < 64 * 1024, 'only the manifest was fetched');
  await nothingSwitched(t, d, '0.2.0');
});

test('disk full while staging (the check passed, then the disk filled): NoSpace, nothing switched', async (t) => {
  if (!needPrivileges(t)) return;
  const fleet = await startFleet(t);
  const stateDir = await smallDisk(t, '8m');
  // the space check is told there is room (another writer fills the disk after it)
  const d = await device(t, fleet, { stateDir, freeBytes: async () => 1 << 30 });
  const agent = await release(fleet, { version: '0.2.0' });
  await fill(stateDir, 300 * 1024);
  const st = await d.apply(agent);
  t.is(st?.phase, 'failed');
  t.regex(st?.reason ?? '', /NoSpace/);
  await nothingSwitched(t, d, '0.2.0');
  // room again: the retry completes
  await fsp.rm(path.join(stateDir, 'filler'));
  d.updater.poke();
  await waitFor(() => d.updater.status?.phase === 'staged', 30_000, 'staged after the retry');
  await d.updater.idle();
  t.is(await d.dir.link('current'), '0.2.0');
});
