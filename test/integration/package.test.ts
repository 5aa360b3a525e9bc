/**
 * Builds the four single-file executables with `scripts/package.mjs` (addon builds cached under
 * ~/.cache/berth-package, two arches at a time) and checks each on its arch (qemu-user for the foreign
 * ones): it starts and reports its payload, opens SQLite through the extracted addon, publishes its online
 * status to a real Mosquitto, and its .deb unpacks with the expected files. On x64 it also imports a
 * busybox image and runs a container from it with the embedded berth-runtime and berth-monitor.
 * BERTH_PACKAGE_TEST_ARCHES=x64 (a comma list) builds and checks only those arches (x64 takes ~1.5 min,
 * all four 7-13 min); the x64-only tests need x64 in it.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import { buildBusyboxImage } from '../helpers/images.js';
import {
  type ArchDef,
  execFileAsync,
  loadArchDef,
  ROOT,
  retained,
  runExe,
  runNative,
  startMosquitto,
} from '../helpers/package-fixtures.js';
import { needPrivileges } from '../helpers/privileged.js';

const ALL_ARCHES = ['x64', 'arm64', 'armv7', 'ppc64le'];
const ARCHES = process.env.BERTH_PACKAGE_TEST_ARCHES
  ? ALL_ARCHES.filter((a) => process.env.BERTH_PACKAGE_TEST_ARCHES!.split(',').includes(a))
  : ALL_ARCHES;
const BUILD_TIMEOUT = 40 * 60_000;

const outDir = mkdtempSync(path.join(tmpdir(), 'berth-package-test-'));
test.after.always(() => rmSync(outDir, { recursive: true, force: true }));

interface Manifest {
  arch: string;
  packager: string;
  node: string;
  size: number;
  sha256: string;
  deb: string;
  embedded: Array<{ name: string; sha256: string; size: number }>;
}

let build: Promise<void> | undefined;
/** One packaging run for all arches, shared by the tests (the script runs two arches at a time). */
function packageAll(): Promise<void> {
  build ??= promisify(execFile)(
    process.execPath,
    [path.join(ROOT, 'scripts', 'package.mjs'), '--out', outDir, ...ARCHES.flatMap((a) => ['--arch', a])],
    {
      cwd: ROOT,
      maxBuffer: 64 << 20,
    },
  ).then(({ stderr }) => {
    process.stderr.write(stderr);
  });
  return build;
}

function manifestOf(arch: string): Manifest {
  return JSON.parse(readFileSync(path.join(outDir, `berth-linux-${arch}.json`), 'utf8')) as Manifest;
}

