/**
 * Container lifecycle through the CLI (node dist/berth.mjs) with runc, berth-monitor, real namespaces and
 * cgroup v1: run/ps/logs/stop/rm, exit codes, StopSignal and stop timeout, the monitor outliving a
 * SIGKILLed CLI, log rotation under the ASan monitor, exec, limits and OOM.
 */
import { spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { exec } from '../../src/lib/exec.js';
import { needPrivileges } from '../helpers/privileged.js';
import { cliEnv, waitUntil } from '../helpers/runtime-cli.js';
import { availableRuntimes, removeSharedBusyboxRootfs } from '../helpers/runtime-rootfs.js';

test.after.always(removeSharedBusyboxRootfs);

const LOOP = 'while true; do sleep 0.1; done';

for (const rt of availableRuntimes()) {
  test(`${rt.name}: run -d → ps → logs → stop honours StopSignal → rm cleans cgroup, bundle, runtime state`, async (t) => {
    if (!needPrivileges(t)) return;
    const env = await cliEnv(t, { runtime: { name: rt.name, path: rt.binary } });
    const script = `trap 'echo got-usr1; exit 42' USR1; echo started; echo to-stderr >&2; ${LOOP}`;
    const id = (
      await env.berth([
        'run',
        '-d',
        '--name',
        'life',
        '--network',
        'none',
        '--stop-signal',
        'SIGUSR1',
        '--memory',
        '64m',
        '--pids-limit',
        '32',
        '--rootfs',
        env.rootfs,
        'sh',
        '-c',
        script,
      ])
    ).stdout.trim();
    t.regex(id, /^[0-9a-f]{32}$/);
    const running = (await env.ps()).find((c) => c.id === id);
    t.is(running?.state, 'running');
    t.is(running?.name, 'life');
    const table = (await env.berth(['ps'])).stdout;
    t.regex(table, /life\s+rootfs:.*Up/);

    // limits reached the cgroup
    const cg = `/sys/fs/cgroup/memory/berth/${id}/memory.limit_in_bytes`;
    t.is((await fsp.readFile(cg, 'utf8')).trim(), String(64 * 1024 * 1024));
    t.is((await fsp.readFile(`/sys/fs/cgroup/pids/berth/${id}/pids.max`, 'utf8')).trim(), '32');

    await waitUntil('logs', async () => (await env.berth(['logs', 'life'])).stdout.includes('started'));
    const logs = await env.berth(['logs', 'life']);
    t.is(logs.stdout, 'started\n');
    t.is(logs.stderr, 'to-stderr\n');

    await env.berth(['stop', '-t', '10', 'life']);
    const stopped = (await env.ps()).find((c) => c.id === id);
    t.is(stopped?.state, 'exited');
    t.is(stopped?.exitCode, 42, 'the container exited through its USR1 trap');
    t.true((await env.berth(['logs', 'life'])).stdout.includes('got-usr1'));
    t.false(
      existsSync(cg.replace('/memory.limit_in_bytes', '')),
      'cgroup removed once the exit was recorded',
    );

    await env.berth(['rm', 'life']);
    t.deepEqual(await env.ps(), []);
    t.false(existsSync(path.join(env.stateDir, 'containers', id)));
    const runtimeState = await exec(
      rt.binary,
      ['--root', path.join(env.stateDir, 'runtime', rt.name), 'state', id],
      {
        allowFailure: true,
      },
    );
    t.not(runtimeState.code, 0);
    const again = await env.berth(['logs', 'life'], { allowFailure: true });
    t.regex(again.stderr, /NotFound: no such container: life/);
  });
}

test('stop: a process ignoring the signal is SIGKILLed after -t seconds', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t);
  await env.berth([
    'run',
    '-d',
    '--name',
    'stubborn',
    '--network',
    'none',
    '--rootfs',
    env.rootfs,
    'sh',
    '-c',
    `trap '' TERM; ${LOOP}`,
  ]);
  const t0 = Date.now();
  await env.berth(['stop', '-t', '1', 'stubborn']);
  const waited = Date.now() - t0;
  const c = (await env.ps())[0]!;
  t.is(c.exitCode, 137);
  t.true(waited >= 1000, `stop returned after ${waited} ms, before the 1 s timeout`);
});

