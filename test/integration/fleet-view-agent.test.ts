/**
 * The fleet's view tells the truth, with real agents (startDeviceAgent: real containers, real reporter) on
 * the fleet server's embedded, authenticated broker, and the operator's `berth fleet deploy --wait` as a
 * process on the server's state dir:
 *   - deploy --wait exits 0 once the device converged; versions read `device 1`, `device 2`; previous filled;
 *   - a service stopped on the device shows as stopped in the fleet within 5 s;
 *   - a version that fails its health window: --wait exits non-zero, the fleet shows the device rolled back
 *     to `device 2`, with the reason;
 *   - a device provisioned with another fleet's key refuses the target: --wait exits non-zero naming it, and
 *     the fleet shows the device as `rejected`.
 */
import * as path from 'node:path';
import test from 'ava';
import { connectAgent } from '../../src/agent/api-client.js';
import { exec } from '../../src/lib/exec.js';
import { buildSampleImages, pushSampleImages, startAgentStack } from '../helpers/agent-stack.js';
import { BERTH_BUNDLE } from '../helpers/cli.js';
import { startFleet, tempDir, waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';

/** `berth fleet …` on the fleet's state dir, as a process (async: the server runs in this one). */
const fleetCli = (dir: string, ...args: string[]) =>
  exec(process.execPath, [BERTH_BUNDLE, '--log-level', 'warn', '--state-dir', dir, 'fleet', ...args], {
    allowFailure: true,
    timeoutMs: 120_000,
  });

const compose = async (dir: string, tag: string, command?: string) => {
  const file = path.join(dir, `compose-${tag}.yml`);
  const cmd = command ? `\n    command: ${JSON.stringify(['/bin/sh', '-c', command])}` : '';
  await import('node:fs/promises').then((f) =>
    f.writeFile(
      file,
      `name: hello\nservices:\n  web:\n    image: sample:${tag}\n    network_mode: none\n    stop_grace_period: 500ms${cmd}\n`,
    ),
  );
  return file;
};

test('deploy --wait, versions as deployed, previous, a stopped service within 5 s, a rollback in the fleet view', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(240_000);
  const fleet = await startFleet(t);
  const work = await tempDir(t, 'view-images');
  await pushSampleImages(fleet, await buildSampleImages(work, ['v1', 'v2', 'v3']));
  const deviceId = `view-${process.pid}`;
  const stack = await startAgentStack(t, fleet, {
    deviceId,
    agent: { reconciler: { healthWindowMs: 3000, minDelayMs: 100, maxDelayMs: 1000, idleIntervalMs: 300 } },
  });
  await waitFor(() => fleet.stores.devices.get(deviceId)?.online === true, 60_000, 'device online');
  const view = () => fleet.stores.devices.detail(deviceId)!;

  const d1 = await fleetCli(
    fleet.dir,
    'deploy',
    await compose(work, 'v1'),
    '--device',
    deviceId,
    '--wait',
    '--timeout',
    '90s',
  );
  t.is(d1.code, 0, d1.stderr);
  t.regex(d1.stdout, /deployed device .* version 1/);
  t.regex(d1.stderr, new RegExp(`${deviceId}: converged`));
  t.like(view(), { status: 'converged', applied: { kind: 'device', version: 1 } });

  const d2 = await fleetCli(
    fleet.dir,
    'deploy',
    await compose(work, 'v2'),
    '--device',
    deviceId,
    '--wait',
    '--timeout',
    '90s',
  );
  t.is(d2.code, 0, d2.stderr);
  t.like(view(), {
    status: 'converged',
    applied: { kind: 'device', version: 2 },
    previous: { kind: 'device', version: 1 },
  });
  const listed = await fleetCli(fleet.dir, 'devices');
  t.regex(
    listed.stdout,
    new RegExp(`${deviceId}\\s+online\\s+converged\\s+device 2\\s+device 2\\s+device 1`),
  );

  // stopped on the device (by hand, through the agent): the fleet sees it within 5 s, not at the next event
  const web = (await stack.device.engine.list()).find((c) => c.status === 'running')!;
  const client = (await connectAgent(stack.stateDir))!;
  await client.stop(web.id, 500);
  await waitFor(
    () => view().services.some((s) => s.service === 'web' && s.state === 'stopped'),
    5000,
    'the stop in the fleet view',
  );
  await client.start(web.id);

  // v3 crashes in its health window: --wait fails, the fleet shows the rollback and why
  const d3 = await fleetCli(
    fleet.dir,
    'deploy',
    await compose(work, 'v3', 'echo v3; sleep 1; exit 3'),
    '--device',
    deviceId,
    '--wait',
    '--timeout',
    '90s',
  );
  t.is(d3.code, 1, d3.stderr);
  t.regex(d3.stderr, /device 3: .* failed \(rollback from device 3: /);
  await waitFor(() => view().applied?.version === 2, 30_000, 'back on device 2');
  t.like(view(), { status: 'rolled-back', applied: { kind: 'device', version: 2 } });
  t.regex(view().lastError ?? '', /^rollback from device 3: /);
  const rolled = await fleetCli(fleet.dir, 'devices', '--status', 'rolled-back');
  t.regex(rolled.stdout, new RegExp(`${deviceId}\\s+online\\s+rolled-back\\s+device 2\\s+device 3`));
});

test('a device that trusts another fleet key rejects the target: deploy --wait exits non-zero and says so', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(180_000);
  const fleet = await startFleet(t);
  const other = await startFleet(t); // only for its key
  const work = await tempDir(t, 'key-images');
  await pushSampleImages(fleet, await buildSampleImages(work, ['v1']));
  const deviceId = `wrongkey-${process.pid}`;
  await startAgentStack(t, fleet, { deviceId, publicKeyFile: other.publicKeyFile });
  await waitFor(() => fleet.stores.devices.get(deviceId)?.online === true, 60_000, 'device online');
  t.is(fleet.stores.devices.get(deviceId)!.keyId !== null, true, 'the device says which key it trusts');

  const r = await fleetCli(
    fleet.dir,
    'deploy',
    await compose(work, 'v1'),
    '--device',
    deviceId,
    '--wait',
    '--timeout',
    '60s',
  );
  t.is(r.code, 1, r.stdout + r.stderr);
  t.regex(
    r.stderr,
    new RegExp(`${deviceId}: rejected \\(signed with key [0-9a-f]{16}, expected fleet key [0-9a-f]{16}\\)`),
  );
  t.like(fleet.stores.devices.get(deviceId)!, {
    status: 'rejected',
    rejection: { kind: 'device', version: 1 },
  });
  const listed = await fleetCli(fleet.dir, 'devices', '--status', 'rejected');
  t.regex(listed.stdout, new RegExp(`${deviceId}\\s+online\\s+rejected`));
});
