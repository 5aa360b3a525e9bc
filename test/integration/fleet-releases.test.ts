/**
 * Agent releases in the fleet (src/fleet/services/releases.ts, `berth fleet release`, `deploy --agent`):
 * a dist/ directory of executables with their build records becomes a signed release; everything a device
 * would refuse is refused at push (another version's build, an executable that does not match its record
 * or is not ELF for its arch, arches that disagree on the database, a version pushed twice); a deploy pins
 * the manifest and is refused for a device whose platform the release lacks; the agent release stays named
 * by later app deploys; a release in use cannot be removed; the CLI; and what devices report of their
 * self-update reaches `fleet devices`.
 * The executables are small real ELF programs (test/helpers/fake-agent.c, x64 and arm64).
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { FLEET_DB_FILE, openFleetStores } from '../../src/fleet/store/index.js';
import { exec } from '../../src/lib/exec.js';
import { MqttConnection } from '../../src/transport/connection.js';
import { encodeJson } from '../../src/transport/messages.js';
import { decodeSignedRelease } from '../../src/transport/releases.js';
import { loadPublicKey } from '../../src/transport/signing.js';
import { deviceTopic } from '../../src/transport/topics.js';
import { BERTH_BUNDLE } from '../helpers/cli.js';
import { FLEET, type FleetSide, startFleet, tempDir, testLog, waitFor } from '../helpers/fleet-harness.js';
import { fakeAgent, removeFakeAgents } from '../helpers/self-update.js';

test.after.always(removeFakeAgents);

const ARCHES = {
  x64: { platform: 'linux/amd64', cc: 'gcc' },
  arm64: { platform: 'linux/arm64', cc: 'aarch64-linux-gnu-gcc' },
} as const;

/** A dist/ directory as `npm run package` leaves it, with stand-in executables. */
async function dist(
  t: ExecutionContext,
  version: string,
  o: {
    arches?: Array<keyof typeof ARCHES>;
    edit?: (arch: string, rec: Record<string, unknown>) => Record<string, unknown>;
    /** build this arch's executable for another machine */
    swap?: keyof typeof ARCHES;
  } = {},
): Promise<string> {
  const dir = await tempDir(t, 'dist');
  for (const arch of o.arches ?? ['x64', 'arm64']) {
    const cc = ARCHES[o.swap === arch ? (arch === 'x64' ? 'arm64' : 'x64') : arch].cc;
    const exe = path.join(dir, `berth-linux-${arch}`);
    await fsp.copyFile(await fakeAgent(version, 'GOOD', cc), exe);
    const bytes = await fsp.readFile(exe);
    let rec: Record<string, unknown> = {
      arch,
      ociPlatform: ARCHES[arch].platform,
      packager: 'pkg',
      node: `node-linux-${arch}@22.23.3`,
      version,
      commit: 'test',
      database: { schema: 8, minSchema: 0 },
      config: { format: 1, minFormat: 1 },
      size: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'),
    };
    if (o.edit) rec = o.edit(arch, rec);
    await fsp.writeFile(`${exe}.json`, JSON.stringify(rec));
  }
  return dir;
}

/** The built CLI, asynchronously: the embedded broker lives in this process and must keep answering. */
const cli = (args: string[]) =>
  exec(process.execPath, [BERTH_BUNDLE, '--log-level', 'warn', ...args], {
    allowFailure: true,
    timeoutMs: 60_000,
  });

const scopeOf = (id: string) => ({ kind: 'device' as const, id });

async function seeDevice(
  fleet: FleetSide,
  id: string,
  platform: string,
  extra: Record<string, unknown> = {},
) {
  const conn = new MqttConnection({
    url: fleet.server.brokerUrl,
    protocolVersion: 4,
    clientId: `st-${id}`,
    log: testLog(),
    ...(await fleet.credentials(id)),
  });
  await conn.start();
  await conn.publish(
    deviceTopic(FLEET, id, 'status'),
    encodeJson({ v: 1, deviceId: id, state: 'online', at: new Date().toISOString(), platform, ...extra }),
    { qos: 1, retain: true },
  );
  await conn.close(true);
  await waitFor(() => fleet.stores.devices.get(id)?.platform === platform, 10_000, `device ${id} seen`);
}

