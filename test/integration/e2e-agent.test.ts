/**
 * End to end, all real: fleet server with its embedded MQTT broker, signed targets, blob transfer over
 * MQTT, overlay snapshots, berth-runtime (config runtime.name) + berth-monitor, the full agent
 * (reconciler, health, rollback, reporter, outbox) as `berth agent` builds it (startDeviceAgent).
 *
 *   v1 deployed → running; v2 changes the app layer only → only that layer (plus manifest and config)
 *   crosses the wire, measured by the transfer counters; v3 crashes inside its health window → the agent
 *   rolls back to v2 by itself and reports it (event + retained state, read from the broker).
 */
import * as path from 'node:path';
import test from 'ava';
import { buildSampleImages, layoutBlobs, pushSampleImages, startAgentStack } from '../helpers/agent-stack.js';
import { startFleet, tempDir, waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';

test('deploy v1 → running; v2 moves one layer only; v3 crashes in its health window → rolled back to v2, reported', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(180_000);
  const fleet = await startFleet(t);
  const work = await tempDir(t, 'e2e-images');
  const layouts = await buildSampleImages(work, ['v1', 'v2', 'v3']);
  await pushSampleImages(fleet, layouts);
  const stack = await startAgentStack(t, fleet, {
    deviceId: `e2e-${process.pid}`,
    agent: { reconciler: { healthWindowMs: 5000, minDelayMs: 100, maxDelayMs: 1000, idleIntervalMs: 300 } },
  });
  const { device, events, running } = stack;
  const deploy = (tag: string, command?: string[]) =>
    stack.deploy(
      {
        hello: {
          services: {
            web: {
              image: `sample:${tag}`,
              networkMode: 'none',
              stopTimeoutMs: 500,
              ...(command ? { command } : {}),
            },
          },
        },
      },
      [`sample:${tag}`],
    );
  await deploy('v1');
  await waitFor(() => running('sample:v1'), 60_000, 'sample:v1 running');
  const v1Fetched = device.images.counters.fetchedBytes;
  t.true(v1Fetched > 1_000_000, `v1 moved the busybox layer (${v1Fetched} B)`);
  await waitFor(
    async () =>
      (await device.engine.logs((await device.engine.list())[0]!.id, {})).join('').includes('hello v1'),
    10_000,
    'v1 output',
  );

  await deploy('v2');
  await waitFor(
    async () => (await running('sample:v2')) && !(await running('sample:v1')),
    60_000,
    'v2',
  ).catch(async (err) => {
    t.log(JSON.stringify(await device.agent.reporter.currentState()), await device.engine.list(), events);
    throw err;
  });
  const v2 = device.images.counters.pulls.find((p) => p.image === 'sample:v2')!;
  const v1Blobs = new Set((await layoutBlobs(layouts.v1!)).map((b) => b.digest));
  const newBlobs = (await layoutBlobs(layouts.v2!)).filter((b) => !v1Blobs.has(b.digest));
  const newBytes = newBlobs.reduce((n, b) => n + b.size, 0);
  t.is(newBlobs.length, 3, 'manifest, config and the app layer are new; the base layer is shared');
  t.is(
    v2.fetchedBytes,
    newBytes,
    `v2 moved only its new blobs (${v2.fetchedBytes} B of ${v1Fetched} B for v1)`,
  );
  t.log(`v1 fetched ${v1Fetched} B; v2 fetched ${v2.fetchedBytes} B`);

  // only a target that passed its health window is a rollback point
  await waitFor(
    () => events.some((e) => e.type === 'rollout-healthy' && (e.target as { version: number }).version === 2),
    30_000,
    'v2 healthy',
  );
  await deploy('v3', ['/bin/sh', '-c', 'echo v3 starting; sleep 1; exit 3']);
  await waitFor(() => events.some((e) => e.type === 'rollback'), 60_000, 'rollback event').catch(
    async (err) => {
      t.log(JSON.stringify(await device.agent.reporter.currentState()), JSON.stringify(events));
      throw err;
    },
  );
  const rb = events.find((e) => e.type === 'rollback')!;
  t.like(rb, { from: { kind: 'device', version: 3 }, to: { kind: 'device', version: 2 } });
  t.regex(String(rb.reason), /health window/);
  await waitFor(async () => running('sample:v2'), 30_000, 'v2 back');
  t.false(await running('sample:v3'));
  await waitFor(
    () => stack.reported()?.target?.applied?.version === 2 && stack.reported()?.target.status !== 'applying',
    20_000,
    'reported state after rollback',
  );
  t.like(stack.reported()?.target, { applied: { kind: 'device', version: 2 } });
  t.regex(
    stack.reported()?.target.reason ?? '',
    /^rollback from device 3: /,
    'versions as the operator deployed them',
  );

  // a container snapshot no container owns (an agent killed mid-create whose cleanup failed) is swept;
  // the running container's is kept
  const snaps = async (kind: string) => {
    const out: string[] = [];
    await device.snapshotter.walk((i) => {
      if (i.kind === kind) out.push(i.name);
    });
    return out;
  };
  const base = (await snaps('committed'))[0]!;
  await device.snapshotter.prepare('container-0rphan0000', base);
  const live = new Set((await device.manager.list({ all: true })).map((c) => c.id));
  const swept = await device.images.sweepOrphans(live, path.join(stack.stateDir, 'containers'));
  t.deepEqual(swept, ['0rphan0000']);
  t.deepEqual(
    (await snaps('active')).sort(),
    [...live].map((id) => `container-${id}`).sort(),
    'only the live containers keep their snapshots',
  );
});
