/**
 * Container networking: none (own empty netns with lo), host (the host's netns), bridge.
 *
 * Bridge mode, decided here: the netns is made BEFORE `create` (`ip netns add berth-<id>` → a bind
 * mount under /run/netns) and the runtime JOINS it by path (linux.namespaces[{type:network,path}]).
 * No hook is needed, so berth-runtime, runc and crun behave the same; the network outlives a container
 * restart; and a failure is reported by berth before any container exists. Steps: bridge (idempotent,
 * gateway = subnet .1) → IPAM lease → netns → veth pair (host side on the bridge, peer renamed eth0
 * inside) → address + default route → firewall: nftables table, or iptables chains when nft is missing
 * (masquerade) → published ports (DNAT). Teardown
 * reverses it and tolerates pieces that are already gone, so it is also the recovery path.
 */
import { promises as fsp } from 'node:fs';
import type { Db } from '../../db/database.js';
import { invalidInput, unsupported } from '../../lib/errors.js';
import type { NetworkMode } from '../bundle.js';
import * as iproute from './ip.js';
import { gatewayOf, Ipam, parseSubnet } from './ipam.js';
import * as ipt from './iptables.js';
import * as nft from './nft.js';

export type { PortMapping } from './nft.js';

export interface NetworkConfig {
  bridge: string;
  subnet: string;
  nftTable: string;
  firewall: 'auto' | 'nftables' | 'iptables' | 'none';
}

/** NAT + published ports, one implementation per tool (nft.ts, iptables.ts). */
export interface Firewall {
  readonly name: 'nftables' | 'iptables';
  ensure(bridge: string, subnet: string): Promise<void>;
  addPorts(containerId: string, containerIp: string, ports: readonly nft.PortMapping[]): Promise<void>;
  removeContainer(containerId: string): Promise<number>;
  listContainer(containerId: string): Promise<string[]>;
  /** bridge-level isolation between containers (nftables only; see nft.setIsolation) */
  isolate?(members: readonly string[], pairs: ReadonlyArray<readonly [string, string]>): Promise<void>;
  destroy(): Promise<void>;
}

function nftFirewall(table: string): Firewall {
  return {
    name: 'nftables',
    ensure: (bridge, subnet) => nft.ensureTable(table, bridge, subnet),
    addPorts: (id, ip, ports) => nft.addPortMappings(table, id, ip, ports),
    removeContainer: (id) => nft.removeContainerRules(table, id),
    listContainer: (id) => nft.listContainerRules(table, id),
    isolate: (members, pairs) => nft.setIsolation(table, members, pairs),
    destroy: () => nft.deleteTable(table),
  };
}

function iptablesFirewall(table: string): Firewall {
  return {
    name: 'iptables',
    ensure: (bridge, subnet) => ipt.ensureChains(table, bridge, subnet),
    addPorts: (id, ip, ports) => ipt.addPortMappings(table, id, ip, ports),
    removeContainer: (id) => ipt.removeContainerRules(table, id),
    listContainer: (id) => ipt.listContainerRules(table, id),
    destroy: () => ipt.deleteChains(table),
  };
}

export interface NetworkAttachment {
  mode: NetworkMode;
  netnsPath?: string;
  netnsName?: string;
  ipAddress?: string;
  gateway?: string;
  ports: nft.PortMapping[];
}

/** "8080:80", "127.0.0.1:8080:80/udp" → PortMapping (docker's -p without ranges). */
export function parsePortMapping(s: string): nft.PortMapping {
  const m = /^(?:(\d+\.\d+\.\d+\.\d+):)?(\d+):(\d+)(?:\/(tcp|udp))?$/.exec(s.trim());
  const port = (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw invalidInput(`port ${v} out of range in ${s}`);
    return n;
  };
  if (!m)
    throw invalidInput(
      `invalid port mapping ${JSON.stringify(s)}: use [ip:]hostPort:containerPort[/tcp|udp]`,
    );
  return {
    hostPort: port(m[2]!),
    containerPort: port(m[3]!),
    protocol: (m[4] as 'tcp' | 'udp' | undefined) ?? 'tcp',
    ...(m[1] ? { hostIp: m[1] } : {}),
  };
}

