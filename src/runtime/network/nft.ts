/**
 * berth's nftables rules, all in one table (family ip) so removal is exact and never touches other
 * software's rules:
 *   chain postrouting (nat): masquerade traffic from the bridge subnet leaving by another interface, and
 *                            loopback-sourced traffic (127.0.0.1:<port> DNATed) leaving by the bridge
 *   chain prerouting  (nat): published ports for traffic arriving from outside (fib daddr type local,
 *                            never a 127/8 destination: those come only from the host itself)
 *   chain output      (nat): the same for connections made on the host itself, 127.0.0.1 included
 *   chain forward (filter):  accept to/from the bridge (other tables may still drop)
 *   chain localnet_guard (filter, prerouting, raw priority): drop packets from the bridge to 127/8 — with
 *                            route_localnet on the bridge a container could otherwise reach the host's
 *                            loopback-only services
 * Every per-container rule carries the comment "berth:<id>"; removal finds them by handle.
 */
import { exec } from '../../lib/exec.js';
import { type ProbeOptions, probeTool } from './probe.js';

const NFT = '/usr/sbin/nft';

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: 'tcp' | 'udp';
  /** Host address to bind, default all local addresses. */
  hostIp?: string;
}

async function nftScript(script: string): Promise<void> {
  await exec(NFT, ['-f', '-'], { input: script, timeoutMs: 10_000 });
}

/**
 * undefined when nft can change this host's ruleset, else why not. It asks the kernel to check a table
 * (`--check`: nothing is applied) rather than listing the ruleset: a listing is a netlink dump, which
 * another program's change can interrupt, and it grows with every table on the host.
 */
export function nftProblem(o?: ProbeOptions): Promise<string | undefined> {
  return probeTool(NFT, ['--check', 'add', 'table', 'ip', 'berth_probe'], o);
}

const LOOPBACK = '127.0.0.0/8';

/** The rules that make 127.0.0.1:<hostPort> work (and keep the hole route_localnet opens shut). */
function localhostRules(table: string, bridge: string): string {
  return `add rule ip ${table} postrouting ip saddr ${LOOPBACK} oifname "${bridge}" masquerade comment "berth:localhost"
add chain ip ${table} localnet_guard { type filter hook prerouting priority raw; policy accept; }
add rule ip ${table} localnet_guard iifname "${bridge}" ip daddr ${LOOPBACK} drop comment "berth:localnet-guard"
`;
}

export async function ensureTable(table: string, bridge: string, subnet: string): Promise<void> {
  const r = await exec(NFT, ['list', 'table', 'ip', table], { allowFailure: true });
  if (r.code === 0) {
    // a table made before localhost ports worked gets the rules it lacks
    if (!r.stdout.includes('"berth:localhost"')) await nftScript(localhostRules(table, bridge));
    return;
  }
  await nftScript(`table ip ${table} {
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${subnet} oifname != "${bridge}" masquerade comment "berth:nat"
  }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; }
  chain output { type nat hook output priority -100; policy accept; }
  chain forward { type filter hook forward priority filter; policy accept;
    iifname "${bridge}" accept
    oifname "${bridge}" accept
  }
}
${localhostRules(table, bridge)}`);
}

export async function deleteTable(table: string): Promise<void> {
  await exec(NFT, ['delete', 'table', 'ip', table], { allowFailure: true });
  await exec(NFT, ['delete', 'table', 'bridge', table], { allowFailure: true });
}

/**
 * Isolation on the bridge (table `bridge <table>`, hooked where frames are forwarded between ports):
 * traffic between two `members` passes only when the pair is in `pairs`. Containers that are not members
 * (ad-hoc `berth run` ones) are not filtered, as on docker's default bridge; traffic to the gateway (the
 * host, the outside) is routed, not bridged, so it is not filtered either. Both sets are replaced in one
 * nft transaction, so there is no moment with a half-written set.
 */
export async function setIsolation(
  table: string,
  members: readonly string[],
  pairs: ReadonlyArray<readonly [string, string]>,
): Promise<void> {
  const r = await exec(NFT, ['list', 'table', 'bridge', table], { allowFailure: true });
  let script = '';
  if (r.code !== 0)
    script += `table bridge ${table} {
  set members { type ipv4_addr; }
  set pairs { type ipv4_addr . ipv4_addr; }
  chain forward { type filter hook forward priority filter; policy accept;
    ip saddr @members ip daddr @members ip saddr . ip daddr != @pairs drop comment "berth:isolation"
  }
}
`;
  script += `flush set bridge ${table} members\nflush set bridge ${table} pairs\n`;
  if (members.length) script += `add element bridge ${table} members { ${members.join(', ')} }\n`;
  if (pairs.length)
    script += `add element bridge ${table} pairs { ${pairs.map(([a, b]) => `${a} . ${b}`).join(', ')} }\n`;
  await nftScript(script);
}

export async function addPortMappings(
  table: string,
  containerId: string,
  containerIp: string,
  ports: readonly PortMapping[],
): Promise<void> {
  if (ports.length === 0) return;
  const lines: string[] = [];
  for (const p of ports) {
    const to = `${p.protocol} dport ${p.hostPort} dnat to ${containerIp}:${p.containerPort} comment "berth:${containerId}"`;
    const loopbackOnly = p.hostIp?.startsWith('127.') === true;
    // from outside: never a 127/8 destination (only the host itself may reach a port through loopback)
    if (!loopbackOnly)
      lines.push(
        `add rule ip ${table} prerouting ${p.hostIp ? `ip daddr ${p.hostIp}` : `fib daddr type local ip daddr != ${LOOPBACK}`} ${to}`,
      );
    lines.push(
      `add rule ip ${table} output ${p.hostIp ? `ip daddr ${p.hostIp}` : 'fib daddr type local'} ${to}`,
    );
  }
  await nftScript(`${lines.join('\n')}\n`);
}

interface NftJsonRule {
  rule?: { chain: string; handle: number; comment?: string };
}

/** Remove every rule carrying the container's comment. */
export async function removeContainerRules(table: string, containerId: string): Promise<number> {
  const r = await exec(NFT, ['-j', '-a', 'list', 'table', 'ip', table], { allowFailure: true });
  if (r.code !== 0) return 0;
  const doc = JSON.parse(r.stdout) as { nftables: NftJsonRule[] };
  const mine = doc.nftables
    .map((x) => x.rule)
    .filter((x): x is NonNullable<NftJsonRule['rule']> => !!x && x.comment === `berth:${containerId}`);
  if (mine.length === 0) return 0;
  await nftScript(`${mine.map((x) => `delete rule ip ${table} ${x.chain} handle ${x.handle}`).join('\n')}\n`);
  return mine.length;
}

/** The container's rules as text (tests and `berth inspect`). */
export async function listContainerRules(table: string, containerId: string): Promise<string[]> {
  const r = await exec(NFT, ['-a', 'list', 'table', 'ip', table], { allowFailure: true });
  return r.stdout.split('\n').filter((l) => l.includes(`"berth:${containerId}"`));
}
