/**
 * berth's nftables rules, all in one table (family ip) so removal is exact and never touches other
 * software's rules:
 *   chain postrouting (nat): masquerade traffic from the bridge subnet leaving by another interface
 *   chain prerouting  (nat): published ports for traffic arriving from outside (fib daddr type local)
 *   chain output      (nat): the same for connections made on the host itself
 *   chain forward (filter):  accept to/from the bridge (other tables may still drop)
 * Every per-container rule carries the comment "berth:<id>"; removal finds them by handle.
 */
import { exec } from '../../lib/exec.js';

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

export async function nftAvailable(): Promise<boolean> {
  const r = await exec(NFT, ['list', 'tables'], { allowFailure: true, timeoutMs: 5000 }).catch(
    () => undefined,
  );
  return r?.code === 0;
}

export async function ensureTable(table: string, bridge: string, subnet: string): Promise<void> {
  const r = await exec(NFT, ['list', 'table', 'ip', table], { allowFailure: true });
  if (r.code === 0) return;
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
`);
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
    const match = `${p.hostIp ? `ip daddr ${p.hostIp}` : 'fib daddr type local'} ${p.protocol} dport ${p.hostPort}`;
    const rule = `${match} dnat to ${containerIp}:${p.containerPort} comment "berth:${containerId}"`;
    lines.push(`add rule ip ${table} prerouting ${rule}`);
    lines.push(`add rule ip ${table} output ${rule}`);
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
