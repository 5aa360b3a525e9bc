/**
 * Device info (rarely changes: sent retained at start and when it changes) and device metrics (sampled
 * periodically, sent when they move beyond thresholds — see core/report.ts) from systeminformation. The
 * module is injected so the composition root decides, and tests can pass a stub. By default only the
 * parts berth calls are loaded, on first use: systeminformation's index loads every module it has (docker,
 * wifi, bluetooth, graphics, printers…), ~700 KB of code a device agent never runs.
 */
import type * as si from 'systeminformation';

export type SystemInformation = Pick<
  typeof si,
  | 'osInfo'
  | 'cpu'
  | 'mem'
  | 'fsSize'
  | 'cpuTemperature'
  | 'networkStats'
  | 'networkInterfaces'
  | 'currentLoad'
>;

let parts: Promise<SystemInformation> | undefined;
/** osinfo, cpu, memory, filesystem and network of systeminformation, without its index. */
export function systemInformation(): Promise<SystemInformation> {
  // literal specifiers: the bundlers must see each one
  const d = (m: { default: Record<string, unknown> }) => m.default;
  parts ??= Promise.all([
    import('systeminformation/lib/osinfo.js').then(d),
    import('systeminformation/lib/cpu.js').then(d),
    import('systeminformation/lib/memory.js').then(d),
    import('systeminformation/lib/filesystem.js').then(d),
    import('systeminformation/lib/network.js').then(d),
  ]).then(
    ([os, cpu, mem, fs, net]) =>
      ({
        osInfo: os.osInfo,
        cpu: cpu.cpu,
        cpuTemperature: cpu.cpuTemperature,
        currentLoad: cpu.currentLoad,
        mem: mem.mem,
        fsSize: fs.fsSize,
        networkStats: net.networkStats,
        networkInterfaces: net.networkInterfaces,
      }) as unknown as SystemInformation,
  );
  return parts;
}

export interface DeviceInfo {
  os: { platform: string; distro: string; release: string; kernel: string; arch: string; hostname: string };
  cpu: { manufacturer: string; brand: string; cores: number; physicalCores: number };
  memory: { totalBytes: number };
  disks: Array<{ mount: string; fs: string; type: string; sizeBytes: number }>;
  network: Array<{ iface: string; ip4: string; ip6: string; mac: string }>;
}

export interface DeviceMetrics {
  cpuPercent: number;
  memory: { usedBytes: number; totalBytes: number };
  /** the filesystem holding the state dir (or the largest one) */
  disk: { mount: string; usedBytes: number; totalBytes: number };
  /** °C, when the hardware tells */
  temperatureC: number | null;
  network: Record<string, { rxBytes: number; txBytes: number }>;
}

const round1 = (n: number) => Math.round(n * 10) / 10;

export async function collectDeviceInfo(sys?: SystemInformation): Promise<DeviceInfo> {
  sys ??= await systemInformation();
  const [os, cpu, mem, fs, nets] = await Promise.all([
    sys.osInfo(),
    sys.cpu(),
    sys.mem(),
    sys.fsSize(),
    sys.networkInterfaces(),
  ]);
  const ifaces = Array.isArray(nets) ? nets : [nets];
  return {
    os: {
      platform: os.platform,
      distro: os.distro,
      release: os.release,
      kernel: os.kernel,
      arch: os.arch,
      hostname: os.hostname,
    },
    cpu: {
      manufacturer: cpu.manufacturer,
      brand: cpu.brand,
      cores: cpu.cores,
      physicalCores: cpu.physicalCores,
    },
    memory: { totalBytes: mem.total },
    disks: fs.map((d) => ({ mount: d.mount, fs: d.fs, type: d.type, sizeBytes: d.size })),
    network: ifaces
      .filter((n) => !n.internal)
      .map((n) => ({ iface: n.iface, ip4: n.ip4, ip6: n.ip6, mac: n.mac })),
  };
}

/** The mount that holds `dir`: the longest mount point that is a prefix of it. */
export function mountFor<T extends { mount: string }>(mounts: readonly T[], dir: string): T | undefined {
  return mounts
    .filter(
      (m) =>
        dir === m.mount || dir.startsWith(m.mount.endsWith('/') ? m.mount : `${m.mount}/`) || m.mount === '/',
    )
    .sort((a, b) => b.mount.length - a.mount.length)[0];
}

export async function collectDeviceMetrics(
  stateDir: string,
  sys?: SystemInformation,
): Promise<DeviceMetrics> {
  sys ??= await systemInformation();
  const [load, mem, fs, temp, net] = await Promise.all([
    sys.currentLoad(),
    sys.mem(),
    sys.fsSize(),
    sys.cpuTemperature().catch(() => ({ main: null })),
    sys.networkStats('*').catch(() => []),
  ]);
  const disk = mountFor(fs, stateDir);
  const network: DeviceMetrics['network'] = {};
  for (const n of net) network[n.iface] = { rxBytes: n.rx_bytes, txBytes: n.tx_bytes };
  const main = (temp as { main: number | null }).main;
  return {
    cpuPercent: round1(load.currentLoad),
    memory: { usedBytes: mem.active, totalBytes: mem.total },
    disk: { mount: disk?.mount ?? '/', usedBytes: disk?.used ?? 0, totalBytes: disk?.size ?? 0 },
    temperatureC: typeof main === 'number' && main > 0 ? round1(main) : null,
    network,
  };
}
