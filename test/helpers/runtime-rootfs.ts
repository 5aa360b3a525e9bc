/**
 * Fixtures for the runtime tests: a busybox-static rootfs (busybox + one symlink per applet, /etc/passwd
 * and /etc/group with a non-root user), unique ids and temp dirs removed at teardown.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { exec } from '../../src/lib/exec.js';

const BUSYBOX = ['/usr/bin/busybox', '/bin/busybox'].find((p) => existsSync(p)) ?? '/bin/busybox';

export async function buildBusyboxRootfs(dir: string): Promise<string> {
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root', 'home/app', 'var/www']) {
    await fsp.mkdir(path.join(dir, d), { recursive: true });
  }
  await fsp.chmod(dir, 0o755);
  await fsp.chmod(path.join(dir, 'tmp'), 0o1777);
  await fsp.copyFile(BUSYBOX, path.join(dir, 'bin', 'busybox'));
  await fsp.chmod(path.join(dir, 'bin', 'busybox'), 0o755);
  const { stdout } = await exec(BUSYBOX, ['--list']);
  for (const applet of stdout.split('\n').filter((a) => a && a !== 'busybox')) {
    await fsp.symlink('busybox', path.join(dir, 'bin', applet)).catch(() => undefined);
  }
  await fsp.writeFile(
    path.join(dir, 'etc', 'passwd'),
    'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n',
  );
  await fsp.writeFile(
    path.join(dir, 'etc', 'group'),
    'root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n',
  );
  await fsp.writeFile(path.join(dir, 'var', 'www', 'index.html'), 'hello from berth\n');
  // bind-mount targets exist up front, so parallel containers on a shared rootfs never race to create them
  for (const f of ['hosts', 'hostname', 'resolv.conf']) await fsp.writeFile(path.join(dir, 'etc', f), '');
  return dir;
}

/** A temp dir removed at teardown (after the test's own teardowns registered later run first). */
export async function tempDir(t: ExecutionContext, prefix = 'berth-rt-'): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

export function uniqueId(prefix = 't'): string {
  return `${prefix}${process.pid.toString(36)}${randomBytes(4).toString('hex')}`;
}

let shared: { dir: string; rootfs: Promise<string> } | undefined;
/**
 * One busybox rootfs per test process (containers that write use their own). Test files that use it
 * call `test.after.always(removeSharedBusyboxRootfs)`: ava workers do not reliably run 'exit' handlers.
 */
export function sharedBusyboxRootfs(): Promise<string> {
  if (!shared) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-rootfs-'));
    // not the mkdtemp dir itself: that is 0700, and a non-root container user could not search "/"
    shared = { dir, rootfs: buildBusyboxRootfs(path.join(dir, 'rootfs')) };
  }
  return shared.rootfs;
}

export async function removeSharedBusyboxRootfs(): Promise<void> {
  if (!shared) return;
  const { dir, rootfs } = shared;
  shared = undefined;
  await rootfs.catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}

/** Runtimes available on this machine: runc, crun, and berth-runtime once native/build has it. */
export function availableRuntimes(): Array<{ name: 'berth' | 'runc' | 'crun'; binary: string }> {
  const out: Array<{ name: 'berth' | 'runc' | 'crun'; binary: string }> = [];
  const arch = process.arch === 'x64' ? 'x64' : process.arch;
  const berth = path.resolve('native', 'build', arch, 'berth-runtime');
  if (existsSync(berth)) out.push({ name: 'berth', binary: berth });
  for (const [name, file] of [
    ['runc', '/usr/sbin/runc'],
    ['runc', '/usr/bin/runc'],
    ['crun', '/usr/bin/crun'],
  ] as const) {
    if (existsSync(file) && !out.some((r) => r.name === name)) out.push({ name, binary: file });
  }
  return out;
}