test('push: a signed release of every arch in dist/; pinned by deploy; kept by later app deploys', async (t) => {
  const fleet = await startFleet(t);
  const { releases, deploy } = fleet.server.services;
  const r = await releases.push(await dist(t, '0.2.0'), '0.2.0');
  t.deepEqual(Object.keys(r.artifacts).sort(), ['linux/amd64', 'linux/arm64']);
  const signed = decodeSignedRelease(
    await fleet.store.get(r.manifest.digest),
    loadPublicKey(fleet.publicKeyPem),
  );
  t.true(signed.ok);
  t.like(signed.ok && signed.value.release, { fleet: 'test', version: '0.2.0', database: { schema: 8 } });
  for (const a of Object.values(r.artifacts)) t.true(await fleet.store.has(a.digest));

  await seeDevice(fleet, 'd1', 'linux/amd64');
  const row = await deploy.deploy({ apps: {}, images: [], agent: { version: '0.2.0' } }, scopeOf('d1'));
  const target = fleet.stores.deployments.get(row.id)!.signed.target;
  t.deepEqual(target.agent, { version: '0.2.0', release: r.manifest });
  // an app deploy without `agent` keeps naming the release
  const next = await deploy.deploy({ apps: {}, images: [] }, scopeOf('d1'));
  t.deepEqual(fleet.stores.deployments.get(next.id)!.signed.target.agent, {
    version: '0.2.0',
    release: r.manifest,
  });
  t.deepEqual(deploy.currentInput(scopeOf('d1')).agent, { version: '0.2.0' });
});

test('push refuses: another version, a record that does not match, wrong ELF, disagreeing arches, twice', async (t) => {
  const fleet = await startFleet(t);
  const { releases } = fleet.server.services;
  const refuse = async (dir: string, version: string, re: RegExp, code = 'InvalidInput') => {
    const err = await t.throwsAsync(releases.push(dir, version));
    t.regex(err?.message ?? '', re);
    t.is((err as { code?: string }).code, code);
  };
  await refuse(
    await dist(t, '0.2.0'),
    '0.3.0',
    // every record is of 0.2.0: the first one read (directory order) is named
    /berth-linux-(arm64|x64|armv7|ppc64le)\.json is the build of version 0.2.0, not 0.3.0/,
  );
  await refuse(await dist(t, '0.2.0'), '0.2', /expected a semantic version/);
  await refuse(
    await dist(t, '0.2.0', { edit: (_a, r) => ({ ...r, sha256: 'a'.repeat(64) }) }),
    '0.2.0',
    /hashes to|expected sha256/i,
    'Corrupt',
  );
  await refuse(
    await dist(t, '0.2.0', { edit: (_a, r) => ({ ...r, size: 12 }) }),
    '0.2.0',
    /its build record says 12/,
    'Corrupt',
  );
  await refuse(
    await dist(t, '0.2.0', { swap: 'x64' }),
    '0.2.0',
    /ELF machine AArch64, this device needs x86-64/,
  );
  await refuse(
    await dist(t, '0.2.0', {
      edit: (a, r) => (a === 'arm64' ? { ...r, database: { schema: 9, minSchema: 0 } } : r),
    }),
    '0.2.0',
    /database .* differs from the other arches/,
  );
  await refuse(await tempDir(t, 'empty'), '0.2.0', /holds no build records/);
  t.deepEqual(releases.list(), [], 'nothing recorded');
  await releases.push(await dist(t, '0.2.0'), '0.2.0');
  await refuse(await dist(t, '0.2.0'), '0.2.0', /release 0.2.0 exists/, 'Conflict');
});

