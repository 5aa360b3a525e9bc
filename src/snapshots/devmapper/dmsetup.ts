/**
 * device-mapper through `dmsetup` (and `thin_ls`, `losetup`, `mkfs.ext4`, `dumpe2fs`), each call through
 * the exec helper, parsed into typed results. The bottom layer of the devmapper snapshotter
 * (snapshotter → pool-device → dmsetup → metadata), after containerd's snapshots/devmapper/dmsetup.
 *
 * Why dmsetup and not the DM ioctls in the native helper: the thin-pool work needs only a handful of
 * operations (create/reload/suspend/resume/remove/message/status), all of them rare next to the cost of
 * the I/O they trigger, and dmsetup (libdevmapper) already does the fiddly parts right — node creation
 * without udev, deferred remove, retries on EBUSY, the dm_ioctl versioning. Devices that use a thin pool
 * ship dmsetup with lvm2 anyway, and a typed wrapper keeps the parsing testable on hosts without DM
 * (test/unit/devmapper-*.test.ts). An ioctl backend can replace this file behind the same functions.
 *
 * Without udev (containers, initramfs, our test VM) libdevmapper would wait for udev cookies forever;
 * `DM_DISABLE_UDEV=1` makes it create the /dev/mapper nodes itself. We set it whenever udev's control
 * socket is missing.
 */
import { existsSync } from 'node:fs';
import { BerthError, type ErrorCode } from '../../lib/errors.js';
import { type ExecResult, exec } from '../../lib/exec.js';

export const SECTOR = 512;

/** `dmsetup info` fields berth uses. */
export interface DeviceInfo {
  name: string;
  major: number;
  minor: number;
  openCount: number;
  suspended: boolean;
  live: boolean;
}

export interface ThinPoolStatus {
  transactionId: number;
  usedMetadataBlocks: number;
  totalMetadataBlocks: number;
  usedDataBlocks: number;
  totalDataBlocks: number;
  /** 'rw', 'ro' or 'out_of_data_space' */
  mode: string;
  needsCheck: boolean;
  failed: boolean;
}

export interface ThinStatus {
  mappedSectors: number;
  highestMappedSector: number | undefined;
  failed: boolean;
}

export interface ThinPoolTable {
  metadataDevice: string;
  dataDevice: string;
  dataSectors: number;
  /** Allocation unit of the pool in 512-byte sectors (128 = 64 KiB, containerd's default). */
  blockSizeSectors: number;
  lowWaterMarkBlocks: number;
  /** Zeroing new blocks costs a write per allocation; containerd skips it (snapshots get full blocks). */
  skipBlockZeroing: boolean;
  /** false → `ignore_discard`: the pool drops discards instead of freeing blocks. */
  discard: boolean;
}

// ---------- pure: tables and status lines ----------

export function thinPoolTableLine(t: ThinPoolTable): string {
  const features: string[] = [];
  if (t.skipBlockZeroing) features.push('skip_block_zeroing');
  if (!t.discard) features.push('ignore_discard');
  return [
    0,
    t.dataSectors,
    'thin-pool',
    t.metadataDevice,
    t.dataDevice,
    t.blockSizeSectors,
    t.lowWaterMarkBlocks,
    features.length,
    ...features,
  ].join(' ');
}

export function thinTableLine(poolDevice: string, deviceId: number, sizeBytes: number): string {
  return `0 ${Math.floor(sizeBytes / SECTOR)} thin ${poolDevice} ${deviceId}`;
}

/**
 * `dmsetup status <pool>`: "<start> <len> thin-pool <transaction id> <used meta>/<total meta>
 * <used data>/<total data> <held metadata root> ro|rw|out_of_data_space [no_]discard_passdown
 * error|queue_if_no_space needs_check|- [metadata_low_watermark]", or "… thin-pool Fail".
 */
export function parseThinPoolStatus(line: string): ThinPoolStatus {
  const f = line.trim().split(/\s+/);
  if (f[2] !== 'thin-pool') throw parseError('thin-pool status', line);
  if (f[3] === 'Fail') {
    return {
      transactionId: 0,
      usedMetadataBlocks: 0,
      totalMetadataBlocks: 0,
      usedDataBlocks: 0,
      totalDataBlocks: 0,
      mode: 'fail',
      needsCheck: false,
      failed: true,
    };
  }
  const ratio = (s: string | undefined): [number, number] => {
    const m = /^(\d+)\/(\d+)$/.exec(s ?? '');
    if (!m) throw parseError('thin-pool status', line);
    return [Number(m[1]), Number(m[2])];
  };
  const [usedMeta, totalMeta] = ratio(f[4]);
  const [usedData, totalData] = ratio(f[5]);
  const transactionId = Number(f[3]);
  if (!Number.isInteger(transactionId) || f[7] === undefined) throw parseError('thin-pool status', line);
  return {
    transactionId,
    usedMetadataBlocks: usedMeta,
    totalMetadataBlocks: totalMeta,
    usedDataBlocks: usedData,
    totalDataBlocks: totalData,
    mode: f[7],
    needsCheck: f.includes('needs_check'),
    failed: false,
  };
}

