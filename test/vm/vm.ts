/**
 * A throw-away Linux VM for tests that need kernel features this host lacks (device-mapper thin pools,
 * a pure cgroup v2 hierarchy). Debian's stock kernel boots under QEMU with TCG (software emulation; the
 * host's /dev/kvm does not boot stock kernels) from a tiny initramfs we build ourselves:
 *
 *   1. `ensureKernel()` fetches `linux-image-<ver>-amd64` with `apt-get download` into the cache dir
 *      ($BERTH_VM_CACHE or ~/.cache/berth-vm) — never installed on the host — unpacks it with dpkg-deb and
 *      extracts an uncompressed vmlinux (TCG spends ~6 s decompressing an XZ kernel otherwise).
 *   2. `ensureInitramfs()` writes a newc cpio archive: busybox-static with its applet links, the wanted
 *      kernel modules (dependencies resolved from each module's `depends=` modinfo, loaded with insmod in
 *      order; there is no modprobe in the guest) and `/init` (guest-init.sh).
 *   3. `runInVm()` boots it. The guest's /init copies itself to a tmpfs and switch_roots there (pivot_root
 *      from an initramfs root fails, and containers in the guest need it), mounts the host's /usr read-only
 *      over virtio-9p (node, dmsetup, mkfs.ext4 … come from the host), mounts each share at the SAME path it
 *      has on the host (so a worktree's absolute paths and node_modules work unchanged), mounts a pure cgroup
 *      v2 hierarchy with every controller enabled for children, runs the script and powers off. The last
 *      console line it prints is `BERTH-VM-RESULT code=<exit code>`.
 *
 * Disks are sparse raw files attached as virtio disks (/dev/vda, /dev/vdb … in order).
 * Measured on the 2-core dev machine: boot to the script in ~3.5 s, a run with node ~10-20 s.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BerthError } from '../../src/lib/errors.js';
import { exec } from '../../src/lib/exec.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Modules every boot loads (dependencies are added automatically). */
export const BASE_MODULES = [
  'virtio_pci',
  'virtio_blk',
  '9pnet_virtio',
  '9p',
  'crc32c_generic', // ext4's soft dependency (crypto-crc32c); without modprobe nobody would load it
  'ext4',
  'loop',
  'overlay',
  'dm-thin-pool',
];

export interface VmShare {
  /** Host directory, mounted at the same path in the guest. */
  hostPath: string;
  readonly?: boolean;
}

export interface VmDisk {
  /** Size of the sparse raw file (bytes). */
  sizeBytes: number;
}

export interface RunInVmOptions {
  /** Shell script (busybox sh) run as root in the guest; its exit code is the result. */
  script: string;
  /** Main writable share (e.g. the project worktree); also the script's working directory. */
  shareDir?: string;
  /** More host directories to mount at their own paths. */
  shares?: VmShare[];
  /** Virtio disks, /dev/vda first. */
  disks?: VmDisk[];
  /** Extra kernel modules to load (e.g. 'veth', 'bridge'). */
  modules?: string[];
  /** Environment for the script (PATH, HOME and BERTH_IN_VM=1 are set already). */
  env?: Record<string, string>;
  memoryMiB?: number;
  /** Kill QEMU after this long (default 240 s). */
  timeoutMs?: number;
}

export interface RunInVmResult {
  /** Exit code of the script, or -1 when the guest never reported one (crash, timeout). */
  code: number;
  /** What the script printed (console lines between the begin and result markers). */
  output: string;
  /** The whole serial console log, for diagnosis. */
  console: string;
  /** Host wall time from QEMU start to exit. */
  wallMs: number;
  /** Guest uptime (s) when the script started and when it ended. */
  guestStartS: number | undefined;
  guestEndS: number | undefined;
}

export function vmCacheDir(): string {
  return process.env.BERTH_VM_CACHE ?? path.join(os.homedir(), '.cache', 'berth-vm');
}

/** The host tools the VM needs; the test gate checks these (packages in scripts/bootstrap.sh). */
export const VM_HOST_TOOLS = [
  '/usr/bin/qemu-system-x86_64',
  '/usr/share/qemu/qboot.rom',
  '/bin/busybox',
  '/usr/bin/apt-get',
  '/usr/bin/dpkg-deb',
  '/usr/bin/xz',
];

