/**
 * The firewall probe (src/runtime/network/probe.ts): one failed run of a tool is not "this host has no
 * firewall" — CI saw `nft` judged broken on a loaded machine and a container refused for it. Real
 * programs (small shell scripts) stand in for a tool that fails now and then, hangs, or is absent; and
 * the real nft probe is run as root.
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { exec } from '../../src/lib/exec.js';
import { nftProblem } from '../../src/runtime/network/nft.js';
import { probeTool } from '../../src/runtime/network/probe.js';
import { needPrivileges } from '../helpers/privileged.js';

/** A script that fails (with `said` on stderr) until it has run `failures` times; counts its runs. */
async function flakyTool(t: import('ava').ExecutionContext, failures: number, said: string) {
  const dir = await fsp.mkdtemp(path.join(tmpdir(), 'berth-probe-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const count = path.join(dir, 'runs');
  const file = path.join(dir, 'tool');
  await fsp.writeFile(
    file,
    `#!/bin/sh\necho x >> '${count}'\nn=$(wc -l < '${count}')\n[ "$n" -gt ${failures} ] && exit 0\necho 'first line' >&2\necho '${said}' >&2\nexit 1\n`,
    { mode: 0o755 },
  );
  const runs = async () => ((await fsp.readFile(count, 'utf8').catch(() => '')).match(/x/g) ?? []).length;
  return { file, dir, runs };
}

test('a tool that fails twice and then works is found working (asked up to 3 times)', async (t) => {
  const tool = await flakyTool(t, 2, 'netlink: Error: Interrupted system call');
  t.is(await probeTool(tool.file, [], { pauseMs: 0 }), undefined);
  t.is(await tool.runs(), 3);
});

test('a tool that keeps failing: the answer is what it said last, after 3 runs', async (t) => {
  const tool = await flakyTool(t, 99, 'Error: Could not process rule: Operation not permitted');
  t.is(
    await probeTool(tool.file, [], { pauseMs: 0 }),
    'Error: Could not process rule: Operation not permitted',
  );
  t.is(await tool.runs(), 3);
});

test('a tool that hangs is timed out and named so; one that is not installed is answered at once', async (t) => {
  const dir = await fsp.mkdtemp(path.join(tmpdir(), 'berth-probe-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const hang = path.join(dir, 'hang');
  await fsp.writeFile(hang, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 });
  t.is(
    await probeTool(hang, [], { attempts: 2, timeoutMs: 200, pauseMs: 0 }),
    'timed out (killed by SIGKILL)',
  );
  const absent = path.join(dir, 'no-such-tool');
  t.is(await probeTool(absent, []), `${absent} is not installed`);
});

test('the nft probe works as root and changes nothing on the host', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/usr/sbin/nft'] })) return;
  t.is(await nftProblem(), undefined);
  t.false((await exec('/usr/sbin/nft', ['list', 'tables'])).stdout.includes('berth_probe'), 'no table left');
});
