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
 *
 * Which bridge/subnet/table: resolve.ts (one per state dir, recorded, claimed host-wide). Published host
 * ports are claimed host-wide too (host-claims.ts): a port another agent or container publishes, or a
 * process on this host listens on, is a Conflict instead of a second DNAT rule that silently loses.
 *
 * 127.0.0.1:<hostPort> answers as docker users expect, without a userland proxy: the output chain DNATs
 * loopback traffic too, `route_localnet` on the bridge lets a packet with a loopback source leave by it,
 * and postrouting masquerades it to the gateway address (docker's --userland-proxy=false design; why not
 * a proxy: docs/containers.md). route_localnet would also let a container reach the host's
 * loopback-only services by sending to 127.x over the bridge: a raw-priority rule drops packets from the
 * bridge addressed to 127.0.0.0/8 before routing, and prerouting DNAT ignores 127.0.0.0/8 destinations
 * arriving from outside (only the host itself reaches its ports through loopback).
 */

import * as dgram from 'node:dgram';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Db } from '../../db/database.js';
import { conflict, invalidInput, unsupported } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import type { NetworkMode } from '../bundle.js';
import { HostClaims } from './host-claims.js';
import * as iproute from './ip.js';
import { gatewayOf, Ipam, parseSubnet, releaseLeases } from './ipam.js';
import * as ipt from './iptables.js';
import * as nft from './nft.js';
import { LEGACY_NETWORK, type ResolvedNetwork, recordedNetwork, resolveNetwork } from './resolve.js';

export type { PortMapping } from './nft.js';

export interface NetworkConfig {
  /** unset: one of the state dir's own (resolve.ts) */
  bridge?: string | undefined;
  subnet?: string | undefined;
  nftTable?: string | undefined;
  firewall: 'auto' | 'nftables' | 'iptables' | 'none';
}

export interface NetworkManagerOptions {
  /** the state dir whose network this is; without one the config (or the historical defaults) is used as is */
  stateDir?: string;
  /** host-wide claims on subnets and ports (default under /run/berth) */
  claims?: HostClaims;
  /** told which subnet berth chose for the state dir (and why it moved one) */
  log?: Logger;
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
  private readonly claims: HostClaims;

  constructor(
    private readonly db: Db,
    private readonly cfg: NetworkConfig,
    private readonly opts: NetworkManagerOptions = {},
  ) {
    this.claims = opts.claims ?? new HostClaims();
  }

  private resolved: Promise<ResolvedNetwork> | undefined;

  /** This state dir's bridge, subnet and table (chosen, recorded and claimed on first use). */
  network(): Promise<ResolvedNetwork> {
    if (!this.resolved) {
      const configured = { bridge: this.cfg.bridge, subnet: this.cfg.subnet, nftTable: this.cfg.nftTable };
      const stateDir = this.opts.stateDir;
      this.resolved = stateDir
        ? resolveNetwork({
            stateDir,
            configured,
            claims: this.claims,
            log: this.opts.log,
            leasedNetworks: () =>
              (
                this.db.prepare('SELECT DISTINCT network FROM ip_leases').all() as Array<{ network: string }>
              ).map((r) => r.network),
          })
        : Promise.resolve({
            ...LEGACY_NETWORK,
            ...Object.fromEntries(Object.entries(configured).filter(([, v]) => v !== undefined)),
          });
      // a failed resolution is tried again next time (the conflict may be gone)
      this.resolved.catch(() => {
        this.resolved = undefined;
      });
    }
    return this.resolved;
  }

  /** The network already in use, without choosing one (teardown of a state dir that never had one). */
  private async existing(): Promise<ResolvedNetwork | undefined> {
    if (this.resolved) return this.resolved.catch(() => undefined);
    const configured =
      this.cfg.bridge !== undefined || this.cfg.subnet !== undefined || this.cfg.nftTable !== undefined;
    if (configured || !this.opts.stateDir) return this.network();
    return recordedNetwork(this.opts.stateDir);
  }

  private fw: Promise<Firewall | undefined> | undefined;

