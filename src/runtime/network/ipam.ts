/**
 * A small IPAM: IPv4 leases per network in SQLite (table ip_leases). The subnet math is pure; allocation
 * takes the lowest free host address (.1 is the gateway) inside one IMMEDIATE transaction, so two berth
 * processes never hand out the same address.
 */
import { type Db, tx } from '../../db/database.js';
import { invalidInput, noSpace } from '../../lib/errors.js';

export interface Subnet {
  network: number;
  prefix: number;
  /** Number of addresses (including network and broadcast). */
  size: number;
}

export function ipToInt(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255))
    throw invalidInput(`invalid IPv4 address ${JSON.stringify(ip)}`);
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseSubnet(cidr: string): Subnet {
  const [ip, bits] = cidr.split('/');
  const prefix = Number(bits);
  if (!ip || !Number.isInteger(prefix) || prefix < 8 || prefix > 30)
    throw invalidInput(`invalid subnet ${JSON.stringify(cidr)}: need a.b.c.d/8..30`);
  const size = 2 ** (32 - prefix);
  const network = ipToInt(ip) - (ipToInt(ip) % size);
  return { network, prefix, size };
}

export function gatewayOf(s: Subnet): string {
  return intToIp(s.network + 1);
}

export class Ipam {
  constructor(
    private readonly db: Db,
    private readonly networkName: string,
    private readonly subnet: Subnet,
  ) {}

  /**
   * The container's address (existing lease reused, so a retried create is idempotent — unless it lies
   * outside the subnet, which moved since: resolve.ts moves a subnet another berth took).
   */
  allocate(containerId: string): string {
    return tx(this.db, () => {
      const existing = this.db
        .prepare('SELECT address FROM ip_leases WHERE network = ? AND container_id = ?')
        .get(this.networkName, containerId) as { address: string } | undefined;
      if (existing && this.contains(existing.address)) return existing.address;
      if (existing) this.release(containerId);
      const used = new Set(
        (
          this.db.prepare('SELECT address FROM ip_leases WHERE network = ?').all(this.networkName) as Array<{
            address: string;
          }>
        ).map((r) => r.address),
      );
      for (let i = 2; i < this.subnet.size - 1; i++) {
        const addr = intToIp(this.subnet.network + i);
        if (used.has(addr)) continue;
        this.db
          .prepare('INSERT INTO ip_leases (network, address, container_id, created_at) VALUES (?, ?, ?, ?)')
          .run(this.networkName, addr, containerId, Date.now());
        return addr;
      }
      throw noSpace(`network ${this.networkName} has no free address left`);
    });
  }

  private contains(address: string): boolean {
    const n = ipToInt(address);
    return n > this.subnet.network && n < this.subnet.network + this.subnet.size - 1;
  }

  release(containerId: string): void {
    this.db
      .prepare('DELETE FROM ip_leases WHERE network = ? AND container_id = ?')
      .run(this.networkName, containerId);
  }

  leaseOf(containerId: string): string | undefined {
    const r = this.db
      .prepare('SELECT address FROM ip_leases WHERE network = ? AND container_id = ?')
      .get(this.networkName, containerId) as { address: string } | undefined;
    return r?.address;
  }
}

/** Give back every address a container holds, whatever the network (teardown, recovery). */
export function releaseLeases(db: Db, containerId: string): void {
  db.prepare('DELETE FROM ip_leases WHERE container_id = ?').run(containerId);
}
