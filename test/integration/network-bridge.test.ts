/**
 * Networking through the CLI on a private bridge/subnet/nft table per test: none, host, bridge; two
 * containers on the bridge reach each other; a published port reaches busybox httpd from the host;
 * rm removes veth, netns, nft rules and the IP lease.
 */
import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import test from 'ava';
import { openDatabase } from '../../src/db/database.js';
import { exec } from '../../src/lib/exec.js';
import { chainNames } from '../../src/runtime/network/iptables.js';
import { needPrivileges } from '../helpers/privileged.js';
import { cliEnv, HTTPD, httpGet, waitUntil } from '../helpers/runtime-cli.js';
import { removeSharedBusyboxRootfs } from '../helpers/runtime-rootfs.js';

test.after.always(removeSharedBusyboxRootfs);

const LOOP = 'while true; do sleep 0.1; done';

test('bridge: two containers reach each other; published port reaches httpd; rm cleans up', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/usr/sbin/nft', '/usr/sbin/ip'] })) return;
  const env = await cliEnv(t);
  const hostPort = randomInt(20000, 30000);
  const a = (
    await env.berth([
      'run',
      '-d',
      '--name',
      'web',
      '--read-only',
      '-p',
      `${hostPort}:8080`,
      '--rootfs',
      env.rootfs,
      'httpd',
      '-f',
      '-p',
      '8080',
      '-h',
      '/var/www',
    ])
  ).stdout.trim();
  const b = (
    await env.berth(['run', '-d', '--name', 'client', '--rootfs', env.rootfs, 'sh', '-c', LOOP])
  ).stdout.trim();
  const list = await env.ps();
  const ipA = list.find((c) => c.id === a)!.ipAddress as string;
  const ipB = list.find((c) => c.id === b)!.ipAddress as string;
  t.regex(ipA, new RegExp(`^${env.gateway.replace(/\.1$/, '').replace(/\./g, '\\.')}\\.\\d+$`));
  t.not(ipA, ipB);

  const ping = await env.berth(['exec', 'client', 'ping', '-c', '1', '-W', '3', ipA], { allowFailure: true });
  t.is(ping.code, 0, ping.stdout + ping.stderr);
  const fetched = await env.berth(['exec', 'client', 'wget', '-q', '-O', '-', `http://${ipA}:8080/`]);
  t.is(fetched.stdout, 'hello from berth\n');
  const inside = await env.berth(['exec', 'client', 'ip', '-4', '-o', 'addr']);
  t.regex(inside.stdout, new RegExp(`eth0\\s+inet ${ipB.replace(/\./g, '\\.')}/24`));

  // from the host, through the published port (DNAT in berth's nft table)
  const body = await waitUntil(
    'published port',
    () => httpGet(env.gateway, hostPort).catch(() => undefined),
    10_000,
  );
  t.is(body, 'hello from berth\n');
  const rules = await exec('/usr/sbin/nft', ['list', 'table', 'ip', env.nftTable]);
  t.regex(rules.stdout, new RegExp(`dport ${hostPort} dnat to ${ipA.replace(/\./g, '\\.')}:8080`));

  await env.berth(['rm', '-f', 'web']);
  t.false(existsSync(`/run/netns/berth-${a}`), 'netns removed');
  t.not(
    (await exec('/usr/sbin/ip', ['link', 'show', `bv${a.slice(0, 12)}`], { allowFailure: true })).code,
    0,
    'veth removed',
  );
  t.notRegex(
    (await exec('/usr/sbin/nft', ['list', 'table', 'ip', env.nftTable])).stdout,
    new RegExp(`dport ${hostPort}`),
  );
  const db = openDatabase(`${env.stateDir}/berth.db`);
  const leases = db.prepare('SELECT container_id FROM ip_leases').all() as Array<{ container_id: string }>;
  db.close();
  t.deepEqual(
    leases.map((l) => l.container_id),
    [b],
    'only the client keeps a lease',
  );
  await t.throwsAsync(httpGet(env.gateway, hostPort));
});