export interface Kernel {
  version: string;
  vmlinux: string;
  moduleDir: string;
}

async function kernelPackage(): Promise<string> {
  const fromEnv = process.env.BERTH_VM_KERNEL_PKG;
  if (fromEnv) return fromEnv;
  const r = await exec('apt-cache', ['depends', 'linux-image-amd64']);
  const m = /Depends:\s+(linux-image-[0-9][^\s]*)/.exec(r.stdout);
  if (!m)
    throw new BerthError('NotFound', `apt-cache depends linux-image-amd64: no versioned kernel package`);
  return m[1]!;
}

/** Download (once) and unpack the Debian kernel package into the cache dir. */
export async function ensureKernel(): Promise<Kernel> {
  const pkg = await kernelPackage();
  const version = pkg.replace(/^linux-image-/, '');
  const dir = path.join(vmCacheDir(), pkg);
  const kernel = { version, vmlinux: path.join(dir, 'vmlinux'), moduleDir: path.join(dir, 'modules') };
  if (existsSync(kernel.vmlinux) && existsSync(kernel.moduleDir)) return kernel;
  // a dir without both parts was not made by us (we rename complete dirs into place): start over
  if (existsSync(dir)) await fs.rm(dir, { recursive: true, force: true });

  await fs.mkdir(vmCacheDir(), { recursive: true });
  const tmp = await fs.mkdtemp(path.join(vmCacheDir(), `.${pkg}-`));
  try {
    await exec('apt-get', ['download', '-q', pkg], { cwd: tmp, timeoutMs: 600_000 });
    const deb = (await fs.readdir(tmp)).find((f) => f.endsWith('.deb'));
    if (!deb) throw new BerthError('NotFound', `apt-get download ${pkg} left no .deb in ${tmp}`);
    const x = path.join(tmp, 'x');
    await exec('dpkg-deb', ['-x', path.join(tmp, deb), x]);
    const vmlinuz = await fs.readFile(path.join(x, 'boot', `vmlinuz-${version}`));
    // bzImage = setup code + decompressor + an XZ payload; the payload is followed by a few trailer bytes,
    // hence --single-stream.
    const off = vmlinuz.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
    if (off < 0) throw new BerthError('Unsupported', `vmlinuz-${version}: no XZ payload found`);
    await fs.mkdir(path.join(tmp, 'out'));
    await fs.writeFile(path.join(tmp, 'out', 'vmlinux.xz'), vmlinuz.subarray(off));
    await exec('xz', ['-d', '--single-stream', path.join(tmp, 'out', 'vmlinux.xz')]);
    await fs.rename(path.join(x, 'lib', 'modules', version, 'kernel'), path.join(tmp, 'out', 'modules'));
    // The cache dir appears complete or not at all. Another test may have won the race (CI starts VM
    // tests in parallel on a fresh cache): then use its copy, never delete one that may be booting.
    try {
      await fs.rename(path.join(tmp, 'out'), dir);
    } catch (err) {
      if (!existsSync(kernel.vmlinux) || !existsSync(kernel.moduleDir)) throw err;
    }
    return kernel;
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

const norm = (m: string) => m.replace(/-/g, '_');

async function indexModules(moduleDir: string): Promise<Map<string, string>> {
  const index = new Map<string, string>();
  const files = (await fs.readdir(moduleDir, { recursive: true })) as string[];
  for (const f of files)
    if (f.endsWith('.ko')) index.set(norm(path.basename(f, '.ko')), path.join(moduleDir, f));
  return index;
}

/** `depends=` from a module's .modinfo section (NUL-separated key=value strings). */
function moduleDepends(ko: Buffer): string[] {
  const key = Buffer.from('\0depends=');
  const at = ko.indexOf(key);
  if (at < 0) return [];
  const end = ko.indexOf(0, at + key.length);
  const v = ko.subarray(at + key.length, end).toString('latin1');
  return v ? v.split(',') : [];
}

/** Modules to insmod, dependencies first. */
export async function resolveModules(moduleDir: string, wanted: readonly string[]): Promise<string[]> {
  const index = await indexModules(moduleDir);
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = async (name: string, chain: string[]) => {
    const n = norm(name);
    if (seen.has(n)) return;
    const file = index.get(n);
    if (!file)
      throw new BerthError('NotFound', `kernel module ${name} not in ${moduleDir} (${chain.join(' <- ')})`);
    seen.add(n);
    for (const dep of moduleDepends(await fs.readFile(file))) await visit(dep, [name, ...chain]);
    order.push(file);
  };
  for (const m of wanted) await visit(m, []);
  return order;
}

/** newc cpio writer: enough for dirs, regular files and symlinks. */
class Cpio {
  private chunks: Buffer[] = [];
  private ino = 1;
  private add(name: string, mode: number, data: Buffer): void {
    const hex = (n: number) => n.toString(16).padStart(8, '0');
    const nameBuf = Buffer.from(`${name}\0`);
    const fields = [this.ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, nameBuf.length, 0];
    const head = Buffer.from(`070701${fields.map(hex).join('')}`);
    const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
    this.chunks.push(head, nameBuf, pad(head.length + nameBuf.length), data, pad(data.length));
  }
  dir(name: string): void {
    this.add(name, 0o040755, Buffer.alloc(0));
  }
  file(name: string, data: Buffer, mode = 0o644): void {
    this.add(name, 0o100000 | mode, data);
  }
  symlink(name: string, target: string): void {
    this.add(name, 0o120777, Buffer.from(target));
  }
  finish(): Buffer {
    this.add('TRAILER!!!', 0, Buffer.alloc(0));
    return Buffer.concat(this.chunks);
  }
}

/** Build (once per content) the initramfs for `kernel` with `modules`; returns its path. */
export async function ensureInitramfs(
  kernel: Kernel,
  modules: readonly string[] = BASE_MODULES,
): Promise<string> {
  const init = await fs.readFile(path.join(HERE, 'guest-init.sh'));
  const kos = await resolveModules(kernel.moduleDir, modules);
  const busybox = await fs.readFile('/bin/busybox');
  const h = createHash('sha256');
  h.update(init)
    .update(kernel.version)
    .update(kos.join('\n'))
    .update(createHash('sha256').update(busybox).digest());
  const out = path.join(vmCacheDir(), `initramfs-${h.digest('hex').slice(0, 16)}.cpio`);
  if (existsSync(out)) return out;

  const c = new Cpio();
  for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'run', 'mnt', 'usr', 'etc', 'root', 'kmod']) c.dir(d);
  c.symlink('lib', 'usr/lib');
  c.symlink('lib64', 'usr/lib64');
  c.symlink('sbin', 'usr/sbin');
  c.file('bin/busybox', busybox, 0o755);
  const applets = (await exec('/bin/busybox', ['--list'])).stdout.split('\n').filter(Boolean);
  for (const a of applets) if (a !== 'busybox') c.symlink(`bin/${a}`, 'busybox');
  c.file('init', init, 0o755);
  c.file(
    'etc/passwd',
    Buffer.from('root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n'),
  );
  c.file('etc/group', Buffer.from('root:x:0:\nnogroup:x:65534:\n'));
  c.file('etc/hosts', Buffer.from('127.0.0.1 localhost berth-vm\n'));
  for (const etc of ['mke2fs.conf', 'ld.so.cache']) {
    if (existsSync(`/etc/${etc}`)) c.file(`etc/${etc}`, await fs.readFile(`/etc/${etc}`));
  }
  for (const ko of kos) c.file(`kmod/${path.basename(ko)}`, await fs.readFile(ko));
  c.file('kmod/load-order', Buffer.from(kos.map((k) => path.basename(k)).join('\n') + '\n'));
  const tmp = `${out}.${process.pid}.tmp`;
  await fs.writeFile(tmp, c.finish());
  await fs.rename(tmp, out);
  return out;
}

