/**
 * berth-runtime tests in the test VM (test/vm): a share with a busybox rootfs, the static berth-runtime and
 * bundles, a guest shell script that prints `RESULT <name> <value>` lines, and the kernel package's own
 * modules shared read-only so the guest can insmod one mid-test (BFQ). One virtio disk (/dev/vda) is
 * attached; its major:minor is only known in the guest, so configs carry placeholders the guest replaces.
 */
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { ensureKernel, runInVm } from '../vm/vm.js';
import {
  berthRuntimeBinary,
  buildNativeRuntime,
  makeBusyboxRootfs,
  type OciConfig,
} from './runtime-native.js';

/** Stand-ins for the guest disk's major and minor in a config (`sed s/DISK_MAJOR/…/` in the guest). */
export const DISK = [987654321, 987654322] as const;

export interface VmShare {
  dir: string;
  rootfs: string;
  /** The kernel package's module directory (shared read-only with the guest). */
  moduleDir: string;
}

/** A share dir (removed in teardown) with a busybox rootfs and the static berth-runtime. */
export async function vmShare(t: ExecutionContext, prefix: string): Promise<VmShare> {
  await buildNativeRuntime();
  const kernel = await ensureKernel();
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await chmod(dir, 0o755);
  const rootfs = await makeBusyboxRootfs(dir);
  await copyFile(berthRuntimeBinary(false), path.join(dir, 'berth-runtime'));
  await chmod(path.join(dir, 'berth-runtime'), 0o755);
  return { dir, rootfs, moduleDir: kernel.moduleDir };
}

/** Write each config as <dir>/<name>/config.json, DISK placeholders as bare words the guest replaces. */
export async function writeBundles(dir: string, bundles: Record<string, OciConfig>): Promise<void> {
  for (const [name, c] of Object.entries(bundles)) {
    await mkdir(path.join(dir, name));
    const json = JSON.stringify(c)
      .replace(`"major":${DISK[0]}`, '"major":DISK_MAJOR')
      .replace(`"minor":${DISK[1]}`, '"minor":DISK_MINOR');
    await writeFile(path.join(dir, name, 'config.json'), json);
  }
}

/** Boot the VM on the share, run script (SHARE and BFQ_KO set, plus env), return its RESULT lines. */
export async function runGuest(
  t: ExecutionContext,
  share: VmShare,
  script: string,
  env: Record<string, string> = {},
): Promise<Map<string, string>> {
  const r = await runInVm({
    script,
    shareDir: share.dir,
    shares: [{ hostPath: share.moduleDir, readonly: true }],
    disks: [{ sizeBytes: 16 << 20 }],
    env: { SHARE: share.dir, BFQ_KO: path.join(share.moduleDir, 'block', 'bfq.ko'), ...env },
    timeoutMs: 14 * 60_000,
  });
  t.log(`VM: wall ${(r.wallMs / 1000).toFixed(1)} s, exit ${r.code}`);
  if (r.code !== 0) t.log(r.console.slice(-4000));
  const results = new Map<string, string>();
  for (const line of r.output.split('\n')) {
    const m = /^RESULT (\S+) ?(.*)$/.exec(line.trim());
    if (m?.[1]) results.set(m[1], m[2] ?? '');
  }
  t.log([...results].map(([k, v]) => `${k}=${v}`).join(' '));
  return results;
}