test('a container that exits at once: exit code recorded (detached and foreground), rm --rm', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t);
  await env.berth([
    'run',
    '-d',
    '--name',
    'quick',
    '--network',
    'none',
    '--rootfs',
    env.rootfs,
    'sh',
    '-c',
    'echo bye; exit 3',
  ]);
  const c = await waitUntil('exit', async () =>
    (await env.ps()).find((x) => x.name === 'quick' && x.state === 'exited'),
  );
  t.is(c.exitCode, 3);
  t.is((await env.berth(['logs', 'quick'])).stdout, 'bye\n');

  const fg = await env.berth(
    ['run', '--rm', '--network', 'none', '--rootfs', env.rootfs, 'sh', '-c', 'echo out; exit 7'],
    {
      allowFailure: true,
    },
  );
  t.is(fg.code, 7);
  t.is(fg.stdout, 'out\n');
  t.deepEqual(
    (await env.ps()).map((x) => x.name),
    ['quick'],
    '--rm removed the foreground container',
  );

  // -d --rm: the monitor runs `berth rm -f` itself when the container exits
  await env.berth([
    'run',
    '-d',
    '--rm',
    '--name',
    'gone',
    '--network',
    'none',
    '--rootfs',
    env.rootfs,
    'true',
  ]);
  await waitUntil('auto-remove', async () => !(await env.ps()).some((x) => x.name === 'gone'));
  t.false(
    (await env.ps()).some((x) => x.name === 'gone'),
    '-d --rm removed the container when it exited',
  );

  const bad = await env.berth(['run', '-d', '--network', 'none', '--rootfs', env.rootfs, '/no/such/binary'], {
    allowFailure: true,
  });
  t.not(bad.code, 0);
  t.regex(bad.stderr, /start container/);
});

test('the monitor keeps the container alive when the CLI is SIGKILLed; status recovered afterwards', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t, {}, {}, { privateRootfs: true });
  const flag = path.join(env.rootfs, 'tmp', 'go');
  // foreground run: the CLI process is the "agent" here; kill it hard mid-run
  const cli = spawn(
    process.execPath,
    [
      path.resolve('dist/berth.mjs'),
      '--state-dir',
      env.stateDir,
      '--config',
      env.configPath,
      'run',
      '--name',
      'survivor',
      '--network',
      'none',
      '--rootfs',
      env.rootfs,
      'sh',
      '-c',
      'echo up; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo finishing; exit 5',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let cliErr = '';
  cli.stderr!.on('data', (d) => {
    cliErr += d;
  });
  t.teardown(() => cli.kill('SIGKILL'));
  await waitUntil(
    `running (cli stderr: ${cliErr})`,
    async () => (await env.ps()).find((c) => c.name === 'survivor' && c.state === 'running'),
    60_000,
  ).catch((e) => {
    throw new Error(`${e.message}; cli stderr: ${cliErr}`);
  });
  cli.kill('SIGKILL');
  await new Promise((r) => cli.once('exit', r));
  const c = (await env.ps()).find((x) => x.name === 'survivor')!;
  t.is(c.state, 'running', 'still running after the CLI died');
  const monitorPid = c.monitorPid as number;
  t.true(existsSync(`/proc/${monitorPid}`));
  t.is(
    (await fsp.readFile(`/proc/${monitorPid}/stat`, 'utf8')).split(' ')[3],
    '1',
    'monitor reparented to init',
  );

  await fsp.writeFile(flag, '');
  const done = await waitUntil('exit', async () =>
    (await env.ps()).find((x) => x.name === 'survivor' && x.state === 'exited'),
  );
  t.is(done.exitCode, 5);
  t.is(
    (await env.berth(['logs', 'survivor'])).stdout,
    'up\nfinishing\n',
    'no output lost across the CLI kill',
  );
});

