/**
 * Group deploys as one-phase rollouts, and the rollout CLI, driven as an operator drives them: the built
 * `berth` CLI on the state dir of a real `berth fleet serve` process (Mosquitto, the HTTP API on an
 * ephemeral port), simulated devices over real MQTT, and an observer counting every live target delivery
 * on the broker. Covered here: `fleet deploy --group [--wait]` (the rollout recorded, followed, ended; one
 * publish of the group target; superseding a staged rollout; a group with no device yet; from the remote
 * CLI too), `rollout show --watch` (redraws, ends with the rollout, exit code), `rollout abort
 * --no-rollback` (nothing sent back), and a label selector matching labels given at enrollment.
 */
import { createPublicKey } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { requestEnrollment } from '../../src/agent/enroll.js';
import type { RolloutWire } from '../../src/fleet/api/schemas.js';
import { loadFleetPrivateKey } from '../../src/fleet/keys.js';
import { berthAsync, berthServe, berthStop, keyedFleetWithImages, servedApi } from '../helpers/cli.js';
import { startSimulator } from '../helpers/device-sim.js';
import { tempDir, waitFor } from '../helpers/fleet-harness.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { observeTargets } from '../helpers/target-wire.js';

const FLEET = 'dr';

/** fleet serve (+ API) on Mosquitto with `count` simulated devices in group g1, images app:1 and app:2. */
async function servedFleet(
  t: ExecutionContext,
  o: { count: number; failShare?: number; applyMs?: number; windowMs?: number },
) {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const work = await tempDir(t, 'deploy-rollout');
  const dir = path.join(work, 'fleet');
  keyedFleetWithImages(work, dir, ['app:1', 'app:2']);
  const server = berthServe({ dir, broker: m.url, fleet: FLEET, http: '127.0.0.1:0' });
  t.teardown(() => berthStop(server.p));
  const api = await servedApi(dir, server.p.pid);
  const sim = await startSimulator({
    url: m.url,
    fleet: FLEET,
    count: o.count,
    groups: () => ['g1'],
    publicKey: createPublicKey(await loadFleetPrivateKey(dir)),
    connections: 2,
    failShare: o.failShare ?? 0,
    applyMs: o.applyMs ?? 50,
    windowMs: o.windowMs ?? 100,
  });
  t.teardown(() => sim.stop());
  await sim.ready();
  const q = <T>(sql: string, ...args: unknown[]): T => {
    const d = new Database(path.join(dir, 'fleet.db'), { readonly: true, fileMustExist: true });
    try {
      return d.prepare(sql).get(...args) as T;
    } finally {
      d.close();
    }
  };
  await waitFor(
    () => q<{ n: number }>('SELECT COUNT(*) AS n FROM devices WHERE online = 1').n === o.count,
    30_000,
    'devices seen',
  );
  const target = async (tag: string) => {
    const file = path.join(work, `${tag.replace(':', '-')}.json`);
    await fsp.writeFile(
      file,
      JSON.stringify({ apps: { web: { services: { main: { image: tag } } } }, images: [tag] }),
    );
    return file;
  };
  // the CLI must not block this process's event loop: the simulated devices live here
  const cli = (...args: string[]) => berthAsync(['--state-dir', dir, ...args]);
  const rollout = async (id: number): Promise<RolloutWire> => {
    const r = await cli('fleet', 'rollout', 'show', String(id), '--json');
    if (r.code !== 0) throw new Error(r.stderr);
    return JSON.parse(r.stdout) as RolloutWire;
  };
  return {
    dir,
    api,
    server,
    cli,
    q,
    rollout,
    t1: await target('app:1'),
    t2: await target('app:2'),
    wire: await observeTargets(t, { url: m.url, fleet: FLEET }),
  };
}

