/**
 * What a newcomer gets when something is wrong, through the built CLI: usage errors and invalid files exit
 * 2 (the README's promise), docker verbs berth lacks say what to do instead, and state-dir, `run` option
 * and file problems are coded errors naming the input — never a raw errno or SQLite's "unable to open
 * database file" — and a failed `run` leaves no container behind.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { connectAgent } from '../../src/agent/api-client.js';
import { exec } from '../../src/lib/exec.js';
import { BERTH_BUNDLE, berth, tempDir } from '../helpers/cli.js';
import { needPrivileges } from '../helpers/privileged.js';
import { cliEnv, waitUntil } from '../helpers/runtime-cli.js';
import { removeSharedBusyboxRootfs } from '../helpers/runtime-rootfs.js';

test.after.always(removeSharedBusyboxRootfs);

const RAW = /ENOENT|EEXIST|ENAMETOOLONG|EROFS,|unable to open database file|Internal/;

test('usage errors exit 2; help asked for exits 0', (t) => {
  const state = tempDir('usage');
  for (const args of [['nosuch'], ['ps', '--bogus'], ['logs'], ['image', 'import'], []]) {
    const r = berth(['--state-dir', state, ...args]);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
  }
  t.is(berth(['--help']).code, 0);
  t.is(berth(['ps', '--help']).code, 0);
});

test('docker verbs berth does not have say what to use instead (exit 2)', (t) => {
  const build = berth(['build', '-t', 'x', '.']);
  t.is(build.code, 2);
  t.is(
    build.stderr,
    'berth: Unsupported: berth build: berth does not build images; build with docker/buildah and `berth image import` (or `berth fleet push`)\n',
  );
  for (const [verb, hint] of [
    ['push', /berth fleet push/],
    ['load', /berth image import/],
    ['compose', /berth fleet deploy compose\.yml/],
    ['network', /--network bridge\|host\|none/],
  ] as const) {
    const r = berth([verb, 'anything', '--with-flags']);
    t.is(r.code, 2, verb);
    t.regex(r.stderr, hint, verb);
  }
});

test('YAML and validation errors exit 2 and name the file and line', (t) => {
  const dir = tempDir('yaml');
  const broken = path.join(dir, 'compose.yml');
  writeFileSync(broken, 'name: demo\nservices:\n  web:\n    image: [x\n');
  const r = berth(['target', 'validate', broken]);
  t.is(r.code, 2);
  t.regex(r.stderr, new RegExp(`InvalidInput: ${broken} is not valid YAML/JSON:\\n {2}${broken}:5:1: `));

  const invalid = path.join(dir, 'app.yaml');
  writeFileSync(invalid, 'name: demo\nservices:\n  web:\n    imag: x\n    ports: ["1:2:3:4"]\n');
  const v = berth(['target', 'validate', invalid]);
  t.is(v.code, 2);
  t.regex(v.stderr, new RegExp(`${invalid}: 3 problems:`));
  t.regex(
    v.stderr,
    new RegExp(`${invalid}:4:5: services\\.web\\.imag: unknown key "imag" \\(did you mean "image"\\?\\)`),
  );
  t.regex(v.stderr, new RegExp(`${invalid}:5:13: services\\.web\\.ports\\[0\\]: invalid port`));

  const valid = path.join(dir, 'ok.yaml');
  writeFileSync(valid, 'name: demo\nservices:\n  web:\n    image: x:1\n  db:\n    image: y:2\n');
  const listing = berth(['target', 'validate', valid, '--format', '{{.Service}}={{.Image}}']);
  t.is(listing.code, 0, listing.stderr);
  t.is(listing.stdout, 'web=x:1\ndb=y:2\n', 'listings take --format templates');

  const cfg = path.join(dir, 'berth.yaml');
  writeFileSync(cfg, 'storage:\n  driver: [btrfs\n');
  const c = berth(['--config', cfg, '--state-dir', path.join(dir, 's'), 'image', 'ls']);
  t.is(c.code, 2);
  t.regex(c.stderr, new RegExp(`${cfg}:3:1: `));
});

test('state dir problems: a file, a file in the path, a name too long — coded, naming the input', (t) => {
  const dir = tempDir('statedir');
  const file = path.join(dir, 'a-file');
  writeFileSync(file, 'x');
  const isFile = berth(['--state-dir', file, 'ps']);
  t.is(isFile.code, 2);
  t.is(isFile.stderr, `berth: InvalidInput: state dir ${file} is a file, not a directory\n`);
  const below = berth(['--state-dir', path.join(file, 'sub'), 'image', 'ls']);
  t.is(below.code, 2);
  t.regex(below.stderr, new RegExp(`state dir ${file}/sub: ${file} is a file, not a directory`));
  const long = berth(['--state-dir', path.join(dir, 'x'.repeat(600)), 'ps']);
  t.is(long.code, 2);
  t.regex(
    long.stderr,
    /InvalidInput: state dir .*\(\d+ characters\): a path component is 600 bytes long \(at most 255\)/,
  );
  for (const r of [isFile, below, long]) t.notRegex(r.stderr, RAW);
});

test('state dir on a read-only filesystem: PermissionDenied naming the cause, not ENOENT or SQLite', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/usr/bin/mount'] })) return;
  const ro = path.join(tempDir('rofs'), `ro-${process.pid}-${randomBytes(3).toString('hex')}`);
  mkdirSync(ro);
  await exec('/usr/bin/mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', ro]);
  t.teardown(() => exec('/usr/bin/umount', [ro], { allowFailure: true }));
  const inside = berth(['--state-dir', path.join(ro, 'state'), 'ps']);
  t.is(inside.code, 1);
  t.is(
    inside.stderr,
    `berth: PermissionDenied: state dir ${ro}/state: cannot create ${ro}/state: read-only filesystem\n`,
  );
  const itself = berth(['--state-dir', ro, 'image', 'ls']);
  t.is(itself.code, 1);
  t.is(itself.stderr, `berth: PermissionDenied: state dir ${ro}: not writable: read-only filesystem\n`);
});

test('run: bad --cpus, --pids-limit, --memory, -v are InvalidInput naming the input, before anything is made', (t) => {
  const state = tempDir('run-opts');
  const cases: Array<[string[], RegExp]> = [
    [['--cpus', 'abc'], /--cpus abc: expected a number of CPUs greater than 0/],
    [['--cpus', '0'], /--cpus 0: expected a number of CPUs greater than 0/],
    [['--pids-limit', '1.5'], /--pids-limit 1\.5: expected a whole number/],
    [['--memory', 'lots'], /--memory lots: expected a size/],
    [['-v', 'relative:/x'], /-v relative:\/x: the host path "relative" must be absolute/],
    [['-v', '/tmp:rel'], /-v \/tmp:rel: the container path "rel" must be absolute/],
  ];
  for (const [opts, re] of cases) {
    const r = berth(['--state-dir', state, 'run', ...opts, '--network', 'none', '--rootfs', '/tmp', 'true']);
    t.is(r.code, 2, `${opts.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, re);
    t.notRegex(r.stderr, /NaN|Internal/);
  }
  t.is(berth(['--state-dir', state, 'ps', '-a', '--format', '{{.ID}}']).stdout, '', 'no container made');
});

test('a run that fails (missing bind source, a command that cannot start) leaves nothing behind', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t);
  const missing = await env.berth(
    ['run', '-v', '/no/such/dir:/x', '--network', 'none', '--rootfs', env.rootfs, 'true'],
    { allowFailure: true },
  );
  t.is(missing.code, 1);
  t.regex(missing.stderr, /NotFound: bind mount source \/no\/such\/dir \(for \/x\) does not exist/);
  const noCmd = await env.berth(['run', '-d', '--rootfs', env.rootfs, '/no/such/command'], {
    allowFailure: true,
  });
  t.not(noCmd.code, 0);
  t.deepEqual(await env.ps(), [], 'no container left in Created');
  const leases = await env.berth(['run', '-d', '--rootfs', env.rootfs, 'sh', '-c', 'sleep 100']);
  const ip = (await env.ps())[0]!.ipAddress as string;
  t.regex(ip, /\.2$/, 'the failed run gave its address back');
  await env.berth(['rm', '-f', leases.stdout.trim()]);
});

test('logs: a terminal gets human lines, a pipe gets JSON; a normal agent start and stop warns about nothing', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/usr/bin/script'] })) return;
  const run = async (viaTerminal: boolean, extra: string[] = []) => {
    const state = tempDir('logfmt');
    const argv = [BERTH_BUNDLE, '--state-dir', state, ...extra, 'agent', '--offline'];
    const child = viaTerminal
      ? // script(1) gives the agent a terminal for stdout and stderr
        spawn(
          '/usr/bin/script',
          ['-qfec', [process.execPath, ...argv].map((a) => `'${a}'`).join(' '), '/dev/null'],
          {
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        )
      : spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    // 'close': every line the agent wrote on its way out has been read
    const exited = new Promise((r) => child.once('close', r));
    const agent = await waitUntil('agent socket', () => connectAgent(state), 60_000);
    const { pid } = await agent.ping();
    process.kill(pid, 'SIGTERM');
    await exited;
    return out;
  };
  const tty = await run(true);
  t.regex(
    tty,
    /^\d\d:\d\d:\d\d\.\d{3} \S*INFO\S* +agent running deviceId=\S+ fleet=false socket=\S+berth\.sock( version=\S+ mode=\S+)?\r?$/m,
  );
  t.notRegex(tty, /^\{/m, 'no JSON on a terminal');
  t.notRegex(tty, /WARN|ERROR/, 'nothing to warn about');
  const piped = await run(false);
  const lines = piped
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { level: number; msg: string });
  t.true(lines.some((l) => l.msg === 'agent running'));
  t.true(
    lines.every((l) => l.level < 40),
    piped,
  );
  const forced = await run(true, ['--log-format', 'json']);
  t.regex(forced, /^\{"level":30,.*"msg":"agent running"\}\r?$/m);
});
