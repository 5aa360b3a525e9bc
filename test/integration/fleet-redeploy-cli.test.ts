/**
 * `berth fleet deployments` and `berth fleet redeploy` as an operator runs them: the built CLI on the state
 * dir of a real `berth fleet serve` process (Mosquitto, the HTTP API on an ephemeral port) and through its
 * API (`--server --token`), with simulated devices over real MQTT that verify and report every target.
 */
import { createPublicKey } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import type { Deployment } from '../../src/fleet/api/schemas.js';
import { loadFleetPrivateKey } from '../../src/fleet/keys.js';
import { berthAsync, berthServe, berthStop, keyedFleetWithImages, servedApi } from '../helpers/cli.js';
import { startSimulator } from '../helpers/device-sim.js';
import { tempDir, waitFor } from '../helpers/fleet-harness.js';
import { Mosquitto } from '../helpers/mosquitto.js';

const FLEET = 'rd';

test('history and redeploy on the state dir and with --server: v1, v2, redeploy v1 → version 3 runs v1; refusals exit non-zero naming what was wrong', async (t) => {
  t.timeout(240_000);
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const work = await tempDir(t, 'redeploy-cli');
  const dir = path.join(work, 'fleet');
  keyedFleetWithImages(work, dir, ['app:1', 'app:2']);
  const files: Record<string, string> = {};
  for (const tag of ['app:1', 'app:2']) {
    files[tag] = path.join(work, `${tag.replace(':', '-')}.json`);
    await fsp.writeFile(
      files[tag],
      JSON.stringify({ apps: { web: { services: { main: { image: tag } } } }, images: [tag] }),
    );
  }
  const server = berthServe({ dir, broker: m.url, fleet: FLEET, http: '127.0.0.1:0' });
  t.teardown(() => berthStop(server.p));
  const api = await servedApi(dir, server.p.pid);
  const sim = await startSimulator({
    url: m.url,
    fleet: FLEET,
    ids: ['solo', 'g-1', 'g-2'],
    groups: (id) => (id === 'solo' ? [] : ['lab']),
    publicKey: createPublicKey(await loadFleetPrivateKey(dir)),
    connections: 1,
    applyMs: 20,
    windowMs: 20,
  });
  t.teardown(() => sim.stop());
  await sim.ready();
  // the CLI must not block this process's event loop: the simulated devices live here
  const cli = (...args: string[]) => berthAsync(['--state-dir', dir, ...args]);
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    t.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  await waitFor(
    async () => (await cli('fleet', 'devices', '--json')).stdout.includes('"g-2"'),
    30_000,
    'seen',
  );

  // --- on the server's state dir: a device's history
  await ok('fleet', 'deploy', files['app:1']!, '--device', 'solo', '--wait', '--timeout', '60s');
  await ok('fleet', 'deploy', files['app:2']!, '--device', 'solo', '--wait', '--timeout', '60s');
  const table = await ok('fleet', 'deployments', '--device', 'solo');
  const lines = table.trim().split('\n');
  t.regex(lines[0]!, /^ID\s+SCOPE\s+VERSION\s+IMAGES\s+STATE\s+WHEN\s+BY$/);
  t.regex(lines[1]!, /^2\s+device solo\s+2 \*\s+app:2@[0-9a-f]{12}\s+published\s+\S+\s+local:/);
  t.regex(lines[2]!, /^1\s+device solo\s+1\s+app:1@[0-9a-f]{12}\s+published/);
  const out = await ok('fleet', 'redeploy', '1', '--reason', 'v2 broke it', '--wait', '--timeout', '60s');
  t.is(out, 'redeployed deployment 1 as device solo version 3\n');
  t.is(sim.state('solo')?.target.applied?.version, 3);
  t.is(sim.state('solo')?.apps.web?.services.main?.image, 'app:1');
  const history = JSON.parse(await ok('fleet', 'deployments', '--device', 'solo', '--json')) as Deployment[];
  t.deepEqual(
    history.map((d) => [d.version, d.current, d.redeployOf, d.images.map((i) => i.name)]),
    [
      [3, true, 1, ['app:1']],
      [2, false, null, ['app:2']],
      [1, false, null, ['app:1']],
    ],
  );
  t.regex(
    (await ok('fleet', 'deployments', '--device', 'solo', '--limit', '1')).split('\n')[1]!,
    /\(redeploy of 1\)$/,
  );

  // refusals: an error line with the code and what was wrong, exit 1 (2 for bad input); nothing published
  const refused = async (code: number, re: RegExp, ...args: string[]) => {
    const r = await cli(...args);
    t.is(r.code, code, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    t.regex(r.stderr, re);
  };
  await refused(
    1,
    /^berth: Conflict: deployment 3 \(device solo 3\) is the current version of device solo already/m,
    'fleet',
    'redeploy',
    '3',
  );
  await refused(1, /^berth: NotFound: no deployment 99$/m, 'fleet', 'redeploy', '99');
  await refused(
    1,
    /^berth: Conflict: .*belongs to device solo, not group lab/m,
    'fleet',
    'redeploy',
    '2',
    '--group',
    'lab',
  );
  await refused(2, /^berth: InvalidInput: deployment id "v1": expected a number/m, 'fleet', 'redeploy', 'v1');
  await refused(
    2,
    /^berth: InvalidInput: --limit 0: expected a whole number from 1 to 500/m,
    'fleet',
    'deployments',
    '--limit',
    '0',
  );
  await refused(
    2,
    /^berth: InvalidInput: reason: at most 500 characters/m,
    'fleet',
    'redeploy',
    '1',
    '--reason',
    'x'.repeat(501),
  );
  t.is((JSON.parse(await ok('fleet', 'deployments', '--json')) as unknown[]).length, 3);

  // --- through the API: a group's redeploy is a one-phase rollout, followed by --wait
  await ok('fleet', 'deploy', files['app:1']!, '--group', 'lab', '--wait', '--timeout', '60s');
  await ok('fleet', 'deploy', files['app:2']!, '--group', 'lab', '--wait', '--timeout', '60s');
  const tok = (await ok('fleet', 'token', 'create', '--name', 'ci', '--role', 'operator')).trim();
  const remote = ['--server', api, '--token', tok];
  const groupHistory = JSON.parse(
    await ok('fleet', 'deployments', '--group', 'lab', '--json', ...remote),
  ) as Deployment[];
  t.deepEqual(
    groupHistory.map((d) => [d.version, d.current]),
    [
      [2, true],
      [1, false],
    ],
  );
  const v1 = groupHistory[1]!.id;
  const r = await ok(
    'fleet',
    'redeploy',
    String(v1),
    '--group',
    'lab',
    '--wait',
    '--timeout',
    '60s',
    ...remote,
  );
  t.regex(
    r,
    new RegExp(
      `^redeployed deployment ${v1} as group lab version 3 as rollout \\d+ \\(berth fleet rollout show \\d+\\)\\n$`,
    ),
  );
  for (const id of ['g-1', 'g-2']) {
    t.like(sim.state(id)?.target.applied, { kind: 'group', id: 'lab', version: 3 });
    t.is(sim.state(id)?.apps.web?.services.main?.image, 'app:1');
  }
  const audit = await ok('fleet', 'audit', '--action', 'deployment.redeploy', '--json');
  const rows = (
    JSON.parse(audit) as {
      items: Array<{ actor: string; target: string; message: string | null; result: string }>;
    }
  ).items;
  t.like(rows[0], {
    actor: 'token:ci',
    target: 'group lab 3',
    result: 'ok',
    message: `redeploy of deployment ${v1}`,
  });
  t.true(
    rows.some((a) => a.actor.startsWith('local:') && a.message === 'redeploy of deployment 1: v2 broke it'),
  );
});