test('iptables backend: published port, masquerade chain, rules removed with the container', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/usr/sbin/iptables'] })) return;
  const env = await cliEnv(t, { network: { firewall: 'iptables' } });
  const hostPort = randomInt(30000, 40000);
  const id = (
    await env.berth([
      'run',
      '-d',
      '-p',
      `${hostPort}:8080`,
      '--rootfs',
      env.rootfs,
      'httpd',
      '-f',
      '-p',
      '8080',
      '-h',
      '/var/www',
    ])
  ).stdout.trim();
  const body = await waitUntil(
    'published port',
    () => httpGet(env.gateway, hostPort).catch(() => undefined),
    10_000,
  );
  t.is(body, 'hello from berth\n');
  const chains = chainNames(env.nftTable);
  const dnat = (await exec('/usr/sbin/iptables', ['-w', '5', '-t', 'nat', '-S', chains.dnat])).stdout;
  t.regex(dnat, new RegExp(`--dport ${hostPort} .*berth:${id}.*--to-destination`));
  const post = (await exec('/usr/sbin/iptables', ['-w', '5', '-t', 'nat', '-S', chains.post])).stdout;
  t.regex(post, /MASQUERADE/);
  t.not(
    (await exec('/usr/sbin/nft', ['list', 'table', 'ip', env.nftTable], { allowFailure: true })).code,
    0,
    'no nft table used',
  );
  await env.berth(['rm', '-f', id]);
  const after = (await exec('/usr/sbin/iptables', ['-w', '5', '-t', 'nat', '-S', chains.dnat])).stdout;
  t.notRegex(after, new RegExp(`berth:${id}`));
});

test('restart after the network vanished (as after a reboot): re-attached with the same address', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t);
  const id = (await env.berth(['run', '-d', '--rootfs', env.rootfs, 'sh', '-c', LOOP])).stdout.trim();
  const ip = (await env.ps())[0]!.ipAddress;
  await env.berth(['stop', '-t', '0', id]);
  await exec('/usr/sbin/ip', ['netns', 'del', `berth-${id}`]);
  await exec('/usr/sbin/ip', ['link', 'del', env.bridge]);
  await env.berth(['start', id]);
  const c = (await env.ps())[0]!;
  t.is(c.state, 'running');
  t.is(c.ipAddress, ip);
  const inside = await env.berth(['exec', id, 'ip', '-4', '-o', 'addr', 'show', 'eth0']);
  t.true(inside.stdout.includes(`inet ${ip}/24`));
  const ping = await exec('/usr/bin/busybox', ['ping', '-c', '1', '-W', '3', ip as string], {
    allowFailure: true,
  });
  t.is(ping.code, 0, 'host reaches the container over the re-created bridge');
});

test('none and host modes', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t);
  const none = await env.berth([
    'run',
    '--rm',
    '--network',
    'none',
    '--rootfs',
    env.rootfs,
    'sh',
    '-c',
    'ls /sys/class/net',
  ]);
  t.is(none.stdout, 'lo\n');
  const host = await env.berth([
    'run',
    '--rm',
    '--network',
    'host',
    '--rootfs',
    env.rootfs,
    'sh',
    '-c',
    'ls /sys/class/net',
  ]);
  // Other tests add and remove veths concurrently: compare only the stable links (lo, the default route's).
  const route = (await exec('/usr/sbin/ip', ['-o', 'route', 'show', 'default'])).stdout;
  const dev = /\bdev (\S+)/.exec(route)?.[1];
  const links = host.stdout.split('\n').filter(Boolean);
  t.true(links.includes('lo'));
  if (dev) t.true(links.includes(dev), `host network shows ${dev}: ${links.join(' ')}`);
  else t.true(links.length > 1);
  const bad = await env.berth(['run', '--network', 'none', '-p', '1234:80', '--rootfs', env.rootfs, 'true'], {
    allowFailure: true,
  });
  t.regex(bad.stderr, /published ports need --network bridge/);
  t.deepEqual(await env.ps(), [], 'a failed create leaves nothing behind');
});

