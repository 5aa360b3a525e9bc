/**
 * The static cross builds (arm64, armv7, ppc64le) compile with -Wall -Wextra -Werror and run under
 * qemu-user: version, a missing container, and config validation (JSON parser, spec checks, seccomp
 * compilation with the arch's own syscall table) all before any namespace work.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { exec } from '../../../src/lib/exec.js';
import { needPrivileges } from '../../helpers/privileged.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..', '..');
const ARCHES = [
  { arch: 'arm64', qemu: '/usr/bin/qemu-aarch64-static' },
  { arch: 'armv7', qemu: '/usr/bin/qemu-arm-static' },
  { arch: 'ppc64le', qemu: '/usr/bin/qemu-ppc64le-static' },
];

for (const { arch, qemu } of ARCHES) {
  test(`berth-runtime builds for ${arch} and validates configs under qemu-user`, async (t) => {
    if (!needPrivileges(t, { root: false, paths: [qemu] })) return;
    await exec('make', ['-C', path.join(ROOT, 'native'), `ARCH=${arch}`], { timeoutMs: 600_000 });
    const bin = path.join(ROOT, 'native', 'build', arch, 'berth-runtime');
    const dir = await mkdtemp(path.join(tmpdir(), `berth-cross-${arch}-`));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const run = (args: string[]) =>
      exec(qemu, [bin, '--root', path.join(dir, 'state'), ...args], { allowFailure: true });
    const v = await run(['--version']);
    t.is(v.code, 0);
    t.regex(v.stdout, /berth-runtime version/);
    const missing = await run(['state', 'nope']);
    t.is(missing.code, 1);
    t.regex(missing.stderr, /container `nope` does not exist/);
    await mkdir(path.join(dir, 'bundle', 'rootfs'), { recursive: true });
    const config = {
      ociVersion: '1.0.2',
      process: {
        args: ['/bin/true'],
        cwd: '/',
        rlimits: [{ type: 'RLIMIT_NOFILE', soft: 10, hard: 18446744073709551615n.toString() }],
      },
      root: { path: 'rootfs' },
      linux: {
        namespaces: [{ type: 'mount' }],
        seccomp: {
          defaultAction: 'SCMP_ACT_ALLOW',
          syscalls: [{ names: ['mkdirat'], action: 'SCMP_ACT_BOGUS' }],
        },
      },
    };
    await writeFile(
      path.join(dir, 'bundle', 'config.json'),
      JSON.stringify(config).replace('"18446744073709551615"', '18446744073709551615'),
    );
    const bad = await run(['create', '--bundle', path.join(dir, 'bundle'), 'c1']);
    t.is(bad.code, 1);
    t.regex(
      bad.stderr,
      /linux\.seccomp\.syscalls\[0\]: seccomp: unsupported action `SCMP_ACT_BOGUS`/,
      'parsed up to the seccomp compiler',
    );
  });
}
