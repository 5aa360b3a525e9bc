/**
 * Disk nearly full, all real: the device's state dir on a 160 MiB loop-mounted ext4, the agent as a
 * `berth agent` process, fleet + Mosquitto, v2 = sample image + an 8 MiB random layer.
 *
 * v1 runs; a file takes the space until less than v2 needs is left; v2 is deployed → the agent refuses
 * it before fetching any layer (the size comes from v2's manifest, fetched first), with a NoSpace error
 * naming needed and available bytes in its event and retained state; v1 is untouched; nothing of v2 is
 * recorded as present. The file goes → the next reconcile applies v2.
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { ContentStore } from '../../src/content/store.js';
import { exec } from '../../src/lib/exec.js';
import type { Digest } from '../../src/oci/digest.js';
import { makeDevice, processAlive, startFleetStack, watchDevice } from '../helpers/agent-process.js';
import { buildSampleImages, layoutBlobs } from '../helpers/agent-stack.js';
import { waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';
import { makeLoopFs } from '../helpers/storage-loop.js';

const MiB = 1024 * 1024;
const RESERVE = 32 * MiB; // the reconciler's default reserveBytes

test('disk nearly full → update refused with NoSpace (needed vs available) before any layer is fetched; v1 untouched; applied once space is freed', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(120_000);
  const imgDir = await fsp.mkdtemp(path.join(tmpdir(), 'berth-disk-img-'));
  t.teardown(() => fsp.rm(imgDir, { recursive: true, force: true }));
  const layouts = {
    ...(await buildSampleImages(imgDir, ['v1'])),
    ...(await buildSampleImages(imgDir, ['v2'], { padBytes: 8 * MiB })),
  };
  const stack = await startFleetStack(t, { layouts });

  const loop = await makeLoopFs({ fs: 'ext4', sizeMiB: 160 });
  const stateDir = path.join(loop.mountpoint, 'state');
  const dev = await makeDevice(t, {
    name: 'diskfull',
    fleetKeyFile: stack.fleet.publicKeyFile,
    stateDir,
    after: () => loop.cleanup(),
  });
  const view = await watchDevice(t, stack.mosquitto.url, dev.id);
  await dev.agent.start(stack.mosquitto.url);
  await stack.deploy(dev.id, 'v1');
  await waitFor(() => dev.db.running('sample:v1') !== undefined, 60_000, 'v1 running').catch((err) => {
    t.log(dev.agent.logTail());
    throw err;
  });
  const v1 = dev.db.running('sample:v1')!;

  // what v2 adds: its app layer and the 8 MiB layer (gzip: unpack estimated at 3x), plus the reserve
  const v1Blobs = new Set((await layoutBlobs(layouts.v1!)).map((b) => b.digest));
  const v2Layers = (await layoutBlobs(layouts.v2!)).slice(2).filter((b) => !v1Blobs.has(b.digest));
  const v2Needs = v2Layers.reduce((n, b) => n + b.size * 4, 0);
  const big = v2Layers.find((b) => b.size > 8 * MiB)!;

  // fill the disk: leave 40 MiB, less than v2's estimate + reserve (~64 MiB) though its download would fit
  const filler = path.join(loop.mountpoint, 'filler');
  const st = await fsp.statfs(stateDir);
  const avail = st.bavail * st.bsize;
  const leave = 40 * MiB;
  t.true(v2Needs + RESERVE > leave && big.size < leave, 'the scenario: the download alone would fit');
  await exec('fallocate', ['-l', String(avail - leave), filler]);

  await stack.deploy(dev.id, 'v2');
  await waitFor(
    () => view.events.some((e) => e.type === 'error' && e.code === 'NoSpace'),
    30_000,
    'the NoSpace error reported',
  ).catch((err) => {
    t.log(JSON.stringify(view.events), dev.agent.logTail());
    throw err;
  });
  const err = view.events.find((e) => e.type === 'error' && e.code === 'NoSpace')!;
  t.log(err.message);
  const clear =
    /not enough disk space for the update: need (\d+\.\d) MiB plus 32\.0 MiB reserve, (\d+\.\d) MiB available \(sample:v2: .* to fetch \+ .* to unpack\)/;
  t.regex(String(err.message), clear);
  const [, need, have] = clear.exec(String(err.message))!;
  t.is(Number(need), Number((v2Needs / MiB).toFixed(1)), 'needed = v2 layers to fetch + unpack estimate');
  t.true(Math.abs(Number(have) * MiB - leave) < 4 * MiB, `available ≈ what the filler left (${have} MiB)`);
  await waitFor(() => view.state()?.apps?.hello?.status === 'error', 20_000, 'app error in retained state');
  t.regex(view.state()!.apps!.hello!.lastError ?? '', /not enough disk space/);

  // a few more refusals (the agent retries with backoff): v1 untouched, nothing of v2 on the device
  await new Promise((r) => setTimeout(r, 3000));
  t.true(view.events.filter((e) => e.code === 'NoSpace').length >= 2, 'refused again on retry');
  t.deepEqual(
    dev.db.containers().map((c) => [c.id, c.image, c.state, c.pid, c.startedAt]),
    [[v1.id, 'sample:v1', 'running', v1.pid, v1.startedAt]],
    'v1: same container, same process, same start',
  );
  t.true(processAlive(v1.pid));
  t.deepEqual(dev.db.imageNames(), ['sample:v1'], 'v2 not recorded as present');
  t.is(dev.db.transfers(), 0, 'no transfer started');
  const store = new ContentStore(path.join(stateDir, 'content'));
  for (const l of v2Layers) t.false(await store.has(l.digest as Digest), `layer ${l.digest} not fetched`);
  const ingest = await fsp.readdir(path.join(stateDir, 'content', 'ingest')).catch(() => []);
  t.deepEqual(ingest, [], 'nothing half-fetched');

  // space back → the next reconcile applies v2
  await fsp.rm(filler);
  await waitFor(
    () => dev.db.running('sample:v2') !== undefined && dev.db.containers().length === 1,
    60_000,
    'v2 after space was freed',
  ).catch((e) => {
    t.log(dev.agent.logTail());
    throw e;
  });
  t.false(processAlive(v1.pid));
  await waitFor(() => view.state()?.apps?.hello?.status === 'running', 20_000, 'app running reported');
  t.is(view.state()?.apps?.hello?.services.web?.image, 'sample:v2');
});
