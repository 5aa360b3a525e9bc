/**
 * Two real agents on one host, each with its own state dir and no network configured (as the README
 * promises): each gets a bridge and subnet of its own, and a host port one of them publishes is refused
 * to the other with an error naming the first — instead of two DNAT rules for one port, one of which
 * silently loses. A configured subnet that another agent uses is refused too.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { exec } from '../../src/lib/exec.js';
import { HostClaims } from '../../src/runtime/network/host-claims.js';
import { cidrsOverlap, type ResolvedNetwork } from '../../src/runtime/network/resolve.js';
import { needPrivileges } from '../helpers/privileged.js';
import { BERTH, ensureBuilt, HTTPD, httpGet, waitUntil } from '../helpers/runtime-cli.js';
import { removeSharedBusyboxRootfs, sharedBusyboxRootfs, tempDir } from '../helpers/runtime-rootfs.js';

test.after.always(removeSharedBusyboxRootfs);

interface Agent {
  stateDir: string;
  berth(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  network(): Promise<ResolvedNetwork>;
}

async function startAgent(t: Parameters<typeof needPrivileges>[0], name: string): Promise<Agent> {
  const dir = await tempDir(t, `berth-two-${name}-`);
  const stateDir = path.join(dir, 'state');
  const config = path.join(dir, 'config.json');
  // no network section: the agent picks its own
  await fsp.writeFile(config, JSON.stringify({ logLevel: 'warn', runtime: { name: 'runc' } }));
  const berth = (args: string[]) =>
    exec(process.execPath, [BERTH, '--state-dir', stateDir, '--config', config, ...args], {
      timeoutMs: 60_000,
      allowFailure: true,
    });
  const child: ChildProcess = spawn(
    process.execPath,
    [BERTH, '--state-dir', stateDir, '--config', config, 'agent', '--offline'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const network = async () =>
    JSON.parse(await fsp.readFile(path.join(stateDir, 'network.json'), 'utf8')) as ResolvedNetwork;
  t.teardown(async () => {
    const ps = await berth(['ps', '-a', '--format', '{{.Name}}']);
    for (const n of ps.stdout.split('\n').filter(Boolean)) await berth(['rm', '-f', n]);
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    const n = await network().catch(() => undefined);
    if (n) {
      await exec('/usr/sbin/nft', ['delete', 'table', 'ip', n.nftTable], { allowFailure: true });
      await exec('/usr/sbin/ip', ['link', 'del', n.bridge], { allowFailure: true });
      await new HostClaims().releaseSubnet(n.subnet, stateDir);
    }
  });
  await waitUntil(
    `agent ${name}`,
    async () => existsSync(path.join(stateDir, 'berth.sock')) && child.exitCode === null,
    60_000,
  ).catch((e) => {
    t.log(err);
    throw e;
  });
  return { stateDir, berth, network };
}

test('two agents on one host: a bridge and subnet each; a host port published by one is refused to the other', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/usr/sbin/nft', '/usr/sbin/ip'] })) return;
  t.timeout(240_000);
  await ensureBuilt();
  const rootfs = await sharedBusyboxRootfs();
  const [a, b] = await Promise.all([startAgent(t, 'a'), startAgent(t, 'b')]);
  const web = (port: number) => [
    'run',
    '-d',
    '--name',
    'web',
    '-p',
    `${port}:8080`,
    '--read-only',
    '--rootfs',
    rootfs,
    ...HTTPD,
  ];
  const port = randomInt(20000, 40000);

  const first = await a.berth(web(port));
  t.is(first.code, 0, first.stderr);
  const idA = first.stdout.trim();
  const second = await b.berth(web(port));
  t.is(second.code, 1);
  t.regex(
    second.stderr,
    new RegExp(
      `Conflict: create container web: host port ${port}/tcp is already published by container ${idA.slice(0, 12)} of the berth with state dir ${a.stateDir}\n`,
    ),
  );
  t.is((await b.berth(['ps', '-a', '--format', '{{.Name}}'])).stdout, '', 'the refused run left nothing');
  const other = await b.berth(web(port + 1));
  t.is(other.code, 0, other.stderr);

  const [na, nb] = [await a.network(), await b.network()];
  t.not(na.bridge, nb.bridge);
  t.not(na.nftTable, nb.nftTable);
  t.false(cidrsOverlap(na.subnet, nb.subnet), `${na.subnet} vs ${nb.subnet}`);
  const ipOf = async (ag: Agent) =>
    (JSON.parse((await ag.berth(['ps', '--format', 'json'])).stdout) as Array<{ ipAddress: string }>)[0]!
      .ipAddress;
  const [ipA, ipB] = [await ipOf(a), await ipOf(b)];
  t.true(cidrsOverlap(`${ipA}/32`, na.subnet), `${ipA} in ${na.subnet}`);
  t.true(cidrsOverlap(`${ipB}/32`, nb.subnet), `${ipB} in ${nb.subnet}`);
  t.is(
    await waitUntil('a', () => httpGet('127.0.0.1', port).catch(() => undefined), 10_000),
    'hello from berth\n',
  );
  t.is(
    await waitUntil('b', () => httpGet('127.0.0.1', port + 1).catch(() => undefined), 10_000),
    'hello from berth\n',
  );

  // a third state dir configured onto a's subnet is refused, naming what it collides with
  const c = await tempDir(t, 'berth-two-c-');
  const cfg = path.join(c, 'config.json');
  const bridge = `bt${randomBytes(3).toString('hex')}`;
  await fsp.writeFile(
    cfg,
    JSON.stringify({
      runtime: { name: 'runc' },
      network: { subnet: na.subnet, bridge, nftTable: `berth_${bridge}` },
    }),
  );
  const clash = await exec(
    process.execPath,
    [BERTH, '--state-dir', path.join(c, 'state'), '--config', cfg, 'run', '-d', '--rootfs', rootfs, 'true'],
    { allowFailure: true },
  );
  t.is(clash.code, 1);
  t.regex(
    clash.stderr,
    new RegExp(
      `Conflict: .*network subnet ${na.subnet.replace(/\./g, '\\.')} \\(bridge ${bridge}\\) overlaps this host's route "${na.subnet.replace(/\./g, '\\.')} dev ${na.bridge}`,
    ),
  );
  await exec('/usr/sbin/ip', ['link', 'del', bridge], { allowFailure: true });
});
