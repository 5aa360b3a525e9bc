import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { lockRootFor } from '../../src/agent/locks.js';
import { HostClaims, NETWORK_FILE } from '../../src/runtime/network/host-claims.js';
import {
  cidrsOverlap,
  derivedSubnet,
  overlappingRoute,
  parseRoutes,
  stateDirKey,
} from '../../src/runtime/network/resolve.js';

const tmp = (p: string) => mkdtempSync(path.join(tmpdir(), `berth-${p}-`));

const ROUTES = `default via 192.0.2.1 dev eth0
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
172.30.7.0/24 dev berth-aaaa1111 proto kernel scope link src 172.30.7.1
local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1
local 10.9.8.7 dev wg0 table local proto kernel scope host src 10.9.8.7
broadcast 192.0.2.255 dev eth0 table local proto kernel scope link src 192.0.2.2`;

test('routes and overlaps: a subnet clashes with other interfaces’ routes and addresses, not its own bridge’s', (t) => {
  const routes = parseRoutes(ROUTES);
  t.false(routes.some((r) => r.dest === 'default'));
  t.true(cidrsOverlap('10.9.0.0/16', '10.9.8.7'));
  t.false(cidrsOverlap('172.30.8.0/24', '172.30.7.0/24'));
  t.is(overlappingRoute('172.30.7.0/24', 'berth-aaaa1111', routes), undefined, 'its own bridge');
  t.is(overlappingRoute('172.30.7.0/24', 'berth-bbbb2222', routes)?.dev, 'berth-aaaa1111', 'another agent’s');
  t.is(overlappingRoute('10.9.0.0/16', 'x', routes)?.dev, 'wg0', 'an address of another interface');
  t.is(overlappingRoute('172.30.9.0/24', 'x', routes), undefined);
});

test('a derived network is stable per state dir and differs between state dirs', (t) => {
  t.is(stateDirKey('/srv/a/state'), stateDirKey('/srv/a/state/'));
  t.not(stateDirKey('/srv/a/state'), stateDirKey('/srv/b/state'));
  t.regex(stateDirKey('/srv/a'), /^[0-9a-f]{8}$/);
  const key = stateDirKey('/srv/a');
  t.regex(derivedSubnet(key, 0), /^172\.30\.\d+\.0\/24$/);
  t.not(derivedSubnet(key, 0), derivedSubnet(key, 1), 'the next candidate when one is taken');
});

test('subnet claims: one state dir each; a claim whose owner moved on is taken over', async (t) => {
  const run = tmp('claims');
  const claims = new HostClaims(run);
  const a = tmp('state-a');
  const b = tmp('state-b');
  writeFileSync(path.join(a, NETWORK_FILE), JSON.stringify({ subnet: '172.30.5.0/24' }));
  await claims.claimSubnet({ stateDir: a, bridge: 'berth-a', subnet: '172.30.5.0/24' });
  await claims.claimSubnet({ stateDir: a, bridge: 'berth-a', subnet: '172.30.5.0/24' }); // again: fine
  await t.throwsAsync(claims.claimSubnet({ stateDir: b, bridge: 'berth-b', subnet: '172.30.5.0/24' }), {
    message: new RegExp(
      `subnet 172\\.30\\.5\\.0/24 is used by the berth with state dir ${a} \\(bridge berth-a\\)`,
    ),
  });
  t.true(await claims.subnetTaken('172.30.5.0/24', b));
  t.false(await claims.subnetTaken('172.30.5.0/24', a));
  rmSync(a, { recursive: true }); // a is gone: its claim is stale
  t.false(await claims.subnetTaken('172.30.5.0/24', b));
  await claims.claimSubnet({ stateDir: b, bridge: 'berth-b', subnet: '172.30.5.0/24' });
  await claims.releaseSubnet('172.30.5.0/24', b);
  t.false(await claims.subnetTaken('172.30.5.0/24', a));
});

test('port claims: per container, refused to another, released by their owner only, stale when the container is gone', async (t) => {
  const claims = new HostClaims(tmp('ports'));
  const a = tmp('state-a');
  const b = tmp('state-b');
  mkdirSync(path.join(a, 'containers', 'c1'), { recursive: true });
  const p = { protocol: 'tcp' as const, hostPort: 8080 };
  await claims.claimPort({ stateDir: a, containerId: 'c1', ...p });
  await claims.claimPort({ stateDir: a, containerId: 'c1', ...p }); // re-attach after a reboot
  await t.throwsAsync(claims.claimPort({ stateDir: a, containerId: 'c2', ...p }), {
    message: 'host port 8080/tcp is already published by container c1',
  });
  await t.throwsAsync(claims.claimPort({ stateDir: b, containerId: 'c9', ...p }), {
    message: `host port 8080/tcp is already published by container c1 of the berth with state dir ${a}`,
  });
  await claims.claimPort({ stateDir: b, containerId: 'c9', protocol: 'udp', hostPort: 8080 });
  await claims.releasePorts(b, 'c9', [p]); // not its claim: left alone
  await t.throwsAsync(claims.claimPort({ stateDir: b, containerId: 'c9', ...p }));
  rmSync(path.join(a, 'containers', 'c1'), { recursive: true });
  await claims.claimPort({ stateDir: b, containerId: 'c9', ...p }); // c1 is gone: taken over
  await claims.releasePorts(b, 'c9', [p]);
  await claims.claimPort({ stateDir: a, containerId: 'c3', ...p });
});

test('update locks: /run/berth/locks for the default state dir, a directory of their own for the others', (t) => {
  t.is(lockRootFor('/run/berth', '/var/lib/berth'), '/run/berth/locks');
  const other = lockRootFor('/run/berth', '/srv/agent2');
  t.is(other, `/run/berth/${stateDirKey('/srv/agent2')}/locks`);
  t.not(other, lockRootFor('/run/berth', '/srv/agent3'));
});