/** `dmsetup status <thin>`: "<start> <len> thin <nr mapped sectors> <highest mapped sector|->" or "Fail". */
export function parseThinStatus(line: string): ThinStatus {
  const f = line.trim().split(/\s+/);
  if (f[2] !== 'thin') throw parseError('thin status', line);
  if (f[3] === 'Fail') return { mappedSectors: 0, highestMappedSector: undefined, failed: true };
  const mapped = Number(f[3]);
  if (!Number.isInteger(mapped)) throw parseError('thin status', line);
  return {
    mappedSectors: mapped,
    highestMappedSector: f[4] === undefined || f[4] === '-' ? undefined : Number(f[4]),
    failed: false,
  };
}

/** `dmsetup info -c --noheadings --separator ';' -o name,major,minor,open,attr` → one line per device. */
export function parseInfoColumns(out: string): DeviceInfo[] {
  const devices: DeviceInfo[] = [];
  for (const line of out.split('\n')) {
    if (!line.trim()) continue;
    const [name, major, minor, open, attr] = line.trim().split(';');
    if (name === undefined || attr === undefined) throw parseError('dmsetup info', line);
    // attr: L--w → (L)ive/(I)nactive table … (s)uspended in the 2nd position
    devices.push({
      name,
      major: Number(major),
      minor: Number(minor),
      openCount: Number(open),
      suspended: attr[1] === 's',
      live: attr[0] === 'L',
    });
  }
  return devices;
}

export interface ThinLsRow {
  deviceId: number;
  mappedBytes: number;
  exclusiveBytes: number;
}

/** `thin_ls --no-headers -o DEV,MAPPED_BYTES,EXCLUSIVE_BYTES`. */
export function parseThinLs(out: string): ThinLsRow[] {
  const rows: ThinLsRow[] = [];
  for (const line of out.split('\n')) {
    if (!line.trim()) continue;
    const [dev, mapped, exclusive] = line.trim().split(/\s+/).map(Number);
    if (![dev, mapped, exclusive].every((n) => Number.isInteger(n))) throw parseError('thin_ls', line);
    rows.push({ deviceId: dev!, mappedBytes: mapped!, exclusiveBytes: exclusive! });
  }
  return rows;
}

/** Inode count and free inodes from `dumpe2fs -h`. */
export function parseDumpe2fsInodes(out: string): { total: number; free: number } {
  const total = /^Inode count:\s+(\d+)$/m.exec(out);
  const free = /^Free inodes:\s+(\d+)$/m.exec(out);
  if (!total || !free) throw parseError('dumpe2fs -h', out.slice(0, 200));
  return { total: Number(total[1]), free: Number(free[1]) };
}

/** Map dmsetup/libdevmapper messages to berth's error kinds. */
export function dmErrorCode(stderr: string): ErrorCode {
  if (/No such device|not found|does not exist|No data available/i.test(stderr)) return 'NotFound';
  if (/busy|File exists|already exists/i.test(stderr)) return 'Conflict';
  if (/No space|out_of_data_space/i.test(stderr)) return 'NoSpace';
  if (/Permission denied|Operation not permitted/i.test(stderr)) return 'PermissionDenied';
  if (/Invalid argument/i.test(stderr)) return 'InvalidInput';
  return 'Internal';
}

function parseError(what: string, line: string): BerthError {
  return new BerthError('Corrupt', `cannot parse ${what}: ${JSON.stringify(line)}`);
}

// ---------- impure: the tools ----------

function dmEnv(): NodeJS.ProcessEnv {
  return existsSync('/run/udev/control') ? process.env : { ...process.env, DM_DISABLE_UDEV: '1' };
}

async function run(file: string, args: string[], what: string, input?: string): Promise<ExecResult> {
  const r = await exec(file, args, {
    env: dmEnv(),
    allowFailure: true,
    timeoutMs: 120_000,
    ...(input === undefined ? {} : { input }),
  });
  if (r.code !== 0) {
    const msg = r.stderr.trim().split('\n').slice(-3).join('; ') || `exit ${r.code}`;
    throw new BerthError(dmErrorCode(r.stderr), `${what}: ${msg}`, { details: { file, args } });
  }
  return r;
}

const dmsetup = (args: string[], what: string) => run('dmsetup', args, what);

export async function createDevice(name: string, table: string): Promise<void> {
  await dmsetup(['create', name, '--table', table], `dmsetup create ${name}`);
}

export async function reloadDevice(name: string, table: string): Promise<void> {
  await dmsetup(['reload', name, '--table', table], `dmsetup reload ${name}`);
}

export async function suspendDevice(name: string, opts: { noFlush?: boolean } = {}): Promise<void> {
  await dmsetup(['suspend', ...(opts.noFlush ? ['--noflush'] : []), name], `dmsetup suspend ${name}`);
}

export async function resumeDevice(name: string): Promise<void> {
  await dmsetup(['resume', name], `dmsetup resume ${name}`);
}

