/**
 * Host-wide claims between berth agents that share one machine (each with its own state dir): a bridge
 * subnet and a published host port belong to one agent (one container) at a time. A claim is a small JSON
 * file under <runDir> (default /run/berth, a tmpfs: claims go with a reboot, as the rules they guard do),
 * created atomically (written aside, then link(2), which fails if the name exists). A claim whose owner is
 * gone — its state dir no longer uses the subnet, its container no longer exists — is stale and taken
 * over; anything else is a Conflict naming the owner.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { conflict } from '../../lib/errors.js';

export interface SubnetClaim {
  stateDir: string;
  bridge: string;
  subnet: string;
}

/** The Conflict of a configured subnet another berth has. */
export function subnetConflict(subnet: string, holder: SubnetClaim) {
  return conflict(
    `subnet ${subnet} is used by the berth with state dir ${holder.stateDir} (bridge ${holder.bridge}); give this one another network.subnet, or leave it unset to get one of its own`,
  );
}

export interface PortClaim {
  stateDir: string;
  containerId: string;
  hostIp?: string | undefined;
  protocol: 'tcp' | 'udp';
  hostPort: number;
}

/** <state-dir>/network.json: the network an agent uses (src/runtime/network/resolve.ts writes it) */
export const NETWORK_FILE = 'network.json';

async function readJson<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await fsp.readFile(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export class HostClaims {
  constructor(readonly runDir = '/run/berth') {}

  private file(kind: 'subnets' | 'ports', name: string): string {
    return path.join(this.runDir, kind, name.replace(/[^A-Za-z0-9.-]/g, '_'));
  }

  /**
   * Create `file` holding `value` unless it exists; when it does, `stale(current)` says whether it may be
   * replaced. Returns the holder that blocks the claim, or undefined when the claim is ours.
   */
  private async claim<T>(file: string, value: T, mine: (v: T) => boolean, stale: (v: T) => Promise<boolean>) {
    // only root reads who holds what (the claims name state dirs)
    await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
    await fsp.writeFile(tmp, JSON.stringify(value));
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          await fsp.link(tmp, file);
          return undefined;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        }
        const current = await readJson<T>(file);
        if (current && mine(current)) return undefined;
        if (current && !(await stale(current))) return current;
        // stale (or unreadable): take it over, then make sure the takeover was ours
        await fsp.rename(tmp, file);
        const now = await readJson<T>(file);
        if (now && mine(now)) return undefined;
        await fsp.writeFile(tmp, JSON.stringify(value));
      }
      return (await readJson<T>(file)) ?? value;
    } finally {
      await fsp.rm(tmp, { force: true });
    }
  }

  /**
   * Claim the subnet for this state dir: undefined when it is ours now, else the live claim of the berth
   * that has it (a claim is live while its state dir's network.json still names the subnet).
   */
  trySubnet(c: SubnetClaim): Promise<SubnetClaim | undefined> {
    return this.claim(
      this.file('subnets', c.subnet),
      c,
      (v) => v.stateDir === c.stateDir,
      async (v) =>
        (await readJson<{ subnet?: string }>(path.join(v.stateDir, NETWORK_FILE)))?.subnet !== v.subnet,
    );
  }

  /** The subnet is this state dir's, or Conflict naming the agent that has it. */
  async claimSubnet(c: SubnetClaim): Promise<void> {
    const holder = await this.trySubnet(c);
    if (holder) throw subnetConflict(c.subnet, holder);
  }

  /** Give the subnet back (the state dir's network is being removed). */
  async releaseSubnet(subnet: string, stateDir: string): Promise<void> {
    const file = this.file('subnets', subnet);
    const v = await readJson<SubnetClaim>(file);
    if (v && v.stateDir === stateDir) await fsp.rm(file, { force: true });
  }

  /** Whether another state dir holds the subnet now (for choosing a free one). */
  async subnetTaken(subnet: string, stateDir: string): Promise<boolean> {
    const v = await readJson<SubnetClaim>(this.file('subnets', subnet));
    if (!v || v.stateDir === stateDir) return false;
    return (await readJson<{ subnet?: string }>(path.join(v.stateDir, NETWORK_FILE)))?.subnet === v.subnet;
  }

  /** The host port is this container's, or Conflict naming the container (and berth) that has it. */
  async claimPort(c: PortClaim): Promise<void> {
    const holder = await this.claim(
      this.file('ports', `${c.protocol}-${c.hostPort}`),
      c,
      (v) => v.stateDir === c.stateDir && v.containerId === c.containerId,
      async (v) =>
        !(await fsp.stat(path.join(v.stateDir, 'containers', v.containerId)).then(
          () => true,
          () => false,
        )),
    );
    if (holder)
      throw conflict(
        `host port ${c.hostPort}/${c.protocol} is already published by container ${holder.containerId.slice(0, 12)}${
          holder.stateDir === c.stateDir ? '' : ` of the berth with state dir ${holder.stateDir}`
        }`,
      );
  }

  /** Give back the container's port claims (only its own: a claim taken over since is left alone). */
  async releasePorts(
    stateDir: string,
    containerId: string,
    ports: ReadonlyArray<{ protocol: string; hostPort: number }>,
  ) {
    for (const p of ports) {
      const file = this.file('ports', `${p.protocol}-${p.hostPort}`);
      const v = await readJson<PortClaim>(file);
      if (v && v.stateDir === stateDir && v.containerId === containerId) await fsp.rm(file, { force: true });
    }
  }
}
