/**
 * Which bridge, subnet and firewall table an agent uses. Several agents may share a machine (one state
 * dir each), so each gets its own:
 *
 *   1. what the config says (network.bridge / subnet / nftTable), checked for conflicts;
 *   2. else what <state-dir>/network.json recorded the first time (a network never changes under its
 *      containers);
 *   3. else, for the default state dir /var/lib/berth (or a state dir whose containers already have
 *      leases on berth0), the historical berth0 / 172.31.250.0/24 / berth;
 *   4. else one derived from the state dir: bridge berth-<h>, table berth_<h> (h = 8 hex of the sha256 of
 *      the state dir's path), subnet 172.30.N.0/24 with N from the same hash, moving to the next N while
 *      the candidate overlaps a route or address of this host or another live agent's claim.
 *
 * The result is recorded in network.json and the subnet claimed host-wide (host-claims.ts), so a second
 * agent can never hand out the same addresses on another bridge. A configured subnet that overlaps a
 * route of another interface, or another agent's subnet, is a Conflict naming both. A subnet berth chose
 * (2–4) that another live agent or a host route has by now — two agents chose at the same moment, or
 * claims went with a reboot — is not an error: berth moves to the next free candidate, records it and
 * logs which it took and why.
 */
import { createHash } from 'node:crypto';
import { promises as fsp, realpathSync } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../../lib/atomic.js';
import { conflict } from '../../lib/errors.js';
import { exec } from '../../lib/exec.js';
import type { Logger } from '../../lib/logger.js';
import { type HostClaims, NETWORK_FILE } from './host-claims.js';
import { ipToInt, parseSubnet } from './ipam.js';

export interface ResolvedNetwork {
  bridge: string;
  subnet: string;
  nftTable: string;
}

export const DEFAULT_STATE_DIR = '/var/lib/berth';
export const LEGACY_NETWORK: ResolvedNetwork = {
  bridge: 'berth0',
  subnet: '172.31.250.0/24',
  nftTable: 'berth',
};

/** 8 hex characters naming this state dir (bridge, table, lock dir): stable for one path. */
export function stateDirKey(stateDir: string): string {
  let p = path.resolve(stateDir);
  try {
    p = realpathSync(p);
  } catch {
    /* not there yet: the path as given */
  }
  return createHash('sha256').update(p).digest('hex').slice(0, 8);
}

/** Whether two CIDRs share an address. */
export function cidrsOverlap(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  return x.start <= y.end && y.start <= x.end;
}

function parseCidr(c: string): { start: number; end: number } {
  const [ip, bits] = c.split('/');
  const prefix = bits === undefined ? 32 : Number(bits);
  const size = 2 ** (32 - prefix);
  const start = ipToInt(ip!) - (ipToInt(ip!) % size);
  return { start, end: start + size - 1 };
}

export interface HostRoute {
  dest: string;
  dev: string | undefined;
  line: string;
}

/** `ip -4 -o route show table all` → destinations (default routes left out) and their devices. */
export function parseRoutes(text: string): HostRoute[] {
  const out: HostRoute[] = [];
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (!words[0]) continue;
    const typed = [
      'local',
      'broadcast',
      'unicast',
      'anycast',
      'multicast',
      'blackhole',
      'unreachable',
      'prohibit',
      'throw',
      'nat',
    ];
    const dest = typed.includes(words[0]) ? words[1] : words[0];
    if (!dest || dest === 'default' || !/^\d+\.\d+\.\d+\.\d+(\/\d+)?$/.test(dest)) continue;
    const i = words.indexOf('dev');
    out.push({ dest, dev: i >= 0 ? words[i + 1] : undefined, line: line.trim() });
  }
  return out;
}

/** The host route (not on `bridge`) that `subnet` would collide with, if any. */
export function overlappingRoute(
  subnet: string,
  bridge: string,
  routes: readonly HostRoute[],
): HostRoute | undefined {
  return routes.find((r) => r.dev !== bridge && cidrsOverlap(subnet, r.dest));
}

/** The n-th candidate subnet for a derived network: 172.30.<n mod 256>.0/24. */
export function derivedSubnet(key: string, attempt: number): string {
  const n = (Number.parseInt(key.slice(0, 4), 16) + attempt) % 256;
  return `172.30.${n}.0/24`;
}

async function hostRoutes(): Promise<HostRoute[]> {
  const r = await exec('/usr/sbin/ip', ['-4', '-o', 'route', 'show', 'table', 'all'], {
    timeoutMs: 10_000,
    allowFailure: true,
  });
  return r.code === 0 ? parseRoutes(r.stdout) : [];
}

export interface ResolveInput {
  stateDir: string;
  /** the config's values: any given one makes the network "configured" (the rest take the historical defaults) */
  configured: Partial<ResolvedNetwork>;
  claims: HostClaims;
  /** bridges that already have leases in this state dir's database */
  leasedNetworks: () => string[];
  /** told which subnet berth chose, and why it moved one */
  log?: Logger | undefined;
  /** the n-th subnet to try when berth chooses (default: derived from the state dir, `derivedSubnet`) */
  candidates?: ((attempt: number) => string) | undefined;
}

