/**
 * Typed wrappers over iproute2 (`ip`), through the exec helper. Each returns when the kernel has done
 * the change or throws a BerthError naming the link/namespace.
 */
import { writeFile } from 'node:fs/promises';
import { exec } from '../../lib/exec.js';

const IP = '/usr/sbin/ip';

async function ip(args: string[], allowFailure = false) {
  return exec(IP, args, { timeoutMs: 10_000, allowFailure });
}

export async function linkExists(name: string, netns?: string): Promise<boolean> {
  const r = await ip([...(netns ? ['-n', netns] : []), 'link', 'show', 'dev', name], true);
  return r.code === 0;
}

export async function addBridge(name: string, cidr: string): Promise<void> {
  if (!(await linkExists(name))) {
    const r = await ip(['link', 'add', 'name', name, 'type', 'bridge'], true);
    if (r.code !== 0 && !(await linkExists(name))) throw new Error(`ip link add ${name}: ${r.stderr.trim()}`);
  }
  const addrs = await ip(['-4', '-o', 'addr', 'show', 'dev', name]);
  if (!addrs.stdout.includes(` ${cidr} `)) await ip(['addr', 'replace', cidr, 'dev', name]);
  // the bridge is one state dir's: an address of a subnet it had before (berth moved it) goes
  for (const m of addrs.stdout.matchAll(/ inet (\d+\.\d+\.\d+\.\d+\/\d+) /g))
    if (m[1] !== cidr) await ip(['addr', 'del', m[1]!, 'dev', name], true);
  await ip(['link', 'set', name, 'up']);
}

export async function deleteLink(name: string): Promise<void> {
  await ip(['link', 'del', name], true);
}

export async function addNetns(name: string): Promise<void> {
  await ip(['netns', 'add', name]);
}

export async function deleteNetns(name: string): Promise<void> {
  await ip(['netns', 'del', name], true);
}

/**
 * A veth pair: `host` stays on the host, `peer` is created directly inside `netns`, with `peerMac` when
 * given (see macForIp).
 */
export async function addVethPair(
  host: string,
  peer: string,
  netns: string,
  peerMac?: string,
): Promise<void> {
  await ip([
    'link',
    'add',
    host,
    'type',
    'veth',
    'peer',
    'name',
    peer,
    ...(peerMac ? ['address', peerMac] : []),
    'netns',
    netns,
  ]);
}

/**
 * The container's MAC from its IPv4 address (02:42 + the four bytes, as docker did): a container that gets
 * an address back which another one had keeps the MAC its neighbours (other containers, the host) still
 * have in their ARP caches, so they reach the new one at once instead of a dead MAC for ~30-60 s.
 */
export function macForIp(ipv4: string): string {
  const bytes = ipv4.split('.').map((b) => Number(b).toString(16).padStart(2, '0'));
  return ['02', '42', ...bytes].join(':');
}

export async function setMaster(dev: string, bridge: string): Promise<void> {
  await ip(['link', 'set', dev, 'master', bridge, 'up']);
}

/** Inside netns: rename `dev` to `name`, address it, bring it and lo up, default route via gateway. */
export async function configureInside(
  netns: string,
  dev: string,
  name: string,
  cidr: string,
  gateway: string,
): Promise<void> {
  await ip(['-n', netns, 'link', 'set', dev, 'name', name]);
  await ip(['-n', netns, 'addr', 'add', cidr, 'dev', name]);
  await ip(['-n', netns, 'link', 'set', name, 'up']);
  await ip(['-n', netns, 'link', 'set', 'lo', 'up']);
  await ip(['-n', netns, 'route', 'add', 'default', 'via', gateway]);
}

/**
 * net.ipv4.conf.<dev>.route_localnet: packets with a 127/8 source or destination may be routed by `dev`
 * (needed for DNAT of 127.0.0.1:<port> to a container on the bridge).
 */
export async function setRouteLocalnet(dev: string, on: boolean): Promise<void> {
  await writeFile(`/proc/sys/net/ipv4/conf/${dev}/route_localnet`, on ? '1' : '0');
}
