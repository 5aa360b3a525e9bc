/**
 * Update strategies and the update lock on the real stack (fleet server + embedded broker, blob transfer
 * over MQTT, overlay snapshots, berth-runtime + berth-monitor), observed through the times the runtime
 * records: container createdAt/startedAt/finishedAt, and the start/end of each image fetch, unpack and
 * delete (AgentImages.counters). One agent, one service, successive versions; each version carries its
 * own random 3 MiB layer, so each fetch moves real bytes and takes measurable time.
 *
 *   v2 download-then-kill (default)  fetch + unpack end ≤ old stops ≤ old removed ≤ new created/started
 *   v3 kill-then-download            old stops, is removed ≤ fetch starts ≤ fetch ends ≤ new starts
 *   v4 delete-then-download          old removed ≤ old image deleted (its blobs freed) ≤ fetch starts
 *   v5 hand-over (health check)      new starts < old stops; old stops only after the new one is healthy
 *   v6 hand-over (no health check)   new starts < old killed at ≥ new start + handoverTimeoutMs
 *   v8 over v7 holding the lock      fetched, then waits (event + reported state say so) while old runs;
 *                                    lock released (rm inside the container) ≤ old stops
 *   v9 overrideLock over v8 holding  old stopped although the lock file is still there
 *   v10 kill-then-download, locked   nothing fetched while the lock is held; lock file removed on the
 *                                    host ≤ old stops ≤ fetch starts
 *
 * Orderings only, never durations: times are wall-clock ms from the same host clock.
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { lockRootFor } from '../../src/agent/locks.js';
import type { EngineContainer } from '../../src/agent/ports.js';
import type { ServiceInput } from '../../src/core/target.js';
import type { Digest } from '../../src/oci/digest.js';
import { buildSampleImages, layoutBlobs, pushSampleImages, startAgentStack } from '../helpers/agent-stack.js';
import { startFleet, tempDir, waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';

const APP = 'strat';
const SVC = 'web';
const PAD_BYTES = 3 * 1024 * 1024;
const LOCK_HOLDER = ['/bin/sh', '-c', 'touch /tmp/berth-lock/updates.lock && exec /bin/app'];
const LOCK_WAIT = `update lock held by app ${APP}`;

type Gone = EngineContainer & { removedAt: number };

test('update strategies and the update lock, in container start/stop and image fetch times', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(240_000);
  const fleet = await startFleet(t);
  const work = await tempDir(t, 'strategies-images');
  const tags = ['v1', 'v2', 'v3', 'v4', 'v5', 'v6', 'v7', 'v8', 'v9', 'v10'];
  const layouts = await buildSampleImages(work, tags, { padBytes: PAD_BYTES });
  await pushSampleImages(fleet, layouts);
  const signalDir = await tempDir(t, 'strategies-signal');
  const runDir = await tempDir(t, 'strategies-run');
  const stack = await startAgentStack(t, fleet, {
    deviceId: `strategies-${process.pid}`,
    agent: { reconciler: { healthWindowMs: 500, minDelayMs: 100, maxDelayMs: 500, idleIntervalMs: 300 } },
    config: { runDir },
  });
  const locks = lockRootFor(runDir, stack.stateDir);
  const { device, events } = stack;
  const { engine } = device;
  const counters = device.images.counters;
  const lockFile = path.join(locks, APP, 'updates.lock');

  // The runtime's last word on each container the agent removes (times, exit code), taken just before
  // the real removal: once removed, a container is gone from every list.
  const gone = new Map<string, Gone>();
  const realRemove = engine.remove.bind(engine);
  engine.remove = async (id, opts) => {
    const last = (await engine.list()).find((c) => c.id === id);
    await realRemove(id, opts);
    if (last) gone.set(id, { ...last, removedAt: Date.now() });
  };

  const deploy = async (tag: string, extra: Partial<ServiceInput> = {}) => {
    const svc: ServiceInput = { image: `sample:${tag}`, networkMode: 'none', stopTimeoutMs: 300, ...extra };
    return stack.deploy({ [APP]: { services: { [SVC]: svc } } }, [`sample:${tag}`]);
  };
  const runningOnly = async (): Promise<EngineContainer> => {
    const up = (await engine.list()).filter((c) => c.status === 'running');
    if (up.length !== 1) throw new Error(`expected one running container, got ${JSON.stringify(up)}`);
    return up[0]!;
  };
  const diagnose = async (err: unknown) => {
    t.log(JSON.stringify({ list: await engine.list(), counters, events, reported: stack.reported() }));
    throw err;
  };
  const healthy = (v: number) =>
    waitFor(
      () =>
        events.some((e) => e.type === 'rollout-healthy' && (e.target as { version: number }).version === v),
      30_000,
      `v${v} healthy`,
    );
  const pullOf = (tag: string) => counters.pulls.find((p) => p.image === `sample:${tag}`)!;
  const unpackOf = (tag: string) => counters.unpacks.find((p) => p.image === `sample:${tag}`)!;
  /** whether a `waiting` event on the app's update lock came after events[seen] */
  const waitedOnLock = (seen: number) =>
    events
      .slice(seen)
      .some((e) => e.type === 'waiting' && (e.reasons as string[]).some((r) => r.includes(LOCK_WAIT)));
  /** until `before` was removed and a container of `tag` runs */
  const replaced = (before: EngineContainer, tag: string) =>
    waitFor(
      async () => gone.has(before.id) && (await stack.running(`sample:${tag}`)),
      60_000,
      `${tag} replaced ${before.image}`,
    ).catch(diagnose);

  /** The marks in time order, relative to the first: shows what the assertions below check. */
  const timeline = (label: string, marks: Record<string, number | undefined>) => {
    const sorted = Object.entries(marks)
      .filter((m): m is [string, number] => m[1] !== undefined)
      .sort((a, b) => a[1] - b[1]);
    t.log(`${label}: ${sorted.map(([k, at]) => `${k} +${at - sorted[0]![1]}`).join(', ')} (ms)`);
  };

  /** Deploy `tag`, wait until its container replaced the running one and the rollout is healthy. */
  const update = async (tag: string, extra: Partial<ServiceInput> = {}) => {
    const before = await runningOnly();
    const v = await deploy(tag, extra);
    await replaced(before, tag);
    await healthy(v).catch(diagnose);
    const fresh = await runningOnly();
    t.is(fresh.image, `sample:${tag}`);
    return { old: gone.get(before.id)!, fresh, pull: pullOf(tag), unpack: unpackOf(tag) };
  };

  // v1: cold start
  const v1 = await deploy('v1');
  await waitFor(() => stack.running('sample:v1'), 60_000, 'v1 running').catch(diagnose);
  await healthy(v1).catch(diagnose);

  // v2, download-then-kill (the default: no update field): the old one runs through fetch and unpack
  {
    const { old, fresh, pull, unpack } = await update('v2');
    timeline('v2 download-then-kill', {
      'fetch start': pull.startedAt,
      'fetch end': pull.finishedAt,
      'unpack end': unpack.finishedAt,
      'old stopped': old.finishedAt,
      'old removed': old.removedAt,
      'new created': fresh.createdAt,
      'new started': fresh.startedAt,
    });
    t.true(pull.fetchedBytes > PAD_BYTES, `v2 moved its own layer (${pull.fetchedBytes} B)`);
    t.true(old.startedAt! < pull.startedAt, 'download-then-kill: old running when the fetch starts');
    t.true(pull.finishedAt <= unpack.startedAt, 'download-then-kill: unpack after fetch');
    t.true(unpack.finishedAt <= old.finishedAt!, 'download-then-kill: old stops only after fetch + unpack');
    t.true(
      old.removedAt <= fresh.createdAt!,
      'download-then-kill: old removed before the new one is created',
    );
    t.true(old.finishedAt! <= fresh.startedAt!, 'download-then-kill: new starts after the old one stopped');
    t.is(old.exitCode, 0, 'stopped gracefully: the sample app exits 0 on SIGTERM');
  }

  // v3, kill-then-download: the old one is gone before the fetch begins
  {
    const { old, fresh, pull } = await update('v3', { update: { strategy: 'kill-then-download' } });
    timeline('v3 kill-then-download', {
      'old stopped': old.finishedAt,
      'old removed': old.removedAt,
      'fetch start': pull.startedAt,
      'fetch end': pull.finishedAt,
      'new started': fresh.startedAt,
    });
    t.true(old.finishedAt! <= pull.startedAt, 'kill-then-download: old stopped before the fetch starts');
    t.true(old.removedAt <= pull.startedAt, 'kill-then-download: old removed before the fetch starts');
    t.true(pull.finishedAt <= fresh.startedAt!, 'kill-then-download: new starts after the fetch');
  }

  // v4, delete-then-download: old container and old image (its own blobs) are gone before the fetch
  {
    const v3Pad = (await layoutBlobs(layouts.v3!)).at(-1)!;
    t.true(await stack.store.has(v3Pad.digest as Digest), 'v3 layer stored while v3 runs');
    const { old, fresh, pull } = await update('v4', { update: { strategy: 'delete-then-download' } });
    const del = counters.removals.find((r) => r.image === 'sample:v3');
    t.truthy(del, 'delete-then-download: the old image was deleted');
    timeline('v4 delete-then-download', {
      'old stopped': old.finishedAt,
      'old removed': old.removedAt,
      'old image deleted': del?.finishedAt,
      'fetch start': pull.startedAt,
      'fetch end': pull.finishedAt,
      'new started': fresh.startedAt,
    });
    t.true(old.finishedAt! <= old.removedAt, 'delete-then-download: stopped, then removed');
    t.true(old.removedAt <= del!.startedAt, 'delete-then-download: container removed, then its image');
    t.true(del!.finishedAt <= pull.startedAt, 'delete-then-download: old image deleted before the fetch');
    t.true(del!.freedBytes >= v3Pad.size, `old image's blobs freed at once (${del!.freedBytes} B)`);
    t.false(await stack.store.has(v3Pad.digest as Digest), 'v3 layer no longer stored');
    t.false((await device.images.list()).includes('sample:v3'));
    t.true(pull.finishedAt <= fresh.startedAt!);
  }

  // v5, hand-over with a health check: both run; the old one is stopped once the new one is healthy,
  // which the test decides by creating the file the probe looks for
  {
    const before = await runningOnly();
    const v = await deploy('v5', {
      update: { strategy: 'hand-over', handoverTimeoutMs: 60_000 },
      volumes: [{ type: 'bind', source: signalDir, target: '/data' }],
      healthcheck: {
        probe: { type: 'shell', command: 'test -f /data/ready' },
        intervalMs: 200,
        timeoutMs: 5000,
        startPeriodMs: 60_000,
      },
    });
    await waitFor(
      async () =>
        (await stack.running('sample:v5')) &&
        events.some((e) => e.type === 'waiting' && String(e.reasons).includes('hand-over until healthy')),
      60_000,
      'v5 started, hand-over waiting',
    ).catch(diagnose);
    // give a hand-over that did not wait for health the time to stop the old one
    await new Promise((r) => setTimeout(r, 1000));
    t.true(await stack.running('sample:v4'), 'hand-over: old still runs beside the new one');
    const readyAt = Date.now();
    await fsp.writeFile(path.join(signalDir, 'ready'), '');
    await waitFor(() => gone.has(before.id), 30_000, 'old gone after hand-over').catch(diagnose);
    await healthy(v).catch(diagnose);
    const old = gone.get(before.id)!;
    const fresh = await runningOnly();
    t.is(fresh.image, 'sample:v5');
    timeline('v5 hand-over (healthy)', {
      'fetch end': pullOf('v5').finishedAt,
      'new started': fresh.startedAt,
      'new made healthy': readyAt,
      'old stopped': old.finishedAt,
    });
    t.true(pullOf('v5').finishedAt <= fresh.startedAt!);
    t.true(fresh.startedAt! < old.finishedAt!, 'hand-over: new started before the old one stopped');
    t.true(readyAt <= old.finishedAt!, 'hand-over: old stopped only after the new one became healthy');
    t.true(old.finishedAt! < fresh.startedAt! + 60_000, 'hand-over: by health, not by the timeout');
    t.is(old.exitCode, 0, 'hand-over after health: a graceful stop');
  }

  // v6, hand-over without a health check: the new one never reports healthy, so the old one is killed at
  // the hand-over timeout
  {
    const handoverTimeoutMs = 1500;
    const { old, fresh } = await update('v6', { update: { strategy: 'hand-over', handoverTimeoutMs } });
    timeline('v6 hand-over (timeout 1500 ms)', {
      'new started': fresh.startedAt,
      'old killed': old.finishedAt,
    });
    t.true(fresh.startedAt! < old.finishedAt!, 'hand-over: both ran at once');
    t.true(
      fresh.startedAt! + handoverTimeoutMs <= old.finishedAt!,
      'hand-over: old killed at the timeout, not before',
    );
    t.is(old.exitCode, 137, 'hand-over timeout: SIGKILL, no graceful stop');
  }

  // v7 holds the update lock (creates updates.lock in the mounted lock dir)
  await update('v7', { command: LOCK_HOLDER });
  await waitFor(() => existsSync(lockFile), 10_000, 'lock file').catch(diagnose);

  // v8 (download-then-kill; holds the lock too, for v9): fetched while locked, then the kill waits
  {
    const before = await runningOnly();
    const seen = events.length;
    await deploy('v8', { command: LOCK_HOLDER });
    await waitFor(() => waitedOnLock(seen), 60_000, 'waiting event for the lock').catch(diagnose);
    await waitFor(
      () => stack.reported()?.target.waiting?.some((r) => r.includes(LOCK_WAIT)) === true,
      10_000,
      'reported state says it waits on the lock',
    ).catch(diagnose);
    t.truthy(pullOf('v8'), 'locked: the new image is fetched meanwhile');
    t.true(await stack.running('sample:v7'), 'locked: the old one keeps running');
    t.false(await stack.running('sample:v8'));
    t.false(gone.has(before.id));

    const unlockAt = Date.now();
    const rm = await engine.exec(before.id, ['rm', '/tmp/berth-lock/updates.lock'], { timeoutMs: 10_000 });
    t.is(rm.exitCode, 0, rm.stderr);
    await replaced(before, 'v8');
    const old = gone.get(before.id)!;
    timeline('v8 locked', {
      'fetch end': pullOf('v8').finishedAt,
      'lock released': unlockAt,
      'old stopped': old.finishedAt,
      'new started': (await runningOnly()).startedAt,
    });
    t.true(pullOf('v8').finishedAt <= unlockAt, 'lock: fetched before the release');
    t.true(unlockAt <= old.finishedAt!, 'lock: old stopped only after the lock was released');
    await waitFor(() => existsSync(lockFile), 10_000, 'v8 holds the lock').catch(diagnose);
    await waitFor(
      () => stack.reported()?.target.waiting === undefined,
      10_000,
      'reported: no longer waiting',
    );
  }

  // v9 overrides the lock v8 holds: the update goes through with the lock file still in place
  {
    const seen = events.length;
    t.true(existsSync(lockFile));
    const { old, fresh, pull } = await update('v9', { update: { overrideLock: true } });
    t.true(existsSync(lockFile), 'override: nobody released the lock');
    timeline('v9 override', {
      'fetch end': pull.finishedAt,
      'old stopped': old.finishedAt,
      'new started': fresh.startedAt,
    });
    t.false(waitedOnLock(seen), 'override: never waited on the lock');
    t.true(pull.finishedAt <= old.finishedAt!, 'override: still download-then-kill');
    t.true(old.finishedAt! <= fresh.startedAt!);
  }

  // v10, kill-then-download while the lock (left by v8) is still there: not even the fetch starts until
  // the lock goes; this time it is released from the host side of the lock dir
  {
    const before = await runningOnly();
    const seen = events.length;
    t.true(existsSync(lockFile));
    await deploy('v10', { update: { strategy: 'kill-then-download' } });
    await waitFor(() => waitedOnLock(seen), 60_000, 'waiting event for the lock').catch(diagnose);
    t.false(
      counters.pulls.some((p) => p.image === 'sample:v10'),
      'locked kill-then-download: nothing fetched',
    );
    t.true(await stack.running('sample:v9'), 'locked: the old one keeps running');
    const unlockAt = Date.now();
    await fsp.rm(lockFile);
    await replaced(before, 'v10');
    const old = gone.get(before.id)!;
    const pull = pullOf('v10');
    timeline('v10 kill-then-download, locked', {
      'lock released': unlockAt,
      'old stopped': old.finishedAt,
      'fetch start': pull.startedAt,
      'fetch end': pull.finishedAt,
    });
    t.true(unlockAt <= old.finishedAt!, 'lock: old stopped only after the release');
    t.true(old.removedAt <= pull.startedAt, 'kill-then-download: old gone before the fetch');
  }

  // v10 again with a new command, hand-over without a health check but with balena's signal: the new
  // container writes handover-complete into the lock dir after a second; the old one is stopped then,
  // gracefully, long before the 60 s timeout
  {
    const { old, fresh } = await update('v10', {
      command: ['/bin/sh', '-c', 'sleep 1; touch /tmp/berth-lock/handover-complete; exec /bin/app'],
      update: { strategy: 'hand-over', handoverTimeoutMs: 60_000 },
    });
    const signalAt = (await fsp.stat(path.join(locks, APP, 'handover-complete'))).mtimeMs;
    timeline('v10 hand-over (handover-complete)', {
      'new created': fresh.createdAt,
      'new started': fresh.startedAt,
      signalled: signalAt,
      'old stopped': old.finishedAt,
    });
    t.true(fresh.createdAt! <= signalAt, 'the signal came from the new container');
    t.true(signalAt <= old.finishedAt!, 'hand-over: old stopped only after the signal');
    t.true(old.finishedAt! < fresh.startedAt! + 30_000, 'by the signal, not by the 60 s timeout');
    t.is(old.exitCode, 0, 'a graceful stop');
  }
});
