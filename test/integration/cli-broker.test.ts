/**
 * Commands that need the broker, as a new user meets them (issue 14): with a broker nobody answers, each
 * fails `Unavailable` with exit 1 after its timeout — never a silent exit 0; and against berth's own
 * embedded broker (aedes, MQTT 3.1.1 only) the default `--mqtt-version auto` just works, without a
 * warning.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { berth, berthStart, berthStop } from '../helpers/cli.js';
import { tempDir, waitFor } from '../helpers/fleet-harness.js';
import { buildMultiArchImage } from '../helpers/images.js';
import { freePort } from '../helpers/mosquitto.js';

/** A state dir with a fleet key and a target file (deploy and command need them before they connect). */
async function fleetDir(t: Parameters<typeof tempDir>[0]) {
  const dir = await tempDir(t, 'cli-broker');
  const k = berth(['--state-dir', dir, 'fleet', 'keygen']);
  t.is(k.code, 0, k.stderr);
  const target = path.join(dir, 'target.json');
  await fsp.writeFile(target, JSON.stringify({ apps: {}, images: [] }));
  return { dir, pub: path.join(dir, 'fleet-key.pub.pem'), target };
}

const COMMANDS: Record<string, (f: { pub: string; target: string }, broker: string) => string[]> = {
  pull: (f, b) => ['pull', 'x:1', '--broker', b, '--fleet-key', f.pub, '--connect-timeout', '1000'],
  'fleet serve': (_f, b) => ['fleet', 'serve', '--broker', b, '--connect-timeout', '1000'],
  'fleet deploy': (f, b) => [
    'fleet',
    'deploy',
    f.target,
    '--device',
    'd1',
    '--allow-unknown',
    '--broker',
    b,
    '--connect-timeout',
    '1000',
  ],
  'fleet command': (_f, b) => [
    'fleet',
    'command',
    'd1',
    'report',
    '--broker',
    b,
    '--connect-timeout',
    '1000',
  ],
  'mqtt-ping': (_f, b) => ['mqtt-ping', '--broker', b, '--timeout', '1000'],
};

for (const [name, args] of Object.entries(COMMANDS)) {
  test(`${name} with a broker nobody answers: Unavailable and exit 1 after its timeout`, async (t) => {
    const f = await fleetDir(t);
    const port = await freePort(); // bound then released: nothing listens there
    const r = berth(['--state-dir', f.dir, ...args(f, `mqtt://127.0.0.1:${port}`)]);
    t.is(r.code, 1, `${r.stdout}\n${r.stderr}`);
    t.regex(
      r.stderr,
      new RegExp(
        `berth: Unavailable: .*MQTT broker mqtt://127\\.0\\.0\\.1:${port} not reachable within 1000 ms`,
      ),
    );
    t.is(r.stdout, '', 'nothing printed as if it had worked');
  });
}

test('against the embedded broker (MQTT 3.1.1 only) the default --mqtt-version auto falls back on every command, with no warning', async (t) => {
  const f = await fleetDir(t);
  const img = buildMultiArchImage(
    path.join(f.dir, 'img'),
    [{ architecture: 'amd64' }, { architecture: 'arm64' }],
    'multi',
  );
  const push = berth(['--state-dir', f.dir, 'fleet', 'push', img.layout, '--tag', 'app:1']);
  t.is(push.code, 0, push.stderr);
  const port = await freePort();
  // a lab broker (anonymous clients): this test is about the MQTT version, enrollment has its own tests
  const serve = berthStart([
    '--state-dir',
    f.dir,
    'fleet',
    'serve',
    '--listen',
    `127.0.0.1:${port}`,
    '--allow-anonymous',
    '--http',
    'off',
  ]);
  t.teardown(() => berthStop(serve.p));
  await waitFor(() => serve.out().includes('serving on'), 15_000, 'fleet serve');
  const broker = `mqtt://127.0.0.1:${port}`;
  const warnings = (stderr: string) =>
    stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .filter((l) => (JSON.parse(l) as { level: number }).level >= 40);

  // deploy app:1 to dev1 (the fleet serves a device what its targets name), then pull it as dev1
  await fsp.writeFile(f.target, JSON.stringify({ apps: {}, images: ['app:1'] }));
  const dep = berth([
    '--state-dir',
    f.dir,
    'fleet',
    'deploy',
    f.target,
    '--device',
    'dev1',
    '--allow-unknown',
    '--broker',
    broker,
  ]);
  t.is(dep.code, 0, dep.stderr);
  t.regex(dep.stdout, /deployed device dev1 version 1/);
  t.deepEqual(warnings(dep.stderr), []);
  const pdir = await tempDir(t, 'cli-puller');
  const pull = berth(
    ['--state-dir', pdir, 'pull', 'app:1', '--broker', broker, '--device-id', 'dev1', '--fleet-key', f.pub],
    { env: { BERTH_LOG_LEVEL: 'info' } },
  );
  t.is(pull.code, 0, pull.stderr);
  t.deepEqual(warnings(pull.stderr), [], 'normal operation warns about nothing');
  t.notRegex(pull.stderr, /Unacceptable protocol version/);
  t.regex(pull.stderr, /"mqtt":4[^\n]*"msg":"mqtt connected"/, 'connected with MQTT 3.1.1');
  const ls = berth(['--state-dir', pdir, 'image', 'ls', '--json']);
  t.is(JSON.parse(ls.stdout)[0].name, 'app:1');
  const ping = berth(['--state-dir', pdir, 'mqtt-ping', '--broker', broker]);
  t.is(ping.code, 0, ping.stderr);
  t.deepEqual(warnings(ping.stderr), []);
});