test('deploy --group is a one-phase rollout: --wait follows it, the group target is published once, it supersedes a staged rollout, failed devices are named', async (t) => {
  t.timeout(240_000);
  // one device in six fails every update after its first (its health window)
  const f = await servedFleet(t, { count: 6, failShare: 1 / 6 });
  const failing = 'sim-00006';
  const d1 = await f.cli('fleet', 'deploy', f.t1, '--group', 'g1', '--wait', '--timeout', '90s');
  t.is(d1.code, 0, `${d1.stdout}${d1.stderr}\n${f.server.out()}`);
  t.regex(d1.stdout, /^deployed group g1 version 1 as rollout 1 /m);
  t.regex(d1.stderr, /^sim-00001: converged$/m);
  t.regex(d1.stderr, /^6\/6 converged, 0 rejected or failed, 0 pending$/m);
  t.deepEqual(f.wire.content.get('group g1'), ['app:1'], 'the group target, once');
  t.deepEqual(
    [...f.wire.content.keys()].filter((k) => k.startsWith('device ')),
    [],
    'no device override',
  );
  const ls = await f.cli('fleet', 'rollout', 'ls', '--json');
  t.is(ls.code, 0, ls.stderr);
  const [first] = JSON.parse(ls.stdout) as RolloutWire[];
  t.like(first, {
    id: 1,
    name: 'deploy',
    state: 'succeeded',
    total: 6,
    converged: 6,
    selection: { kind: 'group', group: 'g1' },
    policy: { successThreshold: 100, errorThreshold: 100, rollback: false },
    group: { id: 'g1', deployment: { text: 'group g1 1' } },
  });
  t.is(first!.phases.length, 1);

  // a staged rollout of app:2 waits for approval with its two canaries moved; a deploy supersedes it
  const staged = await f.cli(
    ...['fleet', 'rollout', 'create', f.t2, '--group', 'g1', '--phases', '2,100%'],
    ...['--canary', 'sim-00001,sim-00002', '--approval', '--json'],
  );
  t.is(staged.code, 0, staged.stderr);
  const stagedId = (JSON.parse(staged.stdout) as RolloutWire).id;
  await waitFor(
    async () => (await f.rollout(stagedId)).state === 'waiting-approval',
    60_000,
    'the staged rollout waits for approval',
  );
  const d2 = await f.cli('fleet', 'deploy', f.t1, '--group', 'g1');
  t.is(d2.code, 0, d2.stderr);
  const deployId = Number(/as rollout (\d+)/.exec(d2.stdout)?.[1]);
  t.like(await f.rollout(stagedId), {
    state: 'superseded',
    supersededBy: deployId,
    reason: `superseded by rollout ${deployId}`,
  });
  // its canaries' overrides are cleared (they follow the new group target); it never set the group target
  await waitFor(
    () => f.wire.clears.get('device sim-00001') === 1 && f.wire.clears.get('device sim-00002') === 1,
    20_000,
    'the canaries cleared',
  );
  t.deepEqual(f.wire.content.get('group g1'), ['app:1', 'app:1']);
  t.deepEqual(f.wire.content.get('device sim-00001'), ['app:2']);
  const again = await f.cli('fleet', 'rollout', 'approve', String(stagedId));
  t.not(again.code, 0);
  t.regex(again.stderr, /was superseded .*cannot be approved/);

  // app:2 to the group: the failing device rolls back; the rollout ends aborted naming it, --wait exits 1,
  // and nothing is rolled back fleet-wide (no auto-rollback for a plain deploy)
  const d3 = await f.cli('fleet', 'deploy', f.t2, '--group', 'g1', '--wait', '--timeout', '90s');
  t.is(d3.code, 1, `${d3.stdout}${d3.stderr}`);
  const id3 = Number(/as rollout (\d+)/.exec(d3.stdout)?.[1]);
  t.regex(
    d3.stderr,
    new RegExp(
      `rollout ${id3} aborted: phase 1 cannot reach its success threshold of 100 %: 5 of 6 converged, 1 failed.*; ${failing} failed`,
    ),
  );
  t.regex(d3.stderr, /^5\/6 converged, 1 rejected or failed, 0 pending$/m);
  t.like(await f.rollout(id3), { state: 'aborted', failed: 1, rollback: { state: 'none', returned: 0 } });
  t.deepEqual(f.wire.content.get('group g1'), ['app:1', 'app:1', 'app:2'], 'one group publish per deploy');
  t.is(
    q5(
      f,
      "SELECT COUNT(*) AS n FROM devices WHERE target_kind = 'group' AND target_id = 'g1' AND target_version = 3",
    ),
    5,
    'the five others keep the release',
  );

  // a group no device follows yet: the target is published (for the devices to come), the rollout is done
  const empty = await f.cli('fleet', 'deploy', f.t1, '--group', 'later', '--wait', '--timeout', '60s');
  t.is(empty.code, 0, `${empty.stdout}${empty.stderr}`);
  t.regex(empty.stderr, /^0\/0 converged/m);
  t.deepEqual(f.wire.content.get('group later'), ['app:1']);

  // the remote CLI (the HTTP API) takes the same path
  const tok = await f.cli('fleet', 'token', 'create', '--name', 'ci', '--role', 'operator');
  t.is(tok.code, 0, tok.stderr);
  const remote = await berthAsync([
    ...['fleet', 'deploy', f.t2, '--group', 'later', '--wait', '--timeout', '60s'],
    ...['--server', f.api, '--token', tok.stdout.trim()],
  ]);
  t.is(remote.code, 0, `${remote.stdout}${remote.stderr}`);
  t.regex(remote.stdout, /^deployed group later version 2 as rollout \d+ /m);
  t.deepEqual(f.wire.content.get('group later'), ['app:1', 'app:2']);
  const audit = await f.cli('fleet', 'audit', '--action', 'deployment.create', '--json');
  t.is(audit.code, 0, audit.stderr);
  t.regex(audit.stdout, /group later/);
});