/** The network this state dir uses, recorded and claimed (see the file comment). */
export async function resolveNetwork(i: ResolveInput): Promise<ResolvedNetwork> {
  const file = path.join(i.stateDir, NETWORK_FILE);
  const stateDir = path.resolve(i.stateDir);
  const routes = await hostRoutes();
  if (Object.values(i.configured).some((v) => v !== undefined)) {
    // The operator's choice: used as given, or a Conflict naming what it collides with.
    const net = { ...LEGACY_NETWORK, ...stripUndefined(i.configured) };
    parseSubnet(net.subnet);
    const clash = overlappingRoute(net.subnet, net.bridge, routes);
    if (clash)
      throw conflict(
        `network subnet ${net.subnet} (bridge ${net.bridge}) overlaps this host's route "${clash.line}"; set another network.subnet`,
      );
    await writeFileAtomic(file, JSON.stringify(net));
    await i.claims.claimSubnet({ stateDir, bridge: net.bridge, subnet: net.subnet });
    return net;
  }

  // berth's choice: what it recorded (or the historical network of the default state dir), while still free
  const kept =
    (await recordedNetwork(i.stateDir)) ??
    (stateDir === DEFAULT_STATE_DIR || i.leasedNetworks().includes(LEGACY_NETWORK.bridge)
      ? LEGACY_NETWORK
      : undefined);
  if (kept) {
    parseSubnet(kept.subnet);
    const clash = overlappingRoute(kept.subnet, kept.bridge, routes);
    let takenBy = clash ? `this host's route "${clash.line}"` : undefined;
    if (!takenBy) {
      await writeFileAtomic(file, JSON.stringify(kept));
      const holder = await i.claims.trySubnet({ stateDir, bridge: kept.bridge, subnet: kept.subnet });
      if (!holder) return kept;
      takenBy = `the berth with state dir ${holder.stateDir} (bridge ${holder.bridge})`;
    }
    // Two state dirs recorded the same subnet (chosen at the same moment, or before a reboot wiped the
    // claims): nobody configured it, so this one moves to the next free one instead of failing.
    const moved = await chooseSubnet(
      i,
      routes,
      { bridge: kept.bridge, nftTable: kept.nftTable },
      kept.subnet,
    );
    i.log?.warn(
      { bridge: moved.bridge, from: kept.subnet, subnet: moved.subnet, takenBy },
      `bridge subnet ${kept.subnet} is taken by ${takenBy}; using ${moved.subnet}`,
    );
    return moved;
  }
  const key = stateDirKey(i.stateDir);
  const net = await chooseSubnet(i, routes, { bridge: `berth-${key}`, nftTable: `berth_${key}` });
  i.log?.info({ bridge: net.bridge, subnet: net.subnet }, `bridge subnet chosen: ${net.subnet}`);
  return net;
}

/**
 * The first candidate subnet that no host route or address overlaps and no other live berth holds —
 * recorded in network.json, then claimed (the claim is the arbiter between two agents choosing at once:
 * the loser goes on to the next candidate).
 */
async function chooseSubnet(
  i: ResolveInput,
  routes: readonly HostRoute[],
  names: { bridge: string; nftTable: string },
  avoid?: string,
): Promise<ResolvedNetwork> {
  const stateDir = path.resolve(i.stateDir);
  const candidate = i.candidates ?? ((n: number) => derivedSubnet(stateDirKey(i.stateDir), n));
  const skipped: string[] = [];
  for (let attempt = 0; attempt < 256; attempt++) {
    const subnet = candidate(attempt);
    if (subnet === avoid) continue;
    const clash = overlappingRoute(subnet, names.bridge, routes);
    if (clash) {
      skipped.push(`${subnet}: host route "${clash.line}"`);
      continue;
    }
    if (await i.claims.subnetTaken(subnet, stateDir)) {
      skipped.push(`${subnet}: another berth`);
      continue;
    }
    const net = { ...names, subnet };
    // recorded before the claim: a claim is live only while its state dir's network.json names it
    await writeFileAtomic(path.join(i.stateDir, NETWORK_FILE), JSON.stringify(net));
    const holder = await i.claims.trySubnet({ stateDir, bridge: net.bridge, subnet });
    if (!holder) {
      if (skipped.length > 0) i.log?.info({ skipped }, `bridge subnet candidates skipped before ${subnet}`);
      return net;
    }
    skipped.push(`${subnet}: the berth with state dir ${holder.stateDir}`);
  }
  throw conflict(
    `no free subnet left among 256 candidates in 172.30.0.0/16 for bridge ${names.bridge}: set network.subnet`,
  );
}

/** What network.json says, without probing or claiming (teardown paths). */
export async function recordedNetwork(stateDir: string): Promise<ResolvedNetwork | undefined> {
  return fsp
    .readFile(path.join(stateDir, NETWORK_FILE), 'utf8')
    .then((t) => JSON.parse(t) as ResolvedNetwork)
    .catch(() => undefined);
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