test('log rotation and size cap (ASan-built monitor)', async (t) => {
  if (!needPrivileges(t)) return;
  const asanDir = path.resolve('native/build/x64-asan');
  if (!existsSync(path.join(asanDir, 'berth-monitor'))) {
    await exec('make', ['-C', 'native', 'SANITIZE=1'], { timeoutMs: 120_000 });
  }
  const env = await cliEnv(
    t,
    { runtime: { logMaxSize: 8192, logMaxFiles: 3 } },
    { BERTH_NATIVE_DIR: asanDir, ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0' },
  );
  const lines = 3000;
  const r = await env.berth([
    'run',
    '--name',
    'chatty',
    '--network',
    'none',
    '--rootfs',
    env.rootfs,
    'sh',
    '-c',
    `i=0; while [ $i -lt ${lines} ]; do echo "line $i $(printf '%0.sx' 1 2 3 4 5 6 7 8 9 10)"; i=$((i+1)); done`,
  ]);
  t.is(r.code, 0);
  const c = (await env.ps())[0]!;
  const dir = path.join(env.stateDir, 'containers', c.id);
  const files = (await fsp.readdir(dir)).filter((f) => f.startsWith('log.json')).sort();
  t.deepEqual(files, ['log.json', 'log.json.1', 'log.json.2'], 'at most logMaxFiles files');
  for (const f of files) {
    const size = (await fsp.stat(path.join(dir, f))).size;
    t.true(size <= 8192, `${f} is ${size} bytes, over the 8192 cap`);
  }
  const logs = (await env.berth(['logs', 'chatty'])).stdout.trim().split('\n');
  t.true(logs.length > 50 && logs.length < lines, `${logs.length} lines kept`);
  t.is(logs.at(-1), `line ${lines - 1} xxxxxxxxxx`);
  const tail = (await env.berth(['logs', '--tail', '2', 'chatty'])).stdout;
  t.is(tail, `line ${lines - 2} xxxxxxxxxx\nline ${lines - 1} xxxxxxxxxx\n`);
  // every kept line is valid JSON in docker's json-file shape
  const first = JSON.parse((await fsp.readFile(path.join(dir, 'log.json.2'), 'utf8')).split('\n')[0]!);
  t.deepEqual(Object.keys(first), ['log', 'stream', 'time']);
  const monitorLog = await fsp.readFile(path.join(dir, 'monitor.log'), 'utf8').catch(() => '');
  t.notRegex(monitorLog, /AddressSanitizer|LeakSanitizer|runtime error/, monitorLog);
  const exit = JSON.parse(await fsp.readFile(path.join(dir, 'exit.json'), 'utf8'));
  t.is(exit.exitCode, 0);
});

test('exec enters the running container; exit status passes through', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t);
  await env.berth([
    'run',
    '-d',
    '--name',
    'ex',
    '--hostname',
    'exhost',
    '-e',
    'GREETING=hi',
    '-u',
    'app',
    '--network',
    'none',
    '--rootfs',
    env.rootfs,
    'sh',
    '-c',
    LOOP,
  ]);
  const r = await env.berth([
    'exec',
    'ex',
    'sh',
    '-c',
    'echo $GREETING $(hostname) $(id -u) $(pwd); ls /proc/1/exe -l | grep -c busybox',
  ]);
  t.is(r.stdout, 'hi exhost 1000 /\n1\n');
  t.is((await env.berth(['exec', '-w', '/tmp', 'ex', 'pwd'])).stdout, '/tmp\n');
  const failed = await env.berth(['exec', 'ex', 'sh', '-c', 'exit 9'], { allowFailure: true });
  t.is(failed.code, 9);
  const ps = await env.berth(['exec', 'ex', 'ps', '-o', 'pid,comm']);
  t.regex(ps.stdout, /^\s*1\s+sh$/m, 'sees the container pid namespace');
});

for (const rt of availableRuntimes()) {
  test(`${rt.name}: berth exec goes through the runtime: container cgroup, seccomp, no_new_privs, bounding set`, async (t) => {
    if (!needPrivileges(t)) return;
    const env = await cliEnv(t, { runtime: { name: rt.name, path: rt.binary } });
    const name = `exc-${rt.name}`;
    await env.berth([
      'run',
      '-d',
      '--name',
      name,
      '--network',
      'none',
      '--rootfs',
      env.rootfs,
      'sh',
      '-c',
      LOOP,
    ]);
    const v1 = (text: string) =>
      text
        .split('\n')
        .filter((l) => l && !l.startsWith('0::'))
        .sort()
        .join('\n');
    const mine = await env.berth(['exec', name, 'cat', '/proc/self/cgroup']);
    const init = await env.berth(['exec', name, 'cat', '/proc/1/cgroup']);
    t.regex(mine.stdout, /memory:\/.+/, 'not the host root cgroup');
    t.is(v1(mine.stdout), v1(init.stdout), 'the exec process is in the init cgroups');
    const status = (
      await env.berth(['exec', name, 'grep', '-E', '^(CapBnd|NoNewPrivs|Seccomp):', '/proc/self/status'])
    ).stdout;
    const initStatus = (
      await env.berth(['exec', name, 'grep', '-E', '^(CapBnd|NoNewPrivs|Seccomp):', '/proc/1/status'])
    ).stdout;
    t.regex(status, /Seccomp:\s+2/);
    t.is(status, initStatus, 'same bounding set, no_new_privs and seccomp mode as the init');
  });
}

