import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { openDatabase } from '../../src/db/database.js';
import { berth, berthStart as start, berthStop as stop } from '../helpers/cli.js';
import { tempDir, waitFor } from '../helpers/fleet-harness.js';
import { buildMultiArchImage } from '../helpers/images.js';
import { Mosquitto } from '../helpers/mosquitto.js';

test('CLI: fleet keygen, push (multi-arch kept), serve, agent receives a deploy and pulls, pull, devices', async (t) => {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const work = await tempDir(t, 'cli');
  const img = buildMultiArchImage(
    path.join(work, 'img'),
    [{ architecture: 'amd64' }, { architecture: 'arm64' }],
    'multi',
  );
  const fdir = path.join(work, 'fleet');
  const adir = path.join(work, 'agent');
  const pdir = path.join(work, 'puller');
  const key = berth(['--state-dir', fdir, 'fleet', 'keygen']);
  t.is(key.code, 0, key.stderr);
  t.regex(key.stdout, /BEGIN PUBLIC KEY/);
  const pub = path.join(fdir, 'fleet-key.pub.pem');
  const push = berth(['--state-dir', fdir, 'fleet', 'push', img.layout, '--tag', 'app:1']);
  t.is(push.code, 0, push.stderr);
  t.regex(push.stdout, /app:1 sha256:[0-9a-f]{64} linux\/amd64,linux\/arm64/);
  const images = berth(['--state-dir', fdir, 'fleet', 'images', '--json']);
  const list = JSON.parse(images.stdout);
  t.is(list.length, 1);
  t.is(list[0].mediaType, 'application/vnd.oci.image.index.v1+json');

  const serve = start([
    '--state-dir',
    fdir,
    'fleet',
    'serve',
    '--broker',
    m.url,
    '--fleet',
    'cli',
    '--http',
    '127.0.0.1:0',
  ]);
  t.teardown(() => stop(serve.p));
  await waitFor(() => serve.out().includes('serving on'), 15_000, 'fleet serve');
  const agent = start([
    '--state-dir',
    adir,
    'agent',
    '--broker',
    m.url,
    '--fleet',
    'cli',
    '--device-id',
    'cli-dev',
    '--group',
    'lab',
    '--fleet-key',
    pub,
    '--mqtt-version',
    '5',
  ]);
  // the agent runs the deployed app and, by design, leaves it running when stopped: remove it after
  t.teardown(() => {
    const ps = berth(['--state-dir', adir, 'ps', '-a', '--json']);
    for (const c of ps.code === 0 ? (JSON.parse(ps.stdout) as Array<{ name: string }>) : [])
      berth(['--state-dir', adir, 'rm', '-f', c.name]);
  });
  t.teardown(() => stop(agent.p));
  await waitFor(() => agent.out().includes('mqtt connected'), 60_000, 'agent connected');

  const targetFile = path.join(work, 'target.json');
  await fsp.writeFile(
    targetFile,
    JSON.stringify({ apps: { web: { services: { main: { image: 'app:1' } } } }, images: ['app:1'] }),
  );
  const dep = berth([
    '--state-dir',
    fdir,
    'fleet',
    'deploy',
    targetFile,
    '--group',
    'lab',
    '--broker',
    m.url,
    '--fleet',
    'cli',
  ]);
  t.is(dep.code, 0, dep.stderr);
  t.regex(dep.stdout, /deployed group lab version 1/);
  await waitFor(() => agent.out().includes('image pulled'), 30_000, 'agent pulled the image');
  const adb = openDatabase(path.join(adir, 'berth.db'));
  t.teardown(() => adb.close());
  const row = adb.prepare('SELECT name, platform, index_digest FROM images').get() as {
    name: string;
    platform: string;
    index_digest: string;
  };
  t.is(row.name, 'app:1');
  t.is(row.platform, 'linux/amd64');
  t.is(row.index_digest, list[0].digest);
  const tgt = adb.prepare('SELECT scope_kind, scope_id, version FROM transport_targets').all();
  t.deepEqual(tgt, [{ scope_kind: 'group', scope_id: 'lab', version: 1 }]);

  // One-shot pull into another state dir; the image is then listed like a local import. The fleet serves
  // a device what its targets name: a device with no target is refused, the agent's device (group lab,
  // deployed app:1) gets it.
  const pullAs = (deviceId: string) =>
    berth([
      '--state-dir',
      pdir,
      'pull',
      'app:1',
      '--broker',
      m.url,
      '--fleet',
      'cli',
      '--device-id',
      deviceId,
      '--fleet-key',
      pub,
    ]);
  const refused = pullAs('puller');
  t.is(refused.code, 1);
  t.regex(refused.stderr, /PermissionDenied: .*app:1 is not named by any target of device puller/);
  const pull = pullAs('cli-dev');
  t.is(pull.code, 0, pull.stderr);
  const ls = berth(['--state-dir', pdir, 'image', 'ls', '--json']);
  t.is(JSON.parse(ls.stdout)[0].name, 'app:1');

  await waitFor(
    () => {
      const d = berth(['--state-dir', fdir, 'fleet', 'devices', '--json']);
      const devs = JSON.parse(d.stdout).items;
      return (
        devs.length === 1 &&
        devs[0].id === 'cli-dev' &&
        devs[0].online &&
        devs[0].applied?.kind === 'group' &&
        devs[0].applied.id === 'lab' &&
        devs[0].applied.version === 1
      );
    },
    10_000,
    'device listed online, applying group lab 1',
  );
  const table = berth(['--state-dir', fdir, 'fleet', 'devices']);
  t.regex(
    table.stdout,
    /cli-dev\s+online\s+\S+\s+group lab 1\s+group lab 1/,
    'versions as the operator deployed them',
  );
  await stop(agent.p);
  await waitFor(
    () =>
      JSON.parse(berth(['--state-dir', fdir, 'fleet', 'devices', '--json']).stdout).items[0].online === false,
    10_000,
    'device offline',
  );
  t.false(JSON.parse(berth(['--state-dir', fdir, 'fleet', 'devices', '--json']).stdout).items[0].online);
});