/** In the container's netns: send `first` to 127.0.0.1:port as if the host's loopback were a neighbour, then `second` to the gateway. */
async function sendFromContainer(id: string, gateway: string, port: number): Promise<void> {
  const ns = `berth-${id}`;
  // make 127.0.0.1 a destination beyond eth0 (the gateway), as a hostile container would
  await exec('/usr/sbin/ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.conf.eth0.route_localnet=1']);
  await exec('/usr/sbin/ip', ['-n', ns, 'route', 'del', 'local', '127.0.0.1', 'table', 'local'], {
    allowFailure: true,
  });
  await exec('/usr/sbin/ip', ['-n', ns, 'route', 'del', 'local', '127.0.0.0/8', 'table', 'local'], {
    allowFailure: true,
  });
  await exec('/usr/sbin/ip', ['-n', ns, 'route', 'replace', '127.0.0.1/32', 'via', gateway, 'dev', 'eth0']);
  const script = `const s = require('node:dgram').createSocket('udp4');
s.send('via-loopback', ${port}, '127.0.0.1', () => s.send('via-gateway', ${port}, '${gateway}', () => s.close()));`;
  await exec('/usr/sbin/ip', ['netns', 'exec', ns, process.execPath, '-e', script]);
}

for (const firewall of ['nftables', 'iptables'] as const) {
  test(`${firewall}: published ports answer on 127.0.0.1:<hostPort>; a container cannot reach the host's loopback`, async (t) => {
    const tool = firewall === 'nftables' ? '/usr/sbin/nft' : '/usr/sbin/iptables';
    if (!needPrivileges(t, { root: true, paths: [tool, '/usr/sbin/ip'] })) return;
    const env = await cliEnv(t, { network: { firewall } });
    const hostPort = randomInt(20000, 40000);
    const loopOnly = hostPort + 1;
    const id = (
      await env.berth([
        'run',
        '-d',
        '--read-only',
        '-p',
        `${hostPort}:8080`,
        '-p',
        `127.0.0.1:${loopOnly}:8080`,
        '--rootfs',
        env.rootfs,
        ...HTTPD,
      ])
    ).stdout.trim();
    const viaLoopback = await waitUntil(
      '127.0.0.1',
      () => httpGet('127.0.0.1', hostPort).catch(() => undefined),
      10_000,
    );
    t.is(viaLoopback, 'hello from berth\n', 'docker users expect localhost to answer');
    t.is(await httpGet(env.gateway, hostPort), 'hello from berth\n', 'and the host addresses still do');
    t.is(await httpGet('127.0.0.1', loopOnly), 'hello from berth\n', '-p 127.0.0.1:port:ctr');
    await t.throwsAsync(
      httpGet(env.gateway, loopOnly),
      undefined,
      'a loopback-only port is not published elsewhere',
    );

    // route_localnet must not open the host's loopback to containers: a datagram to 127.0.0.1 sent over the
    // bridge is dropped; one to the gateway, sent right after it on the same path, arrives
    const sock = createSocket('udp4');
    const got: string[] = [];
    sock.on('message', (m) => got.push(m.toString()));
    await new Promise<void>((r) => sock.bind(0, '0.0.0.0', () => r()));
    t.teardown(() => sock.close());
    await sendFromContainer(id, env.gateway, sock.address().port);
    await waitUntil('the datagram to the gateway', async () => got.includes('via-gateway'), 10_000);
    t.deepEqual(got, ['via-gateway'], 'nothing reached the host loopback');

    await env.berth(['rm', '-f', id]);
    await t.throwsAsync(httpGet('127.0.0.1', hostPort));
  });
}