test('deploy refuses a release the fleet lacks, or one without an executable for a device of the scope', async (t) => {
  const fleet = await startFleet(t);
  const { releases, deploy } = fleet.server.services;
  await releases.push(await dist(t, '0.2.0', { arches: ['x64'] }), '0.2.0');
  await seeDevice(fleet, 'pi', 'linux/arm64', { groups: ['lab'] });
  await seeDevice(fleet, 'nuc', 'linux/amd64', { groups: ['lab'] });
  const e1 = await t.throwsAsync(
    deploy.deploy({ apps: {}, images: [], agent: { version: '0.9.0' } }, scopeOf('nuc')),
  );
  t.regex(e1?.message ?? '', /agent release 0.9.0 is not in the fleet: push it first/);
  const e2 = await t.throwsAsync(
    deploy.deploy({ apps: {}, images: [], agent: { version: '0.2.0' } }, { kind: 'group', id: 'lab' }),
  );
  t.regex(
    e2?.message ?? '',
    /no executable for linux\/arm64 \(pi\); it has linux\/amd64 \(nothing was published\)/,
  );
  t.is(fleet.stores.deployments.current({ kind: 'group', id: 'lab' }), undefined);
  await deploy.deploy({ apps: {}, images: [], agent: { version: '0.2.0' } }, scopeOf('nuc'));
});

test('rm: refused while a current target names the release; then its blobs go', async (t) => {
  const fleet = await startFleet(t);
  const { releases, deploy } = fleet.server.services;
  const r = await releases.push(await dist(t, '0.2.0'), '0.2.0');
  await releases.push(await dist(t, '0.3.0'), '0.3.0');
  t.deepEqual(
    releases.list().map((x) => x.version),
    ['0.3.0', '0.2.0'],
  );
  await seeDevice(fleet, 'd1', 'linux/amd64');
  await deploy.deploy({ apps: {}, images: [], agent: { version: '0.2.0' } }, scopeOf('d1'));
  const err = await t.throwsAsync(releases.remove('0.2.0'));
  t.regex(err?.message ?? '', /named by the current target of device d1/);
  await deploy.deploy({ apps: {}, images: [], agent: { version: '0.3.0' } }, scopeOf('d1'));
  await releases.remove('0.2.0');
  t.false(await fleet.store.has(r.manifest.digest));
  for (const a of Object.values(r.artifacts)) t.false(await fleet.store.has(a.digest));
  await t.throwsAsync(releases.remove('0.2.0'), { message: /no release 0.2.0/ });
});

test('CLI: fleet release push|ls|rm, deploy --agent without a file; fleet devices shows the agent update', async (t) => {
  const fleet = await startFleet(t);
  const fdir = fleet.dir;
  const d = await dist(t, '0.2.0');
  const push = await cli(['--state-dir', fdir, 'fleet', 'release', 'push', d, '--version', '0.2.0']);
  t.is(push.code, 0, push.stderr);
  t.regex(push.stdout, /release 0.2.0: linux\/amd64, linux\/arm64 .* manifest sha256:/);
  const ls = await cli(['--state-dir', fdir, 'fleet', 'release', 'ls', '--json']);
  t.is(JSON.parse(ls.stdout)[0].version, '0.2.0');
  const bad = await cli(['--state-dir', fdir, 'fleet', 'release', 'push', d, '--version', '0.2.1']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /InvalidInput: .*build of version 0.2.0, not 0.2.1/);

  await seeDevice(fleet, 'd1', 'linux/amd64', {
    agentVersion: '0.1.0',
    agentUpdate: { version: '0.2.0', phase: 'rolled-back', reason: 'exited with code 1 during its trial' },
  });
  // the broker and the fleet account come from the state dir `fleet serve` runs on
  const dep = await cli(['--state-dir', fdir, 'fleet', 'deploy', '--device', 'd1', '--agent', '0.2.0']);
  t.is(dep.code, 0, dep.stderr);
  t.regex(dep.stdout, /deployed device d1 version 1/);
  // the server's own stores (the CLI wrote fleet.db)
  const stores = openFleetStores(path.join(fdir, FLEET_DB_FILE));
  t.teardown(() => stores.close());
  t.is(stores.deployments.currentSigned()[0]?.target.agent?.version, '0.2.0');
  const rm = await cli(['--state-dir', fdir, 'fleet', 'release', 'rm', '0.2.0']);
  t.is(rm.code, 1);
  t.regex(rm.stderr, /Conflict: release 0.2.0 is named by the current target of device d1/);
  const devices = await cli(['--state-dir', fdir, 'fleet', 'devices']);
  t.is(devices.code, 0, devices.stderr);
  t.regex(devices.stdout, /d1 .* 0\.1\.0 +0\.2\.0 rolled-back/);
});