// mitigations=off: a throw-away test guest; retpolines and friends make every syscall dearer under TCG
const KERNEL_ARGS = 'console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off rdinit=/init';

const SHARE_PATH = /^\/[A-Za-z0-9_./+@-]*$/;

/** Boot the VM, run `opts.script` as root, return its exit code and output. */
export async function runInVm(opts: RunInVmOptions): Promise<RunInVmResult> {
  const kernel = await ensureKernel();
  const initrd = await ensureInitramfs(kernel, [...BASE_MODULES, ...(opts.modules ?? [])]);
  const runDir = await fs.mkdtemp(path.join(os.tmpdir(), 'berth-vm-run-'));
  try {
    await fs.writeFile(path.join(runDir, 'cmd.sh'), opts.script);
    const env = { BERTH_IN_VM: '1', ...opts.env };
    const envLines = Object.entries(env).map(([k, v]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new BerthError('InvalidInput', `bad env name ${k}`);
      return `export ${k}='${v.replace(/'/g, `'\\''`)}'`;
    });
    await fs.writeFile(path.join(runDir, 'env.sh'), `${envLines.join('\n')}\n`);

    const shares: Array<VmShare & { tag: string }> = [];
    const all = [...(opts.shareDir ? [{ hostPath: opts.shareDir }] : []), ...(opts.shares ?? [])];
    for (const [i, s] of all.entries()) {
      const hostPath = path.resolve(s.hostPath);
      if (!SHARE_PATH.test(hostPath) || hostPath === '/usr' || hostPath.startsWith('/usr/')) {
        throw new BerthError('InvalidInput', `share ${hostPath}: use a plain absolute path outside /usr`);
      }
      shares.push({ ...s, hostPath, tag: `s${i}` });
    }
    const args = [
      ...['-accel', 'tcg', '-cpu', 'max', '-m', String(opts.memoryMiB ?? 1024), '-smp', '1'],
      ...['-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-monitor', 'none'],
      ...['-no-reboot', '-bios', '/usr/share/qemu/qboot.rom', '-kernel', kernel.vmlinux, '-initrd', initrd],
    ];
    const shareArg = shares.map((s) => `${s.tag}:${s.hostPath}:${s.readonly ? 'ro' : 'rw'}`).join(',');
    const cwd = shares[0]?.hostPath ?? '/root';
    args.push(
      '-append',
      `${KERNEL_ARGS} ${process.env.BERTH_VM_KERNEL_ARGS ?? ''} berth.shares=${shareArg || '-'} berth.cwd=${cwd}`,
    );
    args.push('-virtfs', 'local,path=/usr,mount_tag=hostusr,security_model=none,readonly=on');
    args.push('-virtfs', `local,path=${runDir},mount_tag=berthrun,security_model=none`);
    for (const s of shares) {
      args.push(
        '-virtfs',
        `local,path=${s.hostPath},mount_tag=${s.tag},security_model=none${s.readonly ? ',readonly=on' : ''}`,
      );
    }
    for (const [i, d] of (opts.disks ?? []).entries()) {
      const file = path.join(runDir, `disk${i}.img`);
      await fs.writeFile(file, '');
      await fs.truncate(file, d.sizeBytes);
      args.push('-drive', `file=${file},format=raw,if=virtio,cache=unsafe`);
    }
    const started = Date.now();
    const r = await exec('qemu-system-x86_64', args, {
      allowFailure: true,
      timeoutMs: opts.timeoutMs ?? 240_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    const wallMs = Date.now() - started;
    return parseConsole(r.stdout + (r.stderr ? `\n${r.stderr}` : ''), wallMs);
  } finally {
    await fs.rm(runDir, { recursive: true, force: true });
  }
}

/** Split the serial console into the script's output and the result marker. Pure, for tests. */
export function parseConsole(raw: string, wallMs: number): RunInVmResult {
  const log = raw.replace(/\r/g, '');
  const begin = /^BERTH-VM-BEGIN uptime=([\d.]+)$/m.exec(log);
  const result = /^BERTH-VM-RESULT code=(\d+) uptime=([\d.]+)$/m.exec(log);
  const from = begin ? begin.index + begin[0].length + 1 : 0;
  const to = result ? result.index : log.length;
  return {
    code: result ? Number(result[1]) : -1,
    output: begin ? log.slice(from, Math.max(from, to)) : '',
    console: log,
    wallMs,
    guestStartS: begin ? Number(begin[1]) : undefined,
    guestEndS: result ? Number(result[2]) : undefined,
  };
}