export function netnsNameFor(id: string): string {
  return `berth-${id}`;
}
function vethNames(id: string): { host: string; peer: string } {
  return { host: `bv${id.slice(0, 12)}`, peer: `bp${id.slice(0, 12)}` };
}

export class NetworkManager {
  private readonly ipam: Ipam;
  constructor(
    db: Db,
    private readonly cfg: NetworkConfig,
  ) {
    this.ipam = new Ipam(db, cfg.bridge, parseSubnet(cfg.subnet));
  }

  private fw: Promise<Firewall | undefined> | undefined;

  /** The firewall backend from config (auto: nftables, else iptables, else none). */
  firewall(): Promise<Firewall | undefined> {
    if (!this.fw) {
      this.fw = (async () => {
        const table = this.cfg.nftTable;
        switch (this.cfg.firewall) {
          case 'none':
            return undefined;
          case 'nftables':
            if (!(await nft.nftAvailable()))
              throw unsupported('network.firewall is nftables but `nft` does not work here');
            return nftFirewall(table);
          case 'iptables':
            if (!(await ipt.iptablesAvailable()))
              throw unsupported('network.firewall is iptables but `iptables` does not work here');
            return iptablesFirewall(table);
          default:
            if (await nft.nftAvailable()) return nftFirewall(table);
            if (await ipt.iptablesAvailable()) return iptablesFirewall(table);
            return undefined;
        }
      })();
    }
    return this.fw;
  }

  /**
   * Only `pairs` of `members` may talk to each other on the bridge (app networks). False when the
   * firewall cannot filter bridged traffic (iptables, none): then nothing is isolated.
   */
  async isolate(
    members: readonly string[],
    pairs: ReadonlyArray<readonly [string, string]>,
  ): Promise<boolean> {
    const fw = await this.firewall();
    if (!fw?.isolate) return false;
    await fw.isolate(members, pairs);
    return true;
  }

  async attach(id: string, mode: NetworkMode, ports: nft.PortMapping[]): Promise<NetworkAttachment> {
    if (mode !== 'bridge') {
      if (ports.length) throw invalidInput(`published ports need --network bridge (got ${mode})`);
      return { mode, ports: [] };
    }
    const subnet = parseSubnet(this.cfg.subnet);
    const gateway = gatewayOf(subnet);
    await iproute.addBridge(this.cfg.bridge, `${gateway}/${subnet.prefix}`);
    await fsp.writeFile('/proc/sys/net/ipv4/ip_forward', '1').catch(() => undefined);
    const ip = this.ipam.allocate(id);
    const netnsName = netnsNameFor(id);
    const { host, peer } = vethNames(id);
    try {
      await iproute.addNetns(netnsName);
      await iproute.addVethPair(host, peer, netnsName, iproute.macForIp(ip));
      await iproute.setMaster(host, this.cfg.bridge);
      await iproute.configureInside(netnsName, peer, 'eth0', `${ip}/${subnet.prefix}`, gateway);
      const fw = await this.firewall();
      if (fw) {
        await fw.ensure(this.cfg.bridge, this.cfg.subnet);
        await fw.removeContainer(id); // re-attach after a reboot must not duplicate rules
        await fw.addPorts(id, ip, ports);
      } else if (ports.length) {
        throw unsupported('published ports need nftables or iptables (network.firewall)');
      }
    } catch (err) {
      await this.detach(id);
      throw err;
    }
    return { mode, netnsName, netnsPath: `/run/netns/${netnsName}`, ipAddress: ip, gateway, ports };
  }

  /** Undo attach; every step tolerates "already gone". */
  async detach(id: string): Promise<void> {
    const fw = await this.firewall().catch(() => undefined);
    if (fw) await fw.removeContainer(id);
    await iproute.deleteLink(vethNames(id).host);
    await iproute.deleteNetns(netnsNameFor(id));
    this.ipam.release(id);
  }

  leaseOf(id: string): string | undefined {
    return this.ipam.leaseOf(id);
  }

  /** Remove the bridge and berth's firewall rules (tests; `berth network prune` later). */
  async destroyBridge(): Promise<void> {
    const fw = await this.firewall().catch(() => undefined);
    if (fw) await fw.destroy();
    await iproute.deleteLink(this.cfg.bridge);
  }
}