function tempDir(t: ExecutionContext, name: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `berth-pkg-${name}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

let broker: Awaited<ReturnType<typeof startMosquitto>> | undefined;
test.before(async () => {
  broker = await startMosquitto();
});
test.after.always(() => broker?.stop());

for (const arch of ARCHES) {
  test(`${arch}: executable starts, opens SQLite, publishes online status, has a .deb`, async (t) => {
    t.timeout(BUILD_TIMEOUT);
    await packageAll();
    const def: ArchDef = loadArchDef(arch);
    const exe = path.join(outDir, `berth-linux-${arch}`);
    const m = manifestOf(arch);
    t.is(m.node, `${def.node.package}@${def.node.version}`);
    t.is(sha256(exe), m.sha256);

    // version: arch, Node, and the hashes of what is embedded
    const v = await runExe(def, exe, ['version', '--json']);
    t.is(v.code, 0, v.stderr);
    const info = JSON.parse(v.stdout) as { arch: string; node: string; native: Record<string, string> };
    t.is(info.arch, def.nodeArch);
    t.is(info.node, `v${def.node.version}`);
    for (const e of m.embedded) t.is(info.native[e.name], e.sha256, e.name);

    // SQLite through the extracted addon, in a fresh state dir (the image store's database)
    const state = tempDir(t, `${arch}-state`);
    const env = { ...process.env, HOME: tempDir(t, `${arch}-home`), BERTH_LOG_LEVEL: 'warn' };
    const ls = await runExe(def, exe, ['--state-dir', state, 'image', 'ls', '--json'], env);
    t.is(ls.code, 0, ls.stderr);
    t.deepEqual(JSON.parse(ls.stdout), []);
    t.true(existsSync(path.join(state, 'berth.db')));
    const extracted = (await execFileAsync('find', [path.join(state, 'native'), '-type', 'f'])).stdout
      .trim()
      .split('\n');
    const addon = extracted.find((f) => f.endsWith('/better_sqlite3.node'));
    t.truthy(addon, 'addon extracted into <state>/native');
    t.is(sha256(addon!), m.embedded.find((e) => e.name === 'better_sqlite3.node')!.sha256);

    // what `make -C native ARCH=<arch>` built is what got embedded
    const nativeBuild = path.join(ROOT, 'native', 'build', arch);
    const built = existsSync(nativeBuild)
      ? readdirSync(nativeBuild).filter((f) => f.startsWith('berth-'))
      : [];
    t.deepEqual(
      m.embedded.filter((e) => e.name.startsWith('berth-')).map((e) => e.name),
      built.sort(),
    );

    // every embedded native program resolves to its extracted, sha256-identical copy, which runs
    for (const part of m.embedded.filter((e) => e.name.startsWith('berth-'))) {
      const r = await runExe(
        def,
        exe,
        ['--state-dir', state, 'native-path', part.name.slice('berth-'.length)],
        env,
      );
      t.is(r.code, 0, r.stderr);
      const file = r.stdout.trim();
      t.true(file.startsWith(path.join(state, 'native')), file);
      t.is(sha256(file), part.sha256);
      const run = await runNative(def, file, []);
      t.true(run.code >= 0 && run.code < 126, `${part.name} did not run: ${run.code} ${run.stderr}`);
      if (part.name === 'berth-storage') t.regex(run.stderr, /usage: berth-storage/);
    }

    // online status on a real broker, read back as the retained message
    const topic = `berth/v1/test/devices/pkg-${arch}/status`;
    const ping = await runExe(def, exe, ['mqtt-ping', '--broker', broker!.url, '--topic', topic], env);
    t.is(ping.code, 0, ping.stderr);
    const status = JSON.parse(await retained(broker!.port, topic)) as { online: boolean; arch: string };
    t.true(status.online);
    t.is(status.arch, arch);

    // the .deb: unpacks into a temp root with the executable, unit, config and maintainer scripts
    const deb = path.join(outDir, m.deb);
    t.is((await execFileAsync('dpkg-deb', ['-f', deb, 'Architecture'])).stdout.trim(), def.debArch);
    const root = tempDir(t, `${arch}-root`);
    await execFileAsync('dpkg-deb', ['-x', deb, root]);
    await execFileAsync('dpkg-deb', ['-e', deb, path.join(root, 'DEBIAN')]);
    t.is(sha256(path.join(root, 'usr/bin/berth')), m.sha256);
    t.is(statSync(path.join(root, 'usr/bin/berth')).mode & 0o111, 0o111);
    const unit = readFileSync(path.join(root, 'lib/systemd/system/berth.service'), 'utf8');
    t.regex(unit, /^ExecStart=\/usr\/bin\/berth /m);
    t.regex(unit, /^KillMode=process$/m);
    t.regex(unit, /^Restart=on-failure$/m);
    // No V8 flag in the unit: one would make V8 reject the executable's code cache at every start (Node
    // then prints "Code cache data rejected" — a journal with a warning at every boot reads like a fault).
    // The agent sets its memory habits itself (src/agent/memory.ts).
    t.notRegex(unit, /^Environment=.*NODE_OPTIONS/m, 'the unit passes no Node options');
    const started = await runExe(def, path.join(root, 'usr/bin/berth'), ['version'], env);
    t.is(started.code, 0, started.stderr);
    t.is(started.stderr, '', 'nothing on stderr: the code cache is accepted');
    t.true(existsSync(path.join(root, 'etc/berth/config.yaml')));
    t.regex(readFileSync(path.join(root, 'DEBIAN/postinst'), 'utf8'), /install -d -m 0700 \/var\/lib\/berth/);
    t.is(readFileSync(path.join(root, 'DEBIAN/conffiles'), 'utf8'), '/etc/berth/config.yaml\n');
    if (arch === 'armv7') t.regex(readFileSync(path.join(root, 'DEBIAN/control'), 'utf8'), /libatomic1/);

    // the packaged default config is one berth accepts (arch-independent: checked natively only)
    if (!def.qemu) {
      const withConfig = await runExe(
        def,
        path.join(root, 'usr/bin/berth'),
        ['--config', path.join(root, 'etc/berth/config.yaml'), '--state-dir', tempDir(t, 'cfg'), 'db-check'],
        env,
      );
      t.is(withConfig.code, 0, withConfig.stderr);
      const dbInfo = JSON.parse(withConfig.stdout) as { journalMode: string; schemaVersion: number };
      t.is(dbInfo.journalMode, 'wal');
      t.true(dbInfo.schemaVersion >= 1);
    }
  });
}

test('x64: a noexec extraction dir is refused with a clear error; a noexec state dir falls back', async (t) => {
  t.timeout(BUILD_TIMEOUT);
  if (!needPrivileges(t, { root: true })) return;
  await packageAll();
  const def = loadArchDef('x64');
  const exe = path.join(outDir, 'berth-linux-x64');
  const mnt = tempDir(t, 'noexec');
  await execFileAsync('mount', ['-t', 'tmpfs', '-o', 'noexec,size=64m', 'tmpfs', mnt]);
  t.teardown(() => execFileAsync('umount', ['-l', mnt]).catch(() => undefined));
  const home = tempDir(t, 'noexec-home');
  const env = { ...process.env, HOME: home, XDG_CACHE_HOME: '', BERTH_LOG_LEVEL: 'warn' };

  // `version` extracts nothing, so it runs wherever the state dir is
  const v = await runExe(def, exe, ['--state-dir', path.join(mnt, 'state'), 'version'], env);
  t.is(v.code, 0, v.stderr);

  const refused = await runExe(def, exe, ['--state-dir', tempDir(t, 'state-ok'), 'db-check'], {
    ...env,
    BERTH_NATIVE_CACHE: path.join(mnt, 'native'),
  });
  t.is(refused.code, 1);
  t.regex(refused.stderr, /PermissionDenied: .*cannot extract berth's embedded native parts/);
  t.regex(refused.stderr, new RegExp(`filesystem at ${mnt} is mounted noexec`));

  const fellBack = await runExe(def, exe, ['--state-dir', path.join(mnt, 'state'), 'db-check'], env);
  t.is(fellBack.code, 0, fellBack.stderr);
  t.true(existsSync(path.join(mnt, 'state', 'berth.db')));
  t.true(existsSync(path.join(home, '.cache', 'berth', 'native')));
});

test('install.sh installs executable, unit and config into a root', async (t) => {
  t.timeout(BUILD_TIMEOUT);
  await packageAll();
  const root = tempDir(t, 'install-root');
  const exe = path.join(outDir, 'berth-linux-x64');
  await execFileAsync('sh', [path.join(ROOT, 'packaging', 'install.sh'), '--root', root, exe]);
  t.is(sha256(path.join(root, 'usr/local/bin/berth')), sha256(exe));
  t.regex(
    readFileSync(path.join(root, 'etc/systemd/system/berth.service'), 'utf8'),
    /^ExecStart=\/usr\/local\/bin\/berth /m,
  );
  t.true(existsSync(path.join(root, 'etc/berth/config.yaml')));
  t.is(statSync(path.join(root, 'var/lib/berth')).mode & 0o777, 0o700);
});

test('x64: the executable imports a busybox image and runs a container from it (berth-runtime, monitor, overlay)', async (t) => {
  t.timeout(BUILD_TIMEOUT);
  if (!needPrivileges(t, { root: true })) return;
  await packageAll();
  const def = loadArchDef('x64');
  const exe = path.join(outDir, 'berth-linux-x64');
  const work = tempDir(t, 'run');
  const img = buildBusyboxImage(work);
  const state = path.join(work, 'state');
  const env = { ...process.env, HOME: tempDir(t, 'run-home'), BERTH_LOG_LEVEL: 'warn' };
  const berthX = (args: string[]) => runExe(def, exe, ['--state-dir', state, ...args], env);
  const imp = await berthX(['image', 'import', img.layout, '--tag', 'bb:1']);
  t.is(imp.code, 0, imp.stderr);
  t.teardown(async () => {
    await berthX(['rm', '-f', 'pkg-run']);
  });
  const run = await berthX([
    'run',
    '--name',
    'pkg-run',
    '--network',
    'none',
    'bb:1',
    'sh',
    '-c',
    'echo packaged-$((6*7)); id -u',
  ]);
  t.is(run.code, 0, run.stderr);
  t.is(run.stdout, 'packaged-42\n0\n');
  const ps = await berthX(['ps', '-a', '--json']);
  t.is(ps.code, 0, ps.stderr);
  const list = JSON.parse(ps.stdout) as Array<{ name: string; exitCode?: number; state: string }>;
  t.is(list.find((c) => c.name === 'pkg-run')?.exitCode, 0);
  // the runtime and monitor that ran it are the embedded, extracted ones
  const extracted = (await execFileAsync('find', [path.join(state, 'native'), '-name', 'berth-*'])).stdout;
  t.regex(extracted, /berth-runtime/);
  t.regex(extracted, /berth-monitor/);
});
