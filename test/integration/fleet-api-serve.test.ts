/**
 * `berth fleet serve` with no user yet: the HTTP API listens (port 0), a one-time setup token is printed,
 * it makes the first admin once, and the API URL is noted in fleet-serve.json for tools on the state dir.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { BERTH_BUNDLE, berth } from '../helpers/cli.js';
import { Caller } from '../helpers/fleet-api.js';
import { tempDir, waitFor } from '../helpers/fleet-harness.js';

test('first fleet serve prints a one-time setup token that makes the first admin', async (t) => {
  const dir = path.join(await tempDir(t, 'serve-setup'), 'fleet');
  t.is(berth(['--state-dir', dir, 'fleet', 'keygen']).code, 0);
  let out = '';
  const p = spawn(
    process.execPath,
    [BERTH_BUNDLE, '--state-dir', dir, 'fleet', 'serve', '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, BERTH_LOG_LEVEL: 'warn' } },
  );
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (out += d));
  t.teardown(async () => {
    if (p.exitCode === null) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await gone;
    }
  });
  await waitFor(() => out.includes('"token"') || p.exitCode !== null, 30_000, 'the setup token');
  const url = /API on (\S+)\/api\/v1/.exec(out)![1]!;
  const token = /"token": "(setup_[A-Za-z0-9_-]+)"/.exec(out)![1]!;
  const served = JSON.parse(await fsp.readFile(path.join(dir, 'fleet-serve.json'), 'utf8'));
  t.is(served.api, url);
  const c = new Caller(url);
  t.is(
    (await c.call('POST', '/setup', { token: 'setup_wrong', name: 'root', password: 'root-password' }))
      .status,
    401,
  );
  t.is((await c.call('POST', '/setup', { token, name: 'root', password: 'root-password' })).status, 201);
  t.is((await c.call('POST', '/setup', { token, name: 'root2', password: 'root-password' })).status, 401);
  t.is((await c.login('root', 'root-password')).status, 200);
  t.is((await c.call('GET', '/session')).body.role, 'admin');
});
