/**
 * The fleet API over HTTPS (`fleet serve --tls-cert/--tls-key`) and the remote CLI's transport choice:
 * a private CA is trusted only when given, session cookies are Secure, and the client picks flags over
 * environment over the saved login, with empty variables counting as unset.
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import test from 'ava';
import { remoteTarget, saveLogin } from '../../src/cli/fleet-client.js';
import { HttpFleetClient } from '../../src/fleet/client/http.js';
import { isBerthError } from '../../src/lib/errors.js';
import { startApi } from '../helpers/fleet-api.js';
import { tempDir } from '../helpers/fleet-harness.js';

async function selfSigned(dir: string): Promise<{ cert: Buffer; key: Buffer; certFile: string }> {
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
      ...['-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=berth-test'],
      ...['-addext', 'subjectAltName=IP:127.0.0.1'],
    ],
    { stdio: 'ignore' },
  );
  return { cert: await fsp.readFile(certFile), key: await fsp.readFile(keyFile), certFile };
}

test('HTTPS: the client trusts a private CA only when given it; session cookies are Secure', async (t) => {
  const dir = await tempDir(t, 'api-tls');
  const tls = await selfSigned(dir);
  const api = await startApi(t, { tls });
  t.regex(api.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  await api.identity.addUser('alice', 'operator', 'password-123');
  const token = api.ops.createToken(
    { kind: 'local', name: 'x', role: 'admin', userId: null },
    { name: 't', role: 'viewer' },
  ).token;

  const untrusted = new HttpFleetClient({ server: api.url, token });
  const e = await t.throwsAsync(untrusted.whoami());
  t.true(isBerthError(e, 'Unavailable'), String(e));
  t.regex(e!.message, /certificate/i);
  await untrusted.close();

  const trusted = new HttpFleetClient({ server: api.url, token, ca: tls.cert });
  t.is((await trusted.whoami()).role, 'viewer');
  const made = await new HttpFleetClient({ server: api.url, token: '', ca: tls.cert }).loginAndMakeToken(
    'alice',
    'password-123',
    {
      name: 'laptop',
      expiresAt: new Date(Date.now() + 3600_000).toISOString(),
    },
  );
  const mine = new HttpFleetClient({ server: api.url, token: made.token, ca: tls.cert });
  const who = await mine.whoami();
  t.deepEqual([who.user, who.token, who.role], ['alice', 'laptop', 'operator']);
  await trusted.close();
  await mine.close();

  const res = await new Promise<string[]>((resolve, reject) => {
    const req = https.request(
      `${api.url}/api/v1/session`,
      { method: 'POST', ca: tls.cert, headers: { 'content-type': 'application/json' } },
      (r) => {
        r.resume();
        resolve(r.headers['set-cookie'] ?? []);
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ name: 'alice', password: 'password-123' }));
  });
  t.regex(res[0]!, /; Secure/);
});

test('remote CLI target: --server/--token over BERTH_FLEET_* over the saved login; --local and empty variables', async (t) => {
  const home = await tempDir(t, 'api-login');
  const env: NodeJS.ProcessEnv = { XDG_CONFIG_HOME: home };
  t.is(await remoteTarget({}, env), undefined, 'nothing set: the local state dir');
  const file = await saveLogin({ server: 'https://saved:8080', token: 'saved-token' }, env);
  t.is((await fsp.stat(file)).mode & 0o777, 0o600);
  t.deepEqual(await remoteTarget({}, env), {
    server: 'https://saved:8080',
    token: 'saved-token',
    ca: undefined,
  });
  const fromEnv = await remoteTarget(
    {},
    { ...env, BERTH_FLEET_SERVER: 'https://env:1', BERTH_FLEET_TOKEN: 'env-token' },
  );
  t.is(fromEnv?.server, 'https://env:1');
  t.is(fromEnv?.token, 'env-token');
  const flags = await remoteTarget(
    { server: 'https://flag:2', token: 'flag-token' },
    { ...env, BERTH_FLEET_TOKEN: 'env-token' },
  );
  t.deepEqual([flags?.server, flags?.token], ['https://flag:2', 'flag-token']);
  const e = await t.throwsAsync(remoteTarget({ server: 'https://other:3' }, env));
  t.regex(e!.message, /no API token for https:\/\/other:3/, 'the saved token is only for its own server');
  t.is(await remoteTarget({ local: true }, env), undefined);
  const empty = await remoteTarget({}, { ...env, BERTH_FLEET_SERVER: '', BERTH_FLEET_TOKEN: '' });
  t.is(empty?.server, 'https://saved:8080', 'empty variables count as unset');
});