/**
 * Remove a device. `deferred`: if it is still open (mounted by a container), the kernel removes it on
 * last close instead of failing with EBUSY — containerd's behaviour for snapshot removal.
 * `retry`: libdevmapper retries EBUSY a few times (udev or a racing close holding it briefly).
 */
export async function removeDevice(name: string, opts: { deferred?: boolean; force?: boolean } = {}) {
  const args = ['remove', '--retry'];
  if (opts.deferred) args.push('--deferred');
  if (opts.force) args.push('--force');
  await dmsetup([...args, name], `dmsetup remove ${name}`);
}

/** Send a message to a target (the thin pool: create_thin, create_snap, delete, reserve_metadata_snap…). */
export async function message(pool: string, msg: string): Promise<void> {
  await dmsetup(['message', pool, '0', msg], `dmsetup message ${pool} 0 ${msg}`);
}

/** Info of one device, or undefined when it does not exist. */
export async function info(name: string): Promise<DeviceInfo | undefined> {
  const r = await exec(
    'dmsetup',
    ['info', '-c', '--noheadings', '--separator', ';', '-o', 'name,major,minor,open,attr', name],
    { env: dmEnv(), allowFailure: true },
  );
  if (r.code !== 0) {
    if (dmErrorCode(r.stderr) === 'NotFound') return undefined;
    throw new BerthError(dmErrorCode(r.stderr), `dmsetup info ${name}: ${r.stderr.trim()}`);
  }
  return parseInfoColumns(r.stdout)[0];
}

/** Names of all DM devices. */
export async function list(): Promise<string[]> {
  const r = await dmsetup(['ls'], 'dmsetup ls');
  if (/No devices found/i.test(r.stdout)) return [];
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => !!n);
}

export async function status(name: string): Promise<string> {
  return (await dmsetup(['status', name], `dmsetup status ${name}`)).stdout.trim();
}

export async function table(name: string): Promise<string> {
  return (await dmsetup(['table', name], `dmsetup table ${name}`)).stdout.trim();
}

export async function version(): Promise<string> {
  return (await dmsetup(['version'], 'dmsetup version')).stdout.trim();
}

/** Size of a block device in 512-byte sectors (`blockdev --getsz`). */
export async function blockDeviceSectors(device: string): Promise<number> {
  const r = await run('blockdev', ['--getsz', device], `blockdev --getsz ${device}`);
  return Number(r.stdout.trim());
}

/**
 * Per-device mapped/exclusive bytes from the pool's metadata. On a live pool thin_ls must read a
 * metadata snapshot: reserve one, read, release (always).
 */
export async function thinLs(pool: string, metadataDevice: string): Promise<ThinLsRow[]> {
  await message(pool, 'reserve_metadata_snap');
  try {
    const r = await run(
      'thin_ls',
      ['--metadata-snap', '--no-headers', '-o', 'DEV,MAPPED_BYTES,EXCLUSIVE_BYTES', metadataDevice],
      `thin_ls ${metadataDevice}`,
    );
    return parseThinLs(r.stdout);
  } finally {
    await message(pool, 'release_metadata_snap');
  }
}

/** The filesystem every snapshot inherits, made once on the base thin device. */
export async function mkfsExt4(device: string): Promise<void> {
  // lazy init off: otherwise every child would write its own inode tables in the background on first mount
  await run(
    'mkfs.ext4',
    ['-q', '-F', '-E', 'nodiscard,lazy_itable_init=0,lazy_journal_init=0', device],
    `mkfs.ext4 ${device}`,
  );
}

/** Used inodes of the ext4 on `device` (from the superblock; exact when it is not mounted). */
export async function ext4UsedInodes(device: string): Promise<number> {
  const r = await run('dumpe2fs', ['-h', device], `dumpe2fs -h ${device}`);
  const { total, free } = parseDumpe2fsInodes(r.stdout);
  return total - free;
}

/** Give a device's blocks back to the pool before deleting it (containerd's discard_blocks). */
export async function discardBlocks(device: string): Promise<void> {
  await run('blkdiscard', [device], `blkdiscard ${device}`);
}

/** Loop device backing `file`, attaching it when none is. */
export async function attachLoop(file: string): Promise<string> {
  const existing = (await loopsOf(file))[0];
  if (existing) return existing;
  const r = await run('losetup', ['--find', '--show', file], `losetup --find --show ${file}`);
  return r.stdout.trim();
}

export async function detachLoop(file: string): Promise<void> {
  for (const dev of await loopsOf(file)) await run('losetup', ['-d', dev], `losetup -d ${dev}`);
}

/** `losetup -j FILE` prints "/dev/loop3: [2049]:1234 (/path/FILE)" per device. */
async function loopsOf(file: string): Promise<string[]> {
  const r = await run('losetup', ['-j', file], `losetup -j ${file}`);
  return parseLosetupAssociated(r.stdout);
}

export function parseLosetupAssociated(out: string): string[] {
  return out
    .split('\n')
    .map((l) => /^(\/dev\/loop\d+):/.exec(l.trim())?.[1])
    .filter((d): d is string => d !== undefined);
}
