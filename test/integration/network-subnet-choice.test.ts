/**
 * Two state dirs whose derived bridge subnets are the same (the derivation forced onto one sequence of
 * candidates), on real bridges: the second takes the next free /24 — one no other live berth holds and no
 * host route or address overlaps — records it, keeps it across restarts and logs which it took; a subnet
 * it had recorded that another berth or a host route has by now moves the same way; a configured subnet
 * that collides is still a Conflict. Names are unique per run (state dirs under mkdtemp give the bridges
 * their names; claims live in a temp run dir); the bridges are deleted at the end.
 */
import { randomInt } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import test from 'ava';
import { exec } from '../../src/lib/exec.js';
import { createLogger } from '../../src/lib/logger.js';
import { HostClaims, NETWORK_FILE } from '../../src/runtime/network/host-claims.js';
import { addBridge, deleteLink, linkExists } from '../../src/runtime/network/ip.js';
import { gatewayOf, parseSubnet } from '../../src/runtime/network/ipam.js';
import {
  cidrsOverlap,
  parseRoutes,
  type ResolvedNetwork,
  resolveNetwork,
} from '../../src/runtime/network/resolve.js';
import { needPrivileges } from '../helpers/privileged.js';

async function routes() {
  return parseRoutes((await exec('/usr/sbin/ip', ['-4', '-o', 'route', 'show', 'table', 'all'])).stdout);
}

test('two state dirs deriving the same subnet: the second takes the next free /24, keeps it, logs it; a configured collision is a Conflict', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/usr/sbin/ip'] })) return;
  const tmp = mkdtempSync(path.join(tmpdir(), 'berth-subnets-'));
  const bridges: string[] = [];
  t.teardown(async () => {
    for (const b of bridges) await deleteLink(b);
    rmSync(tmp, { recursive: true, force: true });
  });
  const claims = new HostClaims(path.join(tmp, 'run'));
  // Every state dir derives the same candidates: 172.30.<base + n>.0/24, starting where this host has none.
  const taken = await routes();
  let base = randomInt(0, 200);
  while (taken.some((r) => [0, 1, 2, 3].some((k) => cidrsOverlap(`172.30.${base + k}.0/24`, r.dest))))
    base = (base + 7) % 200;
  const candidates = (n: number) => `172.30.${(base + n) % 256}.0/24`;
  const lines: string[] = [];
  const log = createLogger({
    format: 'json',
    destination: new Writable({
      write(chunk: Buffer, _e, cb) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        cb();
      },
    }),
  });
  const logged = (level: number) =>
    lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === level);
  const stateDir = (name: string) => {
    mkdirSync(path.join(tmp, name), { recursive: true });
    return path.join(tmp, name);
  };
  const resolve = (name: string, configured: Partial<ResolvedNetwork> = {}, c = claims) =>
    resolveNetwork({
      stateDir: stateDir(name),
      configured,
      claims: c,
      leasedNetworks: () => [],
      log,
      candidates,
    });
  const up = async (n: ResolvedNetwork) => {
    bridges.push(n.bridge);
    const s = parseSubnet(n.subnet);
    await addBridge(n.bridge, `${gatewayOf(s)}/${s.prefix}`);
  };

  const a = await resolve('a');
  t.is(a.subnet, candidates(0), 'the first state dir gets its derived subnet');
  await up(a);
  const b = await resolve('b');
  t.is(b.subnet, candidates(1), 'the second: the next free /24, not a Conflict');
  t.not(b.bridge, a.bridge);
  await up(b);
  t.regex(logged(30).at(-1)!.msg, new RegExp(`bridge subnet chosen: ${b.subnet.replace(/\./g, '\\.')}`));
  const onHost = await routes();
  t.is(onHost.find((r) => r.dest === a.subnet)?.dev, a.bridge, 'real routes: one subnet per bridge');
  t.is(onHost.find((r) => r.dest === b.subnet)?.dev, b.bridge);
  t.deepEqual(await resolve('b'), b, 'stable across restarts (recorded in network.json)');

  // A subnet b recorded that another berth now has — chosen at the same moment, or claims gone with a
  // reboot (here: a fresh claims dir) while a's bridge still routes it — moves, and says so.
  writeFileSync(path.join(stateDir('c'), NETWORK_FILE), JSON.stringify({ ...a, bridge: 'berth-c' }));
  const afterReboot = new HostClaims(path.join(tmp, 'run-after-reboot'));
  const c = await resolve('c', {}, afterReboot);
  t.is(c.subnet, candidates(2), 'past a (its route) and b (its route)');
  t.is(c.bridge, 'berth-c', 'the bridge keeps its name');
  const moved = logged(40).at(-1)!.msg;
  t.regex(moved, new RegExp(`bridge subnet ${a.subnet.replace(/\./g, '\\.')} is taken by this host's route`));
  t.regex(moved, new RegExp(`using ${c.subnet.replace(/\./g, '\\.')}`));
  t.deepEqual(await resolve('c', {}, afterReboot), c, 'and keeps it');

  // …and one another live berth holds by claim alone (no bridge up yet) moves too.
  writeFileSync(path.join(stateDir('d'), NETWORK_FILE), JSON.stringify({ ...c, bridge: 'berth-d' }));
  const d = await resolve('d', {}, afterReboot);
  t.not(d.subnet, c.subnet);
  t.regex(logged(40).at(-1)!.msg, new RegExp(`is taken by the berth with state dir ${stateDir('c')}`));

  // Two state dirs choosing at the same moment: the claim decides, the loser goes on to the next one.
  const [g, h] = await Promise.all([resolve('g', {}, afterReboot), resolve('h', {}, afterReboot)]);
  t.not(g.subnet, h.subnet);
  t.false([c.subnet, d.subnet].includes(g.subnet) || [c.subnet, d.subnet].includes(h.subnet));

  // Configured by the operator: a collision is a Conflict naming what it collides with.
  await t.throwsAsync(resolve('e', { subnet: a.subnet, bridge: `bx${process.pid % 100000}` }), {
    message: new RegExp(`network subnet ${a.subnet.replace(/\./g, '\\.')} .* overlaps this host's route`),
  });
  await t.throwsAsync(resolve('f', { subnet: d.subnet, bridge: `by${process.pid % 100000}` }, afterReboot), {
    message: new RegExp(`subnet .* is used by the berth with state dir ${stateDir('d')}`),
  });

  for (const br of bridges.splice(0)) await deleteLink(br);
  for (const br of [a.bridge, b.bridge]) t.false(await linkExists(br), `${br} deleted`);
});