function q5(f: { q: <T>(sql: string) => T }, sql: string): number {
  return f.q<{ n: number }>(sql).n;
}

/** The frames `rollout show --watch` drew (non-TTY: each redraw printed in full, header first). */
function frames(stdout: string): string[] {
  return stdout.split(/^(?=rollout \d+[: ])/m).filter(Boolean);
}

test('rollout show --watch redraws per-phase progress and ends with the rollout (0 succeeded, 1 aborted); abort --no-rollback sends nothing back; a selector matches labels given at enrollment', async (t) => {
  t.timeout(240_000);
  // slow devices: each phase takes a couple of seconds, so the watch sees it move
  const f = await servedFleet(t, { count: 4, applyMs: 1200, windowMs: 800 });
  const made = await f.cli(
    ...['fleet', 'rollout', 'create', f.t1, '--group', 'g1', '--phases', '1,50%,100%', '--json'],
  );
  t.is(made.code, 0, made.stderr);
  const id = (JSON.parse(made.stdout) as RolloutWire).id;
  const watched = await f.cli('fleet', 'rollout', 'show', String(id), '--watch');
  t.is(watched.code, 0, `${watched.stdout}${watched.stderr}`);
  const drawn = frames(watched.stdout);
  t.true(drawn.length >= 2, watched.stdout);
  t.regex(drawn[0]!, new RegExp(`^rollout ${id}: running, phase \\d/3`));
  const last = drawn.at(-1)!;
  t.regex(last, new RegExp(`^rollout ${id}: succeeded, phase 3/3`));
  t.regex(last, /^ {2} 1 1 {6}\[#{30}\] {5}1\/1 ok 0 failed 0 pending {2}passed$/m);
  t.regex(last, /^ {2} 3 100% {3}\[#{30}\] {5}2\/2 ok 0 failed 0 pending {2}passed$/m);
  // the devices converged along the way: the ok counts only grow, from fewer than 4 to 4
  const ok = drawn.map((d) => [...d.matchAll(/ (\d+)\/\d+ ok /g)].reduce((a, m) => a + Number(m[1]), 0));
  t.true(ok[0]! < 4, ok.join(','));
  t.is(ok.at(-1), 4);
  t.deepEqual(
    ok,
    [...ok].sort((a, b) => a - b),
    'progress never goes back',
  );

  // app:2 to two devices, then waiting for approval; the watch ends (exit 1) when it is aborted by hand
  const staged = await f.cli(
    ...['fleet', 'rollout', 'create', f.t2, '--group', 'g1', '--phases', '2,100%', '--approval', '--json'],
  );
  t.is(staged.code, 0, staged.stderr);
  const sid = (JSON.parse(staged.stdout) as RolloutWire).id;
  const watching = f.cli('fleet', 'rollout', 'show', String(sid), '--watch');
  await waitFor(async () => (await f.rollout(sid)).state === 'waiting-approval', 60_000, 'waiting');
  const moved = f
    .q<{ ids: string }>(
      'SELECT group_concat(device_id) AS ids FROM rollout_devices WHERE rollout_id = ? AND phase = 1',
      sid,
    )
    .ids.split(',');
  t.is(moved.length, 2);
  const before = f.wire.log.length;
  const aborted = await f.cli(
    'fleet',
    'rollout',
    'abort',
    String(sid),
    '--no-rollback',
    '--reason',
    'enough',
  );
  t.is(aborted.code, 0, aborted.stderr);
  t.is(aborted.stdout, `rollout ${sid} aborted\n`);
  const w = await watching;
  t.is(w.code, 1, `${w.stdout}${w.stderr}`);
  t.regex(
    frames(w.stdout).at(-1)!,
    new RegExp(`^rollout ${sid}: aborted, phase 1/2\\n {2}reason: aborted by .*: enough`),
  );
  // a barrier: a later rollout the server carries out — by its end the server has acted on the abort too
  const other = f.q<{ id: string }>(
    'SELECT id FROM devices WHERE id NOT IN (SELECT device_id FROM rollout_devices WHERE rollout_id = ? AND phase = 1) ORDER BY id LIMIT 1',
    sid,
  ).id;
  const later = await f.cli('fleet', 'rollout', 'create', f.t1, '--devices', other, '--json');
  t.is(later.code, 0, later.stderr);
  const lid = (JSON.parse(later.stdout) as RolloutWire).id;
  await waitFor(async () => (await f.rollout(lid)).state === 'succeeded', 60_000, 'the later rollout');
  t.like(await f.rollout(sid), {
    state: 'aborted',
    rollback: { state: 'none', moved: 0, returned: 0 },
    policy: { rollback: true },
  });
  // nothing went to the moved devices after the abort, and they keep the release
  const after = f.wire.log.slice(before);
  t.deepEqual(
    after.filter((l) => moved.some((d) => l.startsWith(`device ${d} `))),
    [],
    after.join('\n'),
  );
  t.deepEqual(after, [`device ${other} app:1`]);
  for (const d of moved)
    t.like(
      f.q<Record<string, unknown>>('SELECT target_kind, target_id, status FROM devices WHERE id = ?', d),
      { target_kind: 'device', target_id: d, status: 'converged' },
    );

  // labels given at enrollment select devices: `enroll create --labels` → the device enrolls → a selector
  const token = async (labels: string) => {
    const r = await f.cli(...['fleet', 'enroll', 'create', '--labels', labels, '--group', 'lab', '--json']);
    t.is(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { token: string }).token;
  };
  const berlin = `enr-berlin-${process.pid}`;
  const paris = `enr-paris-${process.pid}`;
  for (const [dev, labels] of [
    [berlin, 'site=berlin'],
    [paris, 'site=paris'],
  ] as const) {
    const answer = await requestEnrollment({
      server: f.api,
      token: await token(labels),
      deviceId: dev,
      platform: 'linux/amd64',
    });
    t.is(answer.deviceId, dev);
  }
  const sel = await f.cli(...['fleet', 'rollout', 'create', f.t1, '--selector', 'site=berlin', '--json']);
  t.is(sel.code, 0, sel.stderr);
  const selected = JSON.parse(sel.stdout) as RolloutWire;
  t.like(selected, { total: 1, selection: { kind: 'selector', selector: 'site=berlin' } });
  const devs = await f.cli('fleet', 'rollout', 'show', String(selected.id), '--devices', '--json');
  t.deepEqual(
    (JSON.parse(devs.stdout) as { items: Array<{ deviceId: string }> }).items.map((x) => x.deviceId),
    [berlin],
  );
});
