import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import type { SignedTarget } from '../../src/transport/messages.js';
import { startAgent, startFleet, tempDir, waitFor } from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';
import { freePort, Mosquitto } from '../helpers/mosquitto.js';

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'ignore' });
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate (CN = device id). */
async function makePki(dir: string, deviceId: string): Promise<void> {
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
      '-days',
      '2',
      '-subj',
      '/CN=berth-test-ca',
    ],
    dir,
  );
  await fsp.writeFile(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  for (const [name, cn, ext] of [
    ['server', '127.0.0.1', true],
    ['client', deviceId, false],
  ] as const) {
    openssl(
      [
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.csr`,
        '-subj',
        `/CN=${cn}`,
      ],
      dir,
    );
    openssl(
      [
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.crt`,
        '-days',
        '2',
        ...(ext ? ['-extfile', 'san.ext'] : []),
      ],
      dir,
    );
  }
  // Mosquitto started as root drops to the `mosquitto` user before it reads certificates.
  await fsp.chmod(dir, 0o755);
  for (const f of await fsp.readdir(dir)) await fsp.chmod(path.join(dir, f), 0o644);
}

test('agent over TLS with CA, client certificate and key, plus username/password (MQTT 3.1.1 and 5)', async (t) => {
  const pki = await tempDir(t, 'pki');
  await makePki(pki, 'tls-dev');
  execFileSync('mosquitto_passwd', ['-b', '-c', path.join(pki, 'passwd'), 'tls-dev', 's3cret']);
  await fsp.chmod(path.join(pki, 'passwd'), 0o644);
  const tlsPort = await freePort();
  const m = await Mosquitto.start([
    `listener ${tlsPort} 127.0.0.1`,
    `cafile ${path.join(pki, 'ca.crt')}`,
    `certfile ${path.join(pki, 'server.crt')}`,
    `keyfile ${path.join(pki, 'server.key')}`,
    'require_certificate true',
    `password_file ${path.join(pki, 'passwd')}`,
    'per_listener_settings false',
  ]);
  t.teardown(() => m.stop());
  // The fleet server uses the plain listener... which now also needs the password: give it one.
  const fleet = await startFleet(t, {
    mqtt: { url: m.url, protocolVersion: 5, username: 'tls-dev', password: 's3cret' },
  });
  const img = await putTestImage(fleet.store, { layerSizes: [600 * 1024] });
  await fleet.addImage('tls:1', img.digest, img.mediaType);
  const read = (f: string) => fsp.readFile(path.join(pki, f));
  for (const protocolVersion of [4, 5] as const) {
    const dev = await startAgent(t, fleet, {
      deviceId: 'tls-dev',
      url: `mqtts://127.0.0.1:${tlsPort}`,
      protocolVersion,
      mqtt: {
        ca: await read('ca.crt'),
        cert: await read('client.crt'),
        key: await read('client.key'),
        username: 'tls-dev',
        password: 's3cret',
      },
    });
    t.is(dev.agent.conn.protocolVersion, protocolVersion);
    const got: SignedTarget[] = [];
    dev.agent.on('target', (s) => got.push(s));
    const row = await fleet.deploy(
      { kind: 'device', id: 'tls-dev' },
      { apps: { [`n${protocolVersion}`]: { services: { main: { image: 'tls:1' } } } }, images: ['tls:1'] },
    );
    await waitFor(() => got.some((s) => s.target.version === row.version), 10_000, 'target over TLS');
    const r = await dev.agent.pullImage('tls:1', { expectDigest: img.digest });
    t.is(r.digest, img.digest);
    await dev.agent.stop();
  }
  // Without a client certificate the broker refuses the TLS handshake: the agent never connects.
  const bad = await startAgent(t, fleet, {
    deviceId: 'tls-dev',
    url: `mqtts://127.0.0.1:${tlsPort}`,
    protocolVersion: 5,
    mqtt: { ca: await read('ca.crt'), username: 'tls-dev', password: 's3cret' },
    wait: false,
  });
  await new Promise((r) => setTimeout(r, 1500));
  t.false(bad.agent.conn.connected);
});
