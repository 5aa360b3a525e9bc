/**
 * A staged rollout over real agents, all real: Mosquitto, the fleet server (rollout driver included) in this
 * process, three `berth agent` processes (own state dirs, overlay snapshots, berth-runtime containers) in
 * one group, sample images pushed to the fleet.
 *
 *   group target v1 everywhere, healthy → rollout of v2 (phases 1, 100 %; one canary; error threshold 0 %)
 *   whose health check fails on the device → the canary's agent rolls back on its own (health window), the
 *   fleet counts it failed, the rollout aborts on its error threshold and clears the canary's override; the
 *   other two devices are never sent v2 (an MQTT observer on every target topic, and every state they
 *   report), and their containers are the very same ones (id, start time, restarts).
 */
import { randomBytes } from 'node:crypto';
import test, { type ExecutionContext } from 'ava';
import { connectAsync } from 'mqtt';
import { parseTopic, prefix } from '../../src/transport/topics.js';
import { type Device, makeDevice, startFleetStack } from '../helpers/agent-process.js';
import { buildSampleImages } from '../helpers/agent-stack.js';
import { FLEET, tempDir, waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';

const MINUTE = 60_000;

/** the app: service web on `sample:<tag>`, with `extra` (a health check) */
const release = (tag: string, extra: Record<string, unknown> = {}) => ({
  apps: {
    hello: {
      services: { web: { image: `sample:${tag}`, networkMode: 'none', stopTimeoutMs: 500, ...extra } },
    },
  },
  images: [`sample:${tag}`],
});

interface Applied {
  kind: string;
  id: string;
  version: number;
}

/**
 * Everything on the broker about targets and reported states: per target topic (`device <id>`,
 * `group <g>`) the image names of each content message (retained copies included: a device would apply
 * those too) and the number of clears; per device every `applied` it reported, in order.
 */
async function observe(t: ExecutionContext, url: string) {
  const link = await connectAsync(url, {
    clientId: `rollout-agents-observer-${process.pid}-${randomBytes(4).toString('hex')}`,
    reconnectPeriod: 0,
  });
  t.teardown(() => link.endAsync());
  const content = new Map<string, string[]>();
  const clears = new Map<string, number>();
  const applied = new Map<string, Array<Applied | null>>();
  link.on('message', (topic, payload) => {
    if (payload.length === 0) return;
    const p = parseTopic(topic);
    if (!p) return;
    if (p.kind === 'device' && p.channel === 'state') {
      const s = JSON.parse(payload.toString()) as { target?: { applied: Applied | null } };
      applied.set(p.deviceId, [...(applied.get(p.deviceId) ?? []), s.target?.applied ?? null]);
      return;
    }
    const key =
      p.kind === 'device' && p.channel === 'target'
        ? `device ${p.deviceId}`
        : p.kind === 'group-target'
          ? `group ${p.group}`
          : undefined;
    if (!key) return;
    const body = JSON.parse(payload.toString()) as {
      target: { clear?: true; images?: Array<{ name: string }> };
    };
    if (body.target.clear) clears.set(key, (clears.get(key) ?? 0) + 1);
    else
      content.set(key, [
        ...(content.get(key) ?? []),
        (body.target.images ?? []).map((i) => i.name).join(','),
      ]);
  });
  const base = prefix(FLEET);
  await link.subscribeAsync(
    [`${base}/devices/+/target`, `${base}/groups/+/target`, `${base}/devices/+/state`],
    { qos: 1 },
  );
  return { content, clears, applied };
}

test('rollout over 3 real agents: the canary fails its health check and rolls back by itself, the rollout aborts, the other two never see the release', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(15 * MINUTE);
  const work = await tempDir(t, 'rollout-agents-img');
  const layouts = await buildSampleImages(work, ['v1', 'v2']);
  const stack = await startFleetStack(t, { layouts });
  const { fleet, mosquitto } = stack;
  const wire = await observe(t, mosquitto.url);

  const group = `shops-${process.pid}-${randomBytes(3).toString('hex')}`;
  // a health window long enough for a failing probe to be seen on a loaded machine; retries capped so a
  // failed step is tried again within seconds (the default backoff grows to 5 minutes)
  const config = {
    agent: { healthWindowMs: 20_000, retryMinMs: 200, retryMaxMs: 5000, idleIntervalMs: 500 },
  };
  const devices: Device[] = [];
  for (const name of ['ro-canary', 'ro-b', 'ro-c'])
    devices.push(await makeDevice(t, { name, fleetKeyFile: fleet.publicKeyFile, groups: [group], config }));
  const [canary, ...others] = devices as [Device, Device, Device];
  const diagnose = (err: Error) => {
    for (const d of devices)
      t.log(`--- ${d.id}: ${JSON.stringify(fleet.stores.devices.get(d.id))}\n${d.agent.logTail(60)}`);
    throw err;
  };
  await Promise.all(devices.map((d) => d.agent.start(mosquitto.url)));
  // the fleet knows every device and its group before it deploys
  await waitFor(
    () => devices.every((d) => fleet.stores.devices.get(d.id)?.groups.includes(group)),
    5 * MINUTE,
    'the three devices known to the fleet, in the group',
  ).catch(diagnose);

  // v1 through the group target; healthy everywhere (past its health window: a rollback point)
  const v1 = await fleet.deploy({ kind: 'group', id: group }, release('v1'));
  const onV1 = (d: Device) => {
    const s = fleet.stores.devices.get(d.id);
    return (
      s?.applied?.kind === 'group' &&
      s.applied.version === v1.version &&
      s.targetStatus === 'healthy' &&
      d.db.running('sample:v1') !== undefined
    );
  };
  await waitFor(() => devices.every(onV1), 10 * MINUTE, 'v1 healthy on the three devices').catch(diagnose);
  const before = others.map((d) => d.db.running('sample:v1')!);

  const { rollouts } = fleet.server.services;
  const r = await rollouts.create({
    name: 'v2 with a failing health check',
    target: release('v2', {
      healthcheck: {
        probe: { type: 'shell', command: 'exit 1' },
        intervalMs: 300,
        timeoutMs: 5000,
        retries: 1,
      },
    }),
    selection: { group },
    phases: [1, '100%'],
    canaries: [canary.id],
    policy: { errorThreshold: 0 },
    createdBy: 'test',
  });
  const rows = fleet.stores.rollouts.devices(r.id);
  t.like(
    rows.find((x) => x.deviceId === canary.id),
    { phase: 1, canary: true },
  );
  for (const d of others)
    t.like(
      rows.find((x) => x.deviceId === d.id),
      { phase: 2 },
    );

  await waitFor(() => rollouts.view(r.id).row.state === 'aborted', 10 * MINUTE, 'rollout aborted').catch(
    (err: Error) => {
      t.log(JSON.stringify(rollouts.view(r.id)));
      diagnose(err);
    },
  );
  await waitFor(() => rollouts.view(r.id).row.rollback === 'done', 5 * MINUTE, 'rollback done').catch(
    diagnose,
  );
  const v = rollouts.view(r.id);
  t.is(v.row.phase, 1, 'stopped in phase 1');
  t.regex(
    v.row.reason ?? '',
    /^error threshold crossed: 1 of 1 devices .* failed or rolled back; the limit is 0 %/,
  );
  t.like(v.counts[0], { total: 1, failed: 1 });
  t.like(v.counts[1], { total: 2, queued: 2 });

  // the canary: its agent rolled back from the release to the group's v1 on its own, for the health check
  const canaryTargets = canary.agent
    .logLines()
    .filter((l) => l.msg === 'target failed its health window; rolling back');
  t.is(canaryTargets.length, 1, 'one rollback on the canary');
  t.regex(String(canaryTargets[0]?.reason), /hello\/web: health check failed/);
  await waitFor(
    () => {
      const s = fleet.stores.devices.get(canary.id);
      return (
        s?.applied?.kind === 'group' &&
        s.applied.version === v1.version &&
        canary.db.running('sample:v1') !== undefined &&
        canary.db.running('sample:v2') === undefined
      );
    },
    5 * MINUTE,
    'the canary back on the group target v1',
  ).catch(diagnose);
  const canaryApplied = wire.applied.get(canary.id) ?? [];
  t.true(
    canaryApplied.some((a) => a?.kind === 'device'),
    'the canary did apply the release (its override) before rolling back',
  );
  t.regex(fleet.stores.devices.get(canary.id)?.targetReason ?? '', /rollback from device \d+/);
  t.deepEqual(wire.content.get(`device ${canary.id}`), ['sample:v2'], 'the canary was sent the release once');
  await waitFor(() => wire.clears.get(`device ${canary.id}`) === 1, MINUTE, 'the canary override cleared');

  // the other two: never sent the release, never reported anything but the group target, same containers
  t.deepEqual(wire.content.get(`group ${group}`), ['sample:v1'], 'the group target stayed v1');
  for (const [i, d] of others.entries()) {
    t.is(wire.content.get(`device ${d.id}`), undefined, `${d.id} was sent nothing of its own`);
    const seen = wire.applied.get(d.id) ?? [];
    t.true(seen.length > 0, `${d.id} reported its state`);
    t.true(
      seen.every((a) => a === null || (a.kind === 'group' && a.id === group && a.version === v1.version)),
      `${d.id} reported only the group target: ${JSON.stringify(seen)}`,
    );
    const now = d.db.running('sample:v1');
    t.deepEqual(
      now && { id: now.id, startedAt: now.startedAt, restartCount: now.restartCount },
      { id: before[i]!.id, startedAt: before[i]!.startedAt, restartCount: before[i]!.restartCount },
      `${d.id} keeps the same v1 container`,
    );
    t.false(d.db.imageNames().includes('sample:v2'), `${d.id} never pulled the release`);
  }
});