  /**
   * The firewall backend from config (auto: nftables, else iptables, else none). A failed probe is not
   * kept: the next container asks again (a probe that timed out on a loaded device must not leave every
   * later container without a network).
   */
  firewall(table: string): Promise<Firewall | undefined> {
    if (!this.fw) {
      this.fw = (async () => {
        switch (this.cfg.firewall) {
          case 'none':
            return undefined;
          case 'nftables': {
            const why = await nft.nftProblem();
            if (why) throw unsupported(`network.firewall is nftables but \`nft\` does not work here: ${why}`);
            return nftFirewall(table);
          }
          case 'iptables': {
            const why = await ipt.iptablesProblem();
            if (why)
              throw unsupported(`network.firewall is iptables but \`iptables\` does not work here: ${why}`);
            return iptablesFirewall(table);
          }
          default:
            if (!(await nft.nftProblem())) return nftFirewall(table);
            if (!(await ipt.iptablesProblem())) return iptablesFirewall(table);
            return undefined;
        }
      })();
      this.fw.catch(() => {
        this.fw = undefined;
      });
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
    const n = members.length > 0 ? await this.network() : await this.existing();
    if (!n) return false;
    const fw = await this.firewall(n.nftTable);
    if (!fw?.isolate) return false;
    await fw.isolate(members, pairs);
    return true;
  }

  /**
   * Claim the container's host ports (host-wide), refusing one a process on this host listens on: a DNAT
   * rule would take its traffic away silently (sshd on 22…).
   */
  private async claimPorts(id: string, ports: readonly nft.PortMapping[]): Promise<void> {
    const stateDir = path.resolve(this.opts.stateDir ?? '/');
    for (const p of ports) {
      await this.claims.claimPort({ stateDir, containerId: id, ...p });
      if (await portInUse(p))
        throw conflict(
          `host port ${p.hostIp ? `${p.hostIp}:` : ''}${p.hostPort}/${p.protocol} is in use by a process on this host`,
        );
    }
  }

  async attach(id: string, mode: NetworkMode, ports: nft.PortMapping[]): Promise<NetworkAttachment> {
    if (mode !== 'bridge') {
      if (ports.length) throw invalidInput(`published ports need --network bridge (got ${mode})`);
      return { mode, ports: [] };
    }
    const n = await this.network();
    const subnet = parseSubnet(n.subnet);
    const gateway = gatewayOf(subnet);
    const ipam = new Ipam(this.db, n.bridge, subnet);
    try {
      await this.claimPorts(id, ports);
    } catch (err) {
      await this.releasePorts(id, ports);
      throw err;
    }
    await iproute.addBridge(n.bridge, `${gateway}/${subnet.prefix}`);
    await fsp.writeFile('/proc/sys/net/ipv4/ip_forward', '1').catch(() => undefined);
    // 127.0.0.1:<hostPort>: loopback-sourced packets DNATed to the bridge may leave by it (see the file comment)
    await iproute.setRouteLocalnet(n.bridge, true);
    const ip = ipam.allocate(id);
    const netnsName = netnsNameFor(id);
    const { host, peer } = vethNames(id);
    try {
      await iproute.addNetns(netnsName);
      await iproute.addVethPair(host, peer, netnsName, iproute.macForIp(ip));
      await iproute.setMaster(host, n.bridge);
      await iproute.configureInside(netnsName, peer, 'eth0', `${ip}/${subnet.prefix}`, gateway);
      const fw = await this.firewall(n.nftTable);
      if (fw) {
        await fw.ensure(n.bridge, n.subnet);
        await fw.removeContainer(id); // re-attach after a reboot must not duplicate rules
        await fw.addPorts(id, ip, ports);
      } else if (ports.length) {
        throw unsupported('published ports need nftables or iptables (network.firewall)');
      }
    } catch (err) {
      await this.detach(id, ports);
      throw err;
    }
    return { mode, netnsName, netnsPath: `/run/netns/${netnsName}`, ipAddress: ip, gateway, ports };
  }

  private async releasePorts(id: string, ports: ReadonlyArray<{ protocol: string; hostPort: number }>) {
    await this.claims.releasePorts(path.resolve(this.opts.stateDir ?? '/'), id, ports).catch(() => undefined);
  }

  /** Undo attach; every step tolerates "already gone". */
  async detach(id: string, ports: ReadonlyArray<{ protocol: string; hostPort: number }> = []): Promise<void> {
    const n = await this.existing().catch(() => undefined);
    const fw = n ? await this.firewall(n.nftTable).catch(() => undefined) : undefined;
    if (fw) await fw.removeContainer(id);
    await iproute.deleteLink(vethNames(id).host);
    await iproute.deleteNetns(netnsNameFor(id));
    releaseLeases(this.db, id);
    await this.releasePorts(id, ports);
  }

  /** Remove the bridge and berth's firewall rules (tests; `berth network prune` later). */
  async destroyBridge(): Promise<void> {
    const n = await this.existing();
    if (!n) return;
    const fw = await this.firewall(n.nftTable).catch(() => undefined);
    if (fw) await fw.destroy();
    await iproute.deleteLink(n.bridge);
    if (this.opts.stateDir) await this.claims.releaseSubnet(n.subnet, path.resolve(this.opts.stateDir));
  }
}

/** Whether a process on this host has the port open (bind it for a moment; EADDRINUSE says yes). */
async function portInUse(p: nft.PortMapping): Promise<boolean> {
  const host = p.hostIp ?? '0.0.0.0';
  const busy = (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE';
  if (p.protocol === 'udp') {
    return new Promise((resolve) => {
      const sock = dgram.createSocket('udp4');
      sock.once('error', (err) => {
        sock.close();
        resolve(busy(err));
      });
      sock.bind(p.hostPort, host, () => sock.close(() => resolve(false)));
    });
  }
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (err) => resolve(busy(err)));
    srv.listen({ port: p.hostPort, host, exclusive: true }, () => srv.close(() => resolve(false)));
  });
}
