/**
 * berth-runtime exec / pause / resume / ps against runc on the same kind of running container: what the
 * exec'd process sees (capabilities, ids, no_new_privs, seccomp mode, cgroup, cwd, env) must match, exit
 * codes pass through, --detach writes the pid file, and a frozen container stops making progress.
 * exec runs with the sanitizer build of berth-runtime.
 */
import { readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { needPrivileges } from '../../helpers/privileged.js';
import { waitUntil } from '../../helpers/runtime-cli.js';
import {
  baseConfig,
  berthRuntimeBinary,
  type OciConfig,
  type RuntimeEnv,
  type RuntimeName,
  removeSharedRootfs,
  runtimeEnv,
  runtimeExec,
  runtimeSpawn,
  sharedRootfs,
  uniq,
} from '../../helpers/runtime-native.js';

let rootfs: string;
test.before(async () => {
  rootfs = await sharedRootfs();
});
test.after.always(removeSharedRootfs);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const asan = { binary: berthRuntimeBinary(true) };

function ready(t: ExecutionContext): boolean {
  return needPrivileges(t, { root: true, paths: ['/sys/fs/cgroup/memory', '/sys/fs/cgroup/freezer'] });
}

async function status(
  env: RuntimeEnv,
  runtime: RuntimeName,
  id: string,
): Promise<{ status: string; pid: number }> {
  const r = await runtimeExec(env, runtime, ['state', id]);
  if (r.code !== 0) throw new Error(`state ${id}: ${r.stderr}`);
  return JSON.parse(r.stdout) as { status: string; pid: number };
}

/** create + start a container running args; returns its id and cgroup path. */
async function running(
  t: ExecutionContext,
  env: RuntimeEnv,
  runtime: RuntimeName,
  mutate: (c: OciConfig) => void,
  args: string[],
) {
  const cg = env.cgroup();
  const config = baseConfig(rootfs, args, cg);
  mutate(config);
  const bundle = await env.bundle(config);
  const id = uniq(`exec-${runtime}`);
  const c = await runtimeSpawn(env, runtime, ['create', '--bundle', bundle, id], id);
  t.is(c.code, 0, c.stderr);
  const s = await runtimeExec(env, runtime, ['start', id]);
  t.is(s.code, 0, s.stderr);
  return { id, cg };
}

const PROBE = [
  'echo "== status"; grep -E "^(Cap|NoNewPrivs|Seccomp:)" /proc/self/status',
  'echo "== id"; id',
  // hybrid hosts: runc also moves its processes in the unified hierarchy, berth-runtime (create and exec)
  // only in the v1 ones; compared apart below
  'echo "== cgroup"; grep -v "^0::" /proc/self/cgroup | sort',
  'echo "== cwd"; pwd',
  'echo "== env"; env | grep -v -E "^(SHLVL|PWD|OLDPWD)=" | sort',
  'echo "== pid"; echo $$',
].join('; ');

function withSeccomp(c: OciConfig) {
  (c.linux as Record<string, unknown>).seccomp = {
    defaultAction: 'SCMP_ACT_ALLOW',
    syscalls: [{ names: ['sethostname', 'setdomainname'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
  };
}

function sections(out: string, cg: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of out.replaceAll(cg, '<CG>').split('== ').slice(1)) {
    const nl = part.indexOf('\n');
    m.set(part.slice(0, nl), part.slice(nl + 1));
  }
  return m;
}

test('exec: what the process sees matches runc exec (caps, ids, nnp, seccomp, cgroup, cwd, env)', async (t) => {
  if (!ready(t)) return;
  const env = await runtimeEnv2(t);
  const outs = new Map<RuntimeName, Map<string, string>>();
  for (const runtime of ['berth', 'runc'] as const) {
    const { id, cg } = await running(t, env, runtime, withSeccomp, ['sleep', '60']);
    const r = await runtimeExec(
      env,
      runtime,
      [
        'exec',
        '--cwd',
        '/tmp',
        '--env',
        'FOO=bar',
        '--env',
        'TERM=dumb',
        '--user',
        '1000:1001',
        id,
        'sh',
        '-c',
        PROBE,
      ],
      runtime === 'berth' ? asan : {},
    );
    t.is(r.code, 0, `${runtime}: ${r.stderr}`);
    const s = sections(r.stdout, cg);
    outs.set(runtime, s);
    // the process is in the container's cgroup in every v1 hierarchy the runtime manages, and in its pid ns
    t.regex(s.get('cgroup') ?? '', /memory:<CG>/, runtime);
    t.regex(s.get('cgroup') ?? '', /pids:<CG>/, runtime);
    t.regex(s.get('status') ?? '', /NoNewPrivs:\s+1/, runtime);
    t.regex(s.get('status') ?? '', /Seccomp:\s+2/, runtime);
    t.regex(s.get('id') ?? '', /uid=1000 gid=1001/, runtime);
    t.is(s.get('cwd'), '/tmp\n', runtime);
    t.regex(s.get('env') ?? '', /^FOO=bar$/m, runtime);
    t.regex(s.get('env') ?? '', /^TERM=dumb$/m, runtime);
    t.true(Number(s.get('pid')) < 20, `${runtime}: a low pid in the container's pid namespace`);
    // exactly the init's cgroups (no cgroup namespace here: host and container views agree)
    const init = await readFile(`/proc/${(await status(env, runtime, id)).pid}/cgroup`, 'utf8');
    const v1 = (text: string) =>
      text
        .split('\n')
        .filter((l) => l && !l.startsWith('0::'))
        .sort()
        .join('\n');
    t.is(v1(s.get('cgroup') ?? '').replaceAll('<CG>', cg), v1(init), runtime);
  }
  const b = outs.get('berth') as Map<string, string>;
  const r = outs.get('runc') as Map<string, string>;
  for (const k of ['status', 'id', 'cgroup', 'cwd', 'env']) t.is(b.get(k), r.get(k), `section ${k}`);
});

test('exec: exit codes pass through; --process; --detach writes the pid file; errors', async (t) => {
  if (!ready(t)) return;
  const env = await runtimeEnv2(t);
  for (const runtime of ['berth', 'runc'] as const) {
    const opts = runtime === 'berth' ? asan : {};
    const { id, cg } = await running(t, env, runtime, () => {}, ['sleep', '60']);
    const e7 = await runtimeExec(env, runtime, ['exec', id, 'sh', '-c', 'exit 7'], opts);
    t.is(e7.code, 7, `${runtime}: ${e7.stderr}`);
    const sig = await runtimeExec(env, runtime, ['exec', id, 'sh', '-c', 'kill -9 $$'], opts);
    t.is(sig.code, 137, `${runtime}: ${sig.stderr}`);
    // --process: a whole process object
    const proc = path.join(env.dir, `${id}.process.json`);
    await writeFile(
      proc,
      JSON.stringify({
        args: ['sh', '-c', 'echo $X; id -u; exit 3'],
        env: ['X=from-process', 'PATH=/bin'],
        cwd: '/',
        user: { uid: 7, gid: 7 },
      }),
    );
    const pr = await runtimeExec(env, runtime, ['exec', '--process', proc, id], opts);
    t.is(pr.code, 3, `${runtime}: ${pr.stderr}`);
    t.is(pr.stdout, 'from-process\n7\n', runtime);
    // --detach + --pid-file
    const pidFile = path.join(env.dir, `${id}.exec.pid`);
    const d = await runtimeSpawn(
      env,
      runtime,
      ['exec', '--detach', '--pid-file', pidFile, id, 'sleep', '30'],
      `${id}-d`,
      opts,
    );
    t.is(d.code, 0, d.stderr);
    const pid = Number(await readFile(pidFile, 'utf8'));
    t.true(pid > 0);
    // berth-runtime's --detach returns once the process has exec'd; runc writes the pid file while the
    // process is still `runc init` (seen under load), so runc gets time to get there
    const cmdline = () => readFile(`/proc/${pid}/cmdline`, 'utf8');
    for (let i = 0; runtime === 'runc' && i < 200 && (await cmdline()) !== 'sleep\u000030\u0000'; i++)
      await sleep(50);
    t.is(await cmdline(), 'sleep\u000030\u0000', runtime);
    t.regex(await readFile(`/proc/${pid}/cgroup`, 'utf8'), new RegExp(`memory:${cg}`));
    // ps lists the init and the detached process (runc's json lists pids too)
    const ps = await runtimeExec(env, runtime, ['ps', '--format', 'json', id], opts);
    t.is(ps.code, 0, ps.stderr);
    const pids = JSON.parse(ps.stdout) as number[];
    t.true(pids.includes(pid), `${runtime}: ps ${ps.stdout}`);
    t.true(pids.includes((await status(env, runtime, id)).pid), runtime);
    process.kill(pid, 'SIGKILL');
    // a missing program fails without leaving anything behind
    const missing = await runtimeExec(env, runtime, ['exec', id, 'no-such-program'], opts);
    t.not(missing.code, 0, runtime);
  }
  const gone = await runtimeExec(env, 'berth', ['exec', 'no-such-container', 'true'], asan);
  t.is(gone.code, 1);
  t.regex(gone.stderr, /does not exist/);
});

test('pause/resume: a frozen counter stops, state says paused, exec refused while paused', async (t) => {
  if (!ready(t)) return;
  const env = await runtimeEnv2(t);
  const script = 'i=0; while true; do i=$((i+1)); echo $i > /dev/shm/c; sleep 0.02; done';
  for (const runtime of ['berth', 'runc'] as const) {
    const opts = runtime === 'berth' ? asan : {};
    const { id } = await running(t, env, runtime, () => {}, ['sh', '-c', script]);
    const pid = (await status(env, runtime, id)).pid;
    const counter = async () =>
      Number(await readFile(`/proc/${pid}/root/dev/shm/c`, 'utf8').catch(() => '0'));
    // the shell counts once it runs (under load that can take longer than any fixed pause)
    await waitUntil(`${runtime}: the counter counts`, async () => (await counter()) > 0, 20_000);
    const p = await runtimeExec(env, runtime, ['pause', id], opts);
    t.is(p.code, 0, p.stderr);
    t.is((await status(env, runtime, id)).status, 'paused', runtime);
    const c1 = await counter();
    await sleep(400);
    t.is(await counter(), c1, `${runtime}: the counter does not move while paused`);
    if (runtime === 'berth') {
      const ex = await runtimeExec(env, runtime, ['exec', id, 'true'], opts);
      t.is(ex.code, 1);
      t.regex(ex.stderr, /state paused/);
      const again = await runtimeExec(env, runtime, ['pause', id], opts);
      t.is(again.code, 1);
    }
    const r = await runtimeExec(env, runtime, ['resume', id], opts);
    t.is(r.code, 0, r.stderr);
    t.is((await status(env, runtime, id)).status, 'running', runtime);
    await waitUntil(`${runtime}: the counter moves again`, async () => (await counter()) > c1 + 3, 20_000);
    if (runtime === 'berth') {
      // a paused container: delete refuses without --force; --force thaws and kills it
      t.is((await runtimeExec(env, runtime, ['pause', id], opts)).code, 0);
      const del = await runtimeExec(env, runtime, ['delete', id], opts);
      t.is(del.code, 1);
      t.regex(del.stderr, /state paused/);
      const force = await runtimeExec(env, runtime, ['delete', '--force', id], {
        ...opts,
        timeoutMs: 20_000,
      });
      t.is(force.code, 0, force.stderr);
      t.is((await runtimeExec(env, runtime, ['state', id])).code, 1);
    }
  }
});

function runtimeEnv2(t: ExecutionContext): Promise<RuntimeEnv> {
  return runtimeEnv(t, rootfs);
}
