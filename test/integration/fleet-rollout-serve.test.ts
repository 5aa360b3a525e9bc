/**
 * A rollout carried by a real `berth fleet serve` process on Mosquitto, driven from the CLI on the state dir
 * (local mode: the server notices the rollout and the operator's actions in the database), killed with
 * SIGKILL in the middle of a phase and started again: the rollout goes on to success and no device is sent
 * a target twice — counted on the wire by an observer subscribed to every target topic (live deliveries;
 * the retained copies a new subscription gets are left out).
 */
import { createPublicKey } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { loadFleetPrivateKey } from '../../src/fleet/keys.js';
import { berth, berthAsync, berthServe, berthStop } from '../helpers/cli.js';
import { startSimulator } from '../helpers/device-sim.js';
import { tempDir, waitFor } from '../helpers/fleet-harness.js';
import { buildMultiArchImage } from '../helpers/images.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { observeTargets } from '../helpers/target-wire.js';

const FLEET = 'ks';

function serve(t: ExecutionContext, dir: string, broker: string) {
  const server = berthServe({ dir, broker, fleet: FLEET });
  t.teardown(() => berthStop(server.p));
  return server;
}

test('kill -9 of fleet serve mid-phase, then a restart: the rollout goes on, no device gets a target twice', async (t) => {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const work = await tempDir(t, 'rollout-serve');
  const dir = path.join(work, 'fleet');
  const cli = (...args: string[]) =>
    berth(['--state-dir', dir, ...args], { env: { BERTH_LOG_LEVEL: 'warn' } });
  // while simulated devices run in this process the CLI must not block the event loop (no spawnSync)
  const acli = (...args: string[]) => berthAsync(['--state-dir', dir, ...args]);
  t.is(cli('fleet', 'keygen').code, 0);
  for (const [tag, arch] of [
    ['app:1', 'amd64'],
    ['app:2', 'amd64'],
  ] as const) {
    const img = buildMultiArchImage(
      path.join(work, tag.replace(':', '-')),
      [{ architecture: arch }],
      tag.replace(':', ''),
    );
    const r = cli('fleet', 'push', img.layout, '--tag', tag);
    t.is(r.code, 0, r.stderr);
  }
  let server = serve(t, dir, m.url);
  const publicKey = createPublicKey(await loadFleetPrivateKey(dir));
  // slow devices: a phase stays in flight long enough to kill the server in it
  const sim = await startSimulator({
    url: m.url,
    fleet: FLEET,
    count: 30,
    groups: () => ['g1'],
    publicKey,
    connections: 2,
    applyMs: 600,
    windowMs: 600,
  });
  t.teardown(() => sim.stop());
  await sim.ready();
  const db = () => new Database(path.join(dir, 'fleet.db'), { readonly: true, fileMustExist: true });
  const q = <T>(sql: string, ...args: unknown[]): T => {
    const d = db();
    try {
      return d.prepare(sql).get(...args) as T;
    } finally {
      d.close();
    }
  };
  await waitFor(
    () => q<{ n: number }>('SELECT COUNT(*) AS n FROM devices WHERE online = 1').n === 30,
    30_000,
    'devices seen',
  );
  const t1 = path.join(work, 't1.json');
  const t2 = path.join(work, 't2.json');
  const target = (tag: string) =>
    JSON.stringify({ apps: { web: { services: { main: { image: tag } } } }, images: [tag] });
  await fsp.writeFile(t1, target('app:1'));
  await fsp.writeFile(t2, target('app:2'));
  const dep = await acli('fleet', 'deploy', t1, '--group', 'g1', '--wait', '--timeout', '60s');
  t.is(dep.code, 0, dep.stderr);

  // the observer: from now on, every live delivery of a target
  const wire = await observeTargets(t, { url: m.url, fleet: FLEET });

  const created = await acli(
    'fleet',
    'rollout',
    'create',
    t2,
    '--group',
    'g1',
    '--phases',
    '2,50%,100%',
    '--name',
    'kill test',
    '--json',
  );
  t.is(created.code, 0, created.stderr);
  const id = (JSON.parse(created.stdout) as { id: number }).id;
  // mid-phase 2: some of its devices sent, not all converged
  await waitFor(
    () =>
      q<{ n: number }>(
        "SELECT COUNT(*) AS n FROM rollout_devices WHERE rollout_id = ? AND phase = 2 AND publish != 'none' AND outcome != 'converged'",
        id,
      ).n > 0,
    60_000,
    'phase 2 in flight',
  );
  server.p.kill('SIGKILL');
  await new Promise((r) => server.p.once('exit', r));
  const at = q<{ state: string; phase: number }>('SELECT state, phase FROM rollouts WHERE id = ?', id);
  t.is(at.state, 'running');
  t.is(at.phase, 2);
  // the CLI reads the rollout from the state dir while the server is down
  const shown = await acli('fleet', 'rollout', 'show', String(id));
  t.is(shown.code, 0, shown.stderr);
  t.regex(shown.stdout, /rollout \d+ "kill test": running, phase 2\/3/);

  server = serve(t, dir, m.url);
  await waitFor(
    () => q<{ state: string }>('SELECT state FROM rollouts WHERE id = ?', id).state === 'succeeded',
    90_000,
    'succeeded',
  );
  await waitFor(
    () => q<{ settle: string }>('SELECT settle FROM rollouts WHERE id = ?', id).settle === 'done',
    30_000,
    'settled',
  );
  // exactly one content publish per device at most, and the group target once
  const content = new Map([...wire.content].map(([k, v]) => [k, v.length]));
  const twice = [...content].filter(([, n]) => n > 1);
  t.deepEqual(twice, [], `no device or group got a target twice\n${server.out()}`);
  t.is(content.get('group g1'), 1);
  const overrides = [...content.keys()].filter((k) => !k.startsWith('group ')).length;
  t.is(overrides, 15, 'phases 1 and 2 (2 + 13 devices) got overrides; phase 3 the group target');
  const ls = await acli('fleet', 'rollout', 'ls', '--json');
  t.is(ls.code, 0, ls.stderr);
  t.like((JSON.parse(ls.stdout) as Array<Record<string, unknown>>)[0], { id, state: 'succeeded', total: 30 });
  const devs = await acli('fleet', 'rollout', 'show', String(id), '--devices');
  t.is(devs.code, 0, devs.stderr);
  t.regex(devs.stdout, /converged/);
  const again = await acli('fleet', 'rollout', 'resume', String(id));
  t.not(again.code, 0);
  t.regex(again.stderr, /succeeded: it is over and cannot be resumed/);
});
