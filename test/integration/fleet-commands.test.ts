/**
 * Remote commands from the fleet, all real: fleet server with its embedded broker, the device agent as
 * `berth agent` builds it, `berth fleet command` as a process. Logs, restart, report and purge-volume
 * answered over MQTT; a command signed with another key, an expired one and a replayed one are not run.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import Database from 'better-sqlite3';
import { loadFleetPrivateKey } from '../../src/fleet/keys.js';
import { exec } from '../../src/lib/exec.js';
import { signCommand } from '../../src/transport/commands.js';
import { MqttConnection } from '../../src/transport/connection.js';
import { encodeJson } from '../../src/transport/messages.js';
import { deviceTopic } from '../../src/transport/topics.js';
import { buildSampleImages, pushSampleImages, startAgentStack } from '../helpers/agent-stack.js';
import { BERTH_BUNDLE } from '../helpers/cli.js';
import { FLEET, startFleet, tempDir, testLog, waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';

test('fleet command: logs, restart, report, purge-volume over MQTT; forged, expired and replayed commands are not run', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(180_000);
  const fleet = await startFleet(t);
  const work = await tempDir(t, 'cmd-images');
  await pushSampleImages(fleet, await buildSampleImages(work, ['v1']));
  const deviceId = `cmd-${process.pid}`;
  const stack = await startAgentStack(t, fleet, {
    deviceId,
    agent: { reconciler: { minDelayMs: 100, maxDelayMs: 500, idleIntervalMs: 300 } },
  });
  const { engine } = stack.device;
  await stack.deploy(
    {
      cmd: {
        services: {
          web: {
            image: 'sample:v1',
            networkMode: 'none',
            stopTimeoutMs: 500,
            volumes: [{ type: 'volume', source: 'data', target: '/data' }],
          },
        },
        volumes: { data: {} },
      },
    },
    ['sample:v1'],
  );
  const web = async () => (await engine.list()).find((c) => c.status === 'running');
  await waitFor(async () => (await web()) !== undefined, 60_000, 'web running');
  await waitFor(
    async () => (await engine.logs((await web())!.id, {})).join('').includes('hello v1'),
    15_000,
    'output',
  );

  const command = (dir: string, ...args: string[]) =>
    exec(
      process.execPath,
      [
        BERTH_BUNDLE,
        '--log-level',
        'warn',
        '--state-dir',
        dir,
        'fleet',
        'command',
        deviceId,
        ...args,
        '--broker',
        fleet.server.brokerUrl,
        '--fleet',
        FLEET,
        '--mqtt-version',
        '4',
      ],
      { allowFailure: true, timeoutMs: 60_000 },
    );

  const logs = await command(fleet.dir, 'logs', '--app', 'cmd', '--service', 'web', '--tail', '2');
  t.is(logs.code, 0, logs.stderr);
  t.regex(logs.stdout, /hello v1/);
  t.true(logs.stdout.trim().split('\n').length <= 2, '--tail 2');

  const before = (await web())!;
  const restart = await command(fleet.dir, 'restart', '--app', 'cmd');
  t.is(restart.code, 0, restart.stderr);
  await waitFor(
    async () => ((await web())?.startedAt ?? 0) > (before.startedAt ?? 0),
    30_000,
    'web restarted',
  );

  const report = await command(fleet.dir, 'report', '--json');
  t.is(report.code, 0, report.stderr);
  t.like(JSON.parse(report.stdout), { kind: 'report', ok: true, result: { reported: true } });

  const purgeMissing = await command(fleet.dir, 'purge-volume', '--app', 'cmd', '--volume', 'nope');
  t.not(purgeMissing.code, 0);
  t.regex(purgeMissing.stderr, /volume nope of app cmd not found/);
  const badArgs = await command(fleet.dir, 'logs', '--app', 'cmd');
  t.not(badArgs.code, 0);
  t.regex(badArgs.stderr, /service/, 'logs without --service is refused before anything is sent');

  // another fleet's key: the device does not run it (and says nothing). The rogue has broker access (the
  // fleet account: the worst case), only not the fleet key.
  const rogue = await tempDir(t, 'cmd-rogue');
  await exec(process.execPath, [BERTH_BUNDLE, '--state-dir', rogue, 'fleet', 'keygen']);
  for (const f of ['fleet-account.json', 'fleet-serve.json'])
    await fsp.copyFile(path.join(fleet.dir, f), path.join(rogue, f));
  const started = (await web())!.startedAt;
  const forged = await command(rogue, 'restart', '--app', 'cmd', '--timeout', '3000');
  t.not(forged.code, 0);
  t.regex(forged.stderr, /did not answer/);

  // expired and replayed: signed with the right key, published by hand, results watched on the broker
  const results: Array<{ id: string; ok: boolean }> = [];
  const watcher = new MqttConnection({
    url: fleet.server.brokerUrl,
    protocolVersion: 4,
    clientId: `cmd-watch-${process.pid}`,
    log: testLog(),
    ...fleet.server.fleetAccount,
  });
  watcher.on('message', (_topic: string, payload: Buffer) => results.push(JSON.parse(payload.toString())));
  await watcher.start();
  t.teardown(() => watcher.close(true));
  await watcher.subscribe(deviceTopic(FLEET, deviceId, 'result'), 1);
  const key = await loadFleetPrivateKey(fleet.dir);
  const signed = (id: string, expiresInMs: number) =>
    signCommand(
      {
        v: 1,
        fleet: FLEET,
        deviceId,
        id,
        issuedAt: new Date().toISOString(),
        expiresAt: new Date(Date.now() + expiresInMs).toISOString(),
        body: { kind: 'report' },
      },
      key,
    );
  const topic = deviceTopic(FLEET, deviceId, 'command');
  await watcher.publish(topic, encodeJson(signed('expired1', -1000)), { qos: 1, retain: false });
  const once = encodeJson(signed('once1', 60_000));
  await watcher.publish(topic, once, { qos: 1, retain: false });
  await waitFor(async () => results.some((r) => r.id === 'once1'), 60_000, 'the first copy answered');
  await watcher.publish(topic, once, { qos: 1, retain: false });
  // a later command proves the device had the chance to answer the replay before it
  await watcher.publish(topic, encodeJson(signed('after1', 60_000)), { qos: 1, retain: false });
  await waitFor(async () => results.some((r) => r.id === 'after1'), 60_000, 'the later command answered');
  t.deepEqual(
    results.map((r) => r.id),
    ['once1', 'after1'],
    'the expired command and the replayed copy were not run',
  );
  t.is((await web())!.startedAt, started, 'the forged restart did not restart anything');
  // the ids run are kept in SQLite until they expire, so a replay after an agent restart is refused too
  const db = new Database(path.join(stack.stateDir, 'berth.db'), { readonly: true });
  t.teardown(() => db.close());
  const kept = (db.prepare('SELECT id FROM transport_commands').all() as Array<{ id: string }>).map(
    (r) => r.id,
  );
  t.true(
    ['once1', 'after1'].every((id) => kept.includes(id)),
    JSON.stringify(kept),
  );
  t.false(kept.includes('expired1'));
});
