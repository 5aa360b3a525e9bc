/**
 * The agent against what a device in the field lives through, all real: the agent is a separate
 * `berth agent` process (SIGKILLed, restarted), the broker a real Mosquitto (killed, restarted), the
 * fleet server transfers real images (sample image, busybox + a 24 MiB random layer for v2, blobs
 * rate-limited so a pull spans seconds), overlay snapshots, berth-runtime + berth-monitor containers.
 *
 *   - kill -9 during the fetch of v2, after the old container stopped, while the new one is created
 *     → the restarted agent converges: one container for the service, the old one gone, no leftovers,
 *       the interrupted transfer resumed (not started over), the content store verifies
 *   - broker killed mid-pull → the running app keeps running; the update completes after it is back
 *   - SIGTERM while that pull waits for the broker → the agent stops at once; the next one resumes it
 *   - reboot without network (agent stopped, container processes killed, mounts and cgroups gone, agent
 *     started with no broker) inside the health window → the app runs again from SQLite alone, its
 *     rootfs mounted again, no rollback
 *   - the same reboot in the middle of an update → the old version runs again while the update waits
 *     for the fleet; the update completes once the broker is back
 *
 * (Some kill moments are a few milliseconds wide; on a busy machine one can go by unseen, so those are
 * tried again on a further version.)
 */
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { exec } from '../../src/lib/exec.js';
import {
  type Device,
  type DeviceContainer,
  deadBrokerUrl,
  type FleetStack,
  type FleetView,
  makeDevice,
  mountsUnder,
  processAlive,
  startFleetStack,
  verifyContentStore,
  watchDevice,
} from '../helpers/agent-process.js';
import { buildSampleImages, layoutBlobs } from '../helpers/agent-stack.js';
import { waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';

const MiB = 1024 * 1024;
/** v2's random layer: 24 MiB at 8 MiB/s keeps the pull going for ~3 s */
const BIG_MIB = 24;
const RATE = 8 * MiB;

let images: Promise<{ dir: string; layouts: Record<string, string> }> | undefined;
function sampleImages() {
  images ??= (async () => {
    const dir = await fsp.mkdtemp(path.join(tmpdir(), 'berth-resilience-img-'));
    const layouts = {
      ...(await buildSampleImages(dir, ['v1', 'v3', 'v4', 'v5', 'v6'])),
      ...(await buildSampleImages(dir, ['v2'], { padBytes: BIG_MIB * MiB })),
    };
    return { dir, layouts };
  })();
  return images;
}
test.after.always(async () => {
  if (images) await fsp.rm((await images).dir, { recursive: true, force: true });
});

interface Setup {
  stack: FleetStack;
  dev: Device;
  view: FleetView;
  layouts: Record<string, string>;
}

async function setup(t: ExecutionContext, name: string): Promise<Setup> {
  const { layouts } = await sampleImages();
  const stack = await startFleetStack(t, { layouts, rateLimit: RATE });
  const dev = await makeDevice(t, { name, fleetKeyFile: stack.fleet.publicKeyFile });
  const view = await watchDevice(t, stack.mosquitto.url, dev.id);
  return { stack, dev, view, layouts };
}

/** Wait until exactly one container exists and it runs `sample:<tag>` with a live init. */
async function convergedTo(t: ExecutionContext, s: Setup, tag: string, timeoutMs = 60_000) {
  await waitFor(
    () => {
      const cs = s.dev.db.containers();
      return cs.length === 1 && s.dev.db.running(`sample:${tag}`) !== undefined;
    },
    timeoutMs,
    `sample:${tag} alone running`,
  ).catch((err) => {
    t.log(JSON.stringify(s.dev.db.containers()), s.dev.agent.logTail());
    throw err;
  });
  return s.dev.db.running(`sample:${tag}`)!;
}

async function deployAndRun(t: ExecutionContext, s: Setup, tag: string) {
  await s.stack.deploy(s.dev.id, tag);
  return convergedTo(t, s, tag);
}

/**
 * Poll (about every millisecond) until `point()` names the moment wanted; then freeze the agent
 * (SIGSTOP), read the point again from the frozen state — that is where it dies — and SIGKILL it.
 * Undefined when the moment went by unseen (the update finished, or moved on before the freeze: then
 * the agent was killed elsewhere); a busy machine can do that to moments of a few milliseconds.
 */
async function killAt(
  t: ExecutionContext,
  s: Setup,
  what: string,
  point: () => string | undefined,
  missed: () => boolean,
  timeoutMs = 60_000,
): Promise<string | undefined> {
  const pid = s.dev.agent.pid!;
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (point()) {
      process.kill(pid, 'SIGSTOP');
      const frozen = point();
      await s.dev.agent.kill('SIGKILL');
      t.log(`kill -9 ${what}: ${frozen ?? 'missed (moved on before it froze)'}`);
      return frozen;
    }
    if (missed()) return undefined;
    if (Date.now() > until) throw new Error(`timed out waiting to kill ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Update from the running container to each of `tags` in turn until the agent is killed at `point`
 * (most often the first); the agent is started again after each kill. Returns where it died.
 */
async function killDuringUpdate(
  t: ExecutionContext,
  s: Setup,
  what: string,
  tags: string[],
  point: (from: DeviceContainer, tag: string) => string | undefined,
): Promise<{ at: string; from: DeviceContainer; tag: string }> {
  let from = s.dev.db.containers()[0]!;
  for (const tag of tags) {
    await s.stack.deploy(s.dev.id, tag);
    const at = await killAt(
      t,
      s,
      `${what} (${tag})`,
      () => point(from, tag),
      () => s.dev.db.running(`sample:${tag}`) !== undefined,
    );
    if (!s.dev.agent.pid) await s.dev.agent.start(s.stack.mosquitto.url);
    if (at) return { at, from, tag };
    from = await convergedTo(t, s, tag);
  }
  throw new Error(`${what}: the moment was never caught (${tags.join(', ')})`);
}

/** After a restart: one container, the old one and its files and mounts gone, no transfer left, store intact. */
async function assertConsistent(t: ExecutionContext, s: Setup, tag: string, oldId: string) {
  const c = await convergedTo(t, s, tag);
  const all = s.dev.db.containers();
  t.is(all.length, 1, `one container for hello/web: ${JSON.stringify(all)}`);
  t.is(c.service, 'web');
  t.false(existsSync(path.join(s.dev.stateDir, 'containers', oldId)), 'the old container dir is gone');
  const mounts = mountsUnder(s.dev.stateDir);
  t.deepEqual(
    mounts,
    [path.join(s.dev.stateDir, 'containers', c.id, 'rootfs')],
    'the only mount left is the running container rootfs',
  );
  t.deepEqual(
    s.dev.db.snapshotsInUse(),
    [{ name: `container-${c.id}`, kind: 'active', state: 'ready' }],
    'one active snapshot (the running container), nothing half-made',
  );
  t.is(s.dev.db.transfers(), 0, 'no transfer left in progress');
  const blobs = await verifyContentStore(s.dev.stateDir);
  t.true(blobs >= 4, `content store verifies (${blobs} blobs)`);
  return c;
}

/** The next agent resumed the transfer of `digest` from its persisted progress and reported the cut fetch. */
async function resumedAfterInterruption(t: ExecutionContext, s: Setup, digest: string) {
  const resumed = s.dev.agent.logLines().find((l) => l.msg === 'resuming transfer' && l.digest === digest);
  t.true(Number(resumed?.resumedBytes) > 0, `resumed ${resumed?.resumedBytes} verified bytes`);
  await waitFor(
    () =>
      s.view.events.some(
        (e) => e.type === 'interrupted' && (e.steps as string[]).includes('fetch sample:v2'),
      ),
    20_000,
    'the interrupted fetch reported',
  );
}

test.serial(
  'agent kill -9 during fetch, after the old container stopped, while creating the new one → converges each time',
  async (t) => {
    if (!needPrivileges(t)) return;
    t.timeout(150_000);
    const s = await setup(t, 'kill9');
    const broker = s.stack.mosquitto.url;
    await s.dev.agent.start(broker);
    const v1 = await deployAndRun(t, s, 'v1');

    // (a) mid-fetch of v2's 24 MiB layer
    const big = (await layoutBlobs(s.layouts.v2!)).find((b) => b.size > BIG_MIB * MiB)!;
    await s.stack.deploy(s.dev.id, 'v2');
    const atFetch = await killAt(
      t,
      s,
      'during the fetch of v2',
      () => {
        const p = s.dev.db.transferProgress(big.digest);
        return p && p.done >= p.total * 0.3 && p.done < p.total ? `${p.done}/${p.total} chunks` : undefined;
      },
      () => s.dev.db.running('sample:v2') !== undefined,
    );
    t.regex(atFetch ?? 'missed', /chunks/, 'a transfer of seconds is always caught');
    t.truthy(s.dev.db.running('sample:v1'), 'v1 still running when the agent died');
    t.is(s.dev.db.running('sample:v1')!.id, v1.id);
    await s.dev.agent.start(broker);
    await assertConsistent(t, s, 'v2', v1.id);
    await resumedAfterInterruption(t, s, big.digest);

    // (b) the old container stopped, the new one not created yet
    const b = await killDuringUpdate(t, s, 'after the old container stopped', ['v3', 'v4'], (from, tag) => {
      const cs = s.dev.db.containers();
      const old = cs.find((c) => c.id === from.id);
      if (cs.some((c) => c.image === `sample:${tag}`)) return undefined;
      if (!old) return 'old removed, new not created';
      return old.state === 'exited' || old.state === 'removing' ? `old ${old.state}` : undefined;
    });
    t.regex(b.at, /^old (exited|removing|removed)/);
    const afterB = await assertConsistent(t, s, b.tag, b.from.id);

    // (c) the new container created (or being created), not started
    const c = await killDuringUpdate(
      t,
      s,
      'while the new container is created',
      ['v5', 'v6'],
      (_from, tag) => {
        const fresh = s.dev.db.containers().find((x) => x.image === `sample:${tag}`);
        return fresh && (fresh.state === 'creating' || fresh.state === 'created')
          ? `new ${fresh.state}`
          : undefined;
      },
    );
    t.regex(c.at, /^new (creating|created)$/);
    t.is(c.from.id, afterB.id);
    await assertConsistent(t, s, c.tag, c.from.id);
  },
);

/** v1 running, then v2 deployed and a quarter of its big layer fetched; the broker is killed there. */
async function v1ThenBrokerLossMidPull(t: ExecutionContext, s: Setup) {
  await s.dev.agent.start(s.stack.mosquitto.url);
  const v1 = await deployAndRun(t, s, 'v1');
  const v2Blobs = await layoutBlobs(s.layouts.v2!);
  const big = v2Blobs.find((b) => b.size > BIG_MIB * MiB)!;
  await s.stack.deploy(s.dev.id, 'v2');
  await waitFor(
    () => {
      const p = s.dev.db.transferProgress(big.digest);
      return p !== undefined && p.done >= p.total * 0.25;
    },
    60_000,
    'a quarter of the big layer',
  );
  await s.stack.mosquitto.kill();
  const at = s.dev.db.transferProgress(big.digest)!;
  t.log(`broker killed at ${at.done}/${at.total} chunks`);
  return { v1, big, v2Blobs };
}

test.serial(
  'broker killed mid-pull → the running app is untouched; the update completes after the broker is back',
  async (t) => {
    if (!needPrivileges(t)) return;
    t.timeout(120_000);
    const s = await setup(t, 'nobroker');
    const m = s.stack.mosquitto;
    const { v1, big, v2Blobs: blobs } = await v1ThenBrokerLossMidPull(t, s);

    // 5 s without a broker: v1 is the same container, same process, same start; v2 does not exist yet
    for (const until = Date.now() + 5000; Date.now() < until; ) {
      const cs = s.dev.db.containers();
      t.deepEqual(
        cs.map((c) => [c.id, c.image, c.state, c.pid, c.startedAt]),
        [[v1.id, 'sample:v1', 'running', v1.pid, v1.startedAt]],
      );
      t.true(processAlive(v1.pid), 'v1 init alive');
      await new Promise((r) => setTimeout(r, 250));
    }
    const stalled = s.dev.db.transferProgress(big.digest)!;
    t.true(stalled.done < stalled.total, `transfer stalled at ${stalled.done}/${stalled.total}`);
    t.truthy(s.dev.agent.pid, 'the agent lives on without its broker');

    await m.restart(0); // same port
    const v2 = await convergedTo(t, s, 'v2', 90_000);
    t.not(v2.id, v1.id);
    t.false(processAlive(v1.pid), 'v1 stopped only once v2 was there to replace it');
    // every byte of v2's new blobs crossed once: the transfer went on from where the broker dropped
    const v1Blobs = new Set((await layoutBlobs(s.layouts.v1!)).map((b) => b.digest));
    const newBytes = blobs.filter((b) => !v1Blobs.has(b.digest)).reduce((n, b) => n + b.size, 0);
    const pulled = s.dev.agent.logLines().find((l) => l.msg === 'image pulled' && l.image === 'sample:v2');
    t.is(pulled?.fetchedBytes, newBytes, 'v2 fetched exactly its new blobs once');
    await waitFor(
      () => {
        const app = s.view.state()?.apps?.hello;
        return (
          app?.status === 'running' &&
          app.services.web?.image === 'sample:v2' &&
          app.services.web.state === 'running'
        );
      },
      20_000,
      'the fleet sees v2 running',
    );
    t.like(
      s.view.state()?.target?.applied,
      { kind: 'device', version: 2 },
      'the retained state names v2 target',
    );
    t.is(s.dev.db.transfers(), 0);
  },
);

/** What a reboot takes from a container: its processes (no exit status written), mounts and cgroups. */
async function powerCut(stateDir: string, c: { id: string; pid: number | null; monitorPid: number | null }) {
  // monitor first: it must not live to write the exit status a power cut never leaves
  for (const pid of [c.monitorPid, c.pid]) if (pid) process.kill(pid, 'SIGKILL');
  await waitFor(
    () => !processAlive(c.pid) && !processAlive(c.monitorPid),
    10_000,
    'container processes gone',
  );
  for (const m of mountsUnder(stateDir)) await exec('umount', [m]);
  for (const ctrl of await fsp.readdir('/sys/fs/cgroup').catch(() => [] as string[])) {
    const dir = path.join('/sys/fs/cgroup', ctrl, 'berth', c.id);
    await waitFor(
      async () => {
        try {
          await fsp.rmdir(dir);
          return true;
        } catch (err) {
          return (
            (err as NodeJS.ErrnoException).code === 'ENOENT' ||
            (err as NodeJS.ErrnoException).code === 'ENOTDIR'
          );
        }
      },
      10_000,
      `cgroup ${dir} removed`,
    );
  }
}

test.serial(
  'reboot without network inside the health window: container processes, mounts and cgroups gone, agent started with no broker → the app runs again, no rollback',
  async (t) => {
    if (!needPrivileges(t)) return;
    t.timeout(120_000);
    const s = await setup(t, 'reboot');
    await s.dev.agent.start(s.stack.mosquitto.url);
    const v1 = await deployAndRun(t, s, 'v1');
    await waitFor(() => s.view.events.some((e) => e.type === 'converged'), 20_000, 'converged reported');
    t.is(s.dev.db.currentTarget()?.status, 'converged', 'v1 is on probation (60 s health window)');

    await s.dev.agent.stop();
    const before = s.dev.db.containers()[0]!;
    t.true(processAlive(before.pid), 'the container outlives its agent');
    await powerCut(s.dev.stateDir, before);
    t.deepEqual(mountsUnder(s.dev.stateDir), [], 'nothing mounted under the state dir');
    t.false(existsSync(path.join(s.dev.stateDir, 'containers', v1.id, 'exit.json')), 'no exit status left');
    const rootfs = path.join(s.dev.stateDir, 'containers', v1.id, 'rootfs');
    t.deepEqual(await fsp.readdir(rootfs), [], 'the rootfs mount point is empty');

    await s.dev.agent.start(await deadBrokerUrl());
    const back = await convergedTo(t, s, 'v1', 30_000);
    t.is(back.id, v1.id, 'the same container, started again from its record');
    t.not(back.pid, before.pid);
    t.deepEqual(mountsUnder(s.dev.stateDir), [rootfs], 'its rootfs is mounted again');
    t.is(
      (await fsp.readFile(`/proc/${back.pid}/root/www/index.html`, 'utf8')).trim(),
      'hello v1',
      'the container sees its image',
    );
    t.truthy(
      s.dev.agent.logLines().find((l) => l.msg === 'container rootfs mounted again'),
      'the agent re-established the mount',
    );
    // the reboot is not the app failing its health window
    await waitFor(
      () => s.dev.agent.logLines().some((l) => l.msg.startsWith('health window started over')),
      10_000,
      'the window started over',
    );
    t.false(
      s.dev.agent.logLines().some((l) => /failed its health window/.test(l.msg)),
      'no rollback, no failed rollout',
    );
    t.like(s.dev.db.currentTarget(), { status: 'converged' });
    t.regex(s.dev.db.currentTarget()?.body ?? '', /"origin":\{"kind":"device","id":"[^"]+","version":1\}/);
    t.deepEqual(s.dev.db.apps(), [{ name: 'hello', status: 'running', lastError: null }]);
    // and it keeps running (the image's app loops forever)
    await new Promise((r) => setTimeout(r, 2000));
    t.is(s.dev.db.running('sample:v1')?.pid, back.pid);
  },
);

test.serial(
  'SIGTERM while a pull waits for the missing broker → the agent stops promptly; the next one resumes the pull',
  async (t) => {
    if (!needPrivileges(t)) return;
    t.timeout(120_000);
    const s = await setup(t, 'termpull');
    const m = s.stack.mosquitto;
    const { v1, big } = await v1ThenBrokerLossMidPull(t, s);
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    const stopping = s.dev.agent.stop();
    const ms = await Promise.race([
      stopping.then(() => Date.now() - t0),
      new Promise<number>((r) => setTimeout(() => r(-1), 10_000)),
    ]);
    t.log(`agent stopped ${ms} ms after SIGTERM`);
    t.true(ms >= 0, 'stopped within 10 s although its pull could not go on');
    await stopping;
    t.truthy(s.dev.db.running('sample:v1'), 'v1 runs on without an agent');
    t.is(s.dev.db.running('sample:v1')!.id, v1.id);

    await m.restart(0);
    await s.dev.agent.start(m.url);
    await convergedTo(t, s, 'v2', 60_000);
    // the stop cut the fetch short: reported as interrupted by the next agent, not as a failed step
    await resumedAfterInterruption(t, s, big.digest);
    t.false(
      s.view.events.some((e) => (e.type === 'step' && e.ok === false) || e.type === 'error'),
      'no failed step or error reported',
    );
  },
);

test.serial(
  'reboot without network in the middle of an update → the running version comes back without waiting for the update; the update completes when the fleet is back',
  async (t) => {
    if (!needPrivileges(t)) return;
    t.timeout(120_000);
    const s = await setup(t, 'rebootmid');
    const m = s.stack.mosquitto;
    const { v1, big } = await v1ThenBrokerLossMidPull(t, s);
    await s.dev.agent.stop();
    await powerCut(s.dev.stateDir, v1);
    t.is(s.dev.db.running('sample:v1'), undefined, 'v1 is down');

    const t0 = Date.now();
    await s.dev.agent.start(m.url); // nothing listens there now
    const back = await waitFor(() => s.dev.db.running('sample:v1') !== undefined, 30_000, 'v1 back').then(
      () => s.dev.db.running('sample:v1')!,
      (err) => {
        t.log(JSON.stringify(s.dev.db.containers()), s.dev.agent.logTail());
        throw err;
      },
    );
    t.log(`v1 running again ${Date.now() - t0} ms after the agent was started`);
    t.is(back.id, v1.id, 'the same container, started again');
    t.is(s.dev.db.containers().length, 1, 'nothing of v2 yet');

    await m.restart(0);
    await convergedTo(t, s, 'v2', 60_000);
    await resumedAfterInterruption(t, s, big.digest);
  },
);