test('security defaults seen from inside: caps, no_new_privs, seccomp, masked paths, read-only rootfs', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t);
  const r = await env.berth(
    [
      'run',
      '--rm',
      '--read-only',
      '--cap-drop',
      'NET_RAW',
      '--network',
      'none',
      '--rootfs',
      env.rootfs,
      'sh',
      '-c',
      'grep -E "^(CapBnd|NoNewPrivs|Seccomp):" /proc/self/status; touch /x 2>/dev/null && echo rw || echo ro; wc -c < /proc/timer_list; mount | grep -c " /sys .*(ro,"',
    ],
    { allowFailure: true },
  );
  t.is(r.code, 0, r.stderr);
  const out = r.stdout.split('\n');
  // docker's 14 default caps minus NET_RAW = 0xa80425fb & ~(1<<13)
  t.is(out[0], `CapBnd:\t${(0xa80425fb - (1 << 13)).toString(16).padStart(16, '0')}`);
  t.is(out[1], 'NoNewPrivs:\t1');
  t.is(out[2], 'Seccomp:\t2');
  t.is(out[3], 'ro');
  t.is(out[4]?.trim(), '0', '/proc/timer_list is masked (empty)');
  t.is(out[5], '1');
});

test('OOM kill is recorded', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t);
  const r = await env.berth(
    [
      'run',
      '--name',
      'oom',
      '--memory',
      '8m',
      '--network',
      'none',
      '--rootfs',
      env.rootfs,
      'sh',
      '-c',
      'x=$(head -c 64000000 /dev/zero | tr "\\0" a); echo survived',
    ],
    { allowFailure: true },
  );
  const c = (await env.ps())[0]!;
  t.not(r.code, 0);
  t.true(c.oomKilled, JSON.stringify(c));
});

test('limits enforced: pids limit stops forks, cpu quota set, logs -f follows until exit', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t);
  const pids = await env.berth(
    [
      'run',
      '--name',
      'forky',
      '--pids-limit',
      '6',
      '--cpus',
      '0.5',
      '--network',
      'none',
      '--rootfs',
      env.rootfs,
      'sh',
      '-c',
      'cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us; (for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done); set -- /proc/[0-9]*; echo procs=$#',
    ],
    { allowFailure: true },
  );
  const lines = pids.stdout.trim().split('\n');
  t.is(lines[0], '50000', 'cpu quota 0.5 × 100000 period');
  const procs = Number(/procs=(\d+)/.exec(pids.stdout)?.[1] ?? -1);
  t.true(procs >= 1 && procs <= 6, `pids limit 6, yet ${procs} processes in the container`);
  t.regex(pids.stderr, /can't fork|Resource temporarily unavailable|fork/i);

  await env.berth([
    'run',
    '-d',
    '--name',
    'ticker',
    '--network',
    'none',
    '--rootfs',
    env.rootfs,
    'sh',
    '-c',
    'for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done',
  ]);
  const followed = await env.berth(['logs', '-f', 'ticker'], { timeoutMs: 120_000 });
  t.is(followed.stdout, 'tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n');
});

test('volumes: -v rw and :ro binds, working dir and user from flags', async (t) => {
  if (!needPrivileges(t)) return;
  const env = await cliEnv(t);
  const data = path.join(env.dir, 'data');
  const conf = path.join(env.dir, 'conf');
  await fsp.mkdir(data);
  await fsp.mkdir(conf);
  await fsp.writeFile(path.join(conf, 'app.conf'), 'setting=1\n');
  const r = await env.berth(
    [
      'run',
      '--rm',
      '--network',
      'none',
      '-v',
      `${data}:/data`,
      '-v',
      `${conf}:/etc/app:ro`,
      '-w',
      '/data',
      '--rootfs',
      env.rootfs,
      'sh',
      '-c',
      'echo written > out.txt; cat /etc/app/app.conf; echo x > /etc/app/new 2>/dev/null && echo ro-broken || echo ro-ok',
    ],
    { allowFailure: true },
  );
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'setting=1\nro-ok\n');
  t.is(await fsp.readFile(path.join(data, 'out.txt'), 'utf8'), 'written\n');
  t.false(existsSync(path.join(conf, 'new')));
});
