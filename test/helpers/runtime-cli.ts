/**
 * Drive the built CLI (`node dist/berth.mjs`) against a private state dir, config, busybox rootfs, bridge,
 * subnet and nftables table; teardown removes every container, the bridge, the table and the dirs.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { type ExecResult, exec } from '../../src/lib/exec.js';
import { HostClaims } from '../../src/runtime/network/host-claims.js';
import { deleteChains } from '../../src/runtime/network/iptables.js';
import { buildBusyboxRootfs, sharedBusyboxRootfs, tempDir } from './runtime-rootfs.js';

export const BERTH = path.resolve('dist', 'berth.mjs');

async function isStale(): Promise<boolean> {
  const built = (await fsp.stat(BERTH)).mtimeMs;
  for (const dir of ['src/runtime', 'src/runtime/network', 'src/cli']) {
    for (const f of await fsp.readdir(dir)) {
      const st = await fsp.stat(path.join(dir, f));
      if (st.isFile() && st.mtimeMs > built) return true;
    }
  }
  return false;
}

let built: Promise<void> | undefined;
/** Build dist/berth.mjs when it is missing or older than the sources we test (CI builds before testing). */
export function ensureBuilt(): Promise<void> {
  if (!built) {
    built = (async () => {
      if (!existsSync(BERTH) || (await isStale())) {
        await exec(process.execPath, ['scripts/build.mjs'], { timeoutMs: 120_000 });
      }
      if (!existsSync(path.resolve('native/build/x64/berth-monitor')) && process.arch === 'x64') {
        await exec('make', ['-C', 'native'], { timeoutMs: 120_000 });
      }
    })();
  }
  return built;
}

export interface CliEnv {
  dir: string;
  stateDir: string;
  rootfs: string;
  configPath: string;
  bridge: string;
  subnet: string;
  gateway: string;
  nftTable: string;
  berth(
    args: string[],
    opts?: { allowFailure?: boolean; env?: NodeJS.ProcessEnv; timeoutMs?: number },
  ): Promise<ExecResult>;
  /** `ps -a --json` as objects. */
  ps(): Promise<Array<Record<string, unknown> & { id: string; name: string; state: string }>>;
}

/**
 * A private berth setup for one test. The busybox rootfs is shared by the tests of a process (containers
 * must not write into it: use --read-only, /tmp on tmpfs, or volumes) unless `privateRootfs` is set.
 */
export async function cliEnv(
  t: ExecutionContext,
  extraConfig: Record<string, unknown> = {},
  env: NodeJS.ProcessEnv = {},
  opts: { privateRootfs?: boolean } = {},
): Promise<CliEnv> {
  await ensureBuilt();
  const dir = await tempDir(t, 'berth-cli-');
  const tag = randomBytes(4).toString('hex');
  // 10.64-127.x.0/24: ~16,000 subnets, so concurrent test state dirs (ava runs files in parallel) do not
  // pick the same one (172.31.100-250 gave 150, and CI saw two collide)
  const hi = randomInt(64, 128);
  const octet = randomInt(0, 256);
  const bridge = `bt${tag}`;
  const nftTable = `berth_t${tag}`;
  const subnet = `10.${hi}.${octet}.0/24`;
  const rootfs = opts.privateRootfs
    ? await buildBusyboxRootfs(path.join(dir, 'rootfs'))
    : await sharedBusyboxRootfs();
  const stateDir = path.join(dir, 'state');
  const configPath = path.join(dir, 'config.json');
  const runtime = (extraConfig.runtime as Record<string, unknown> | undefined) ?? {};
  await fsp.writeFile(
    configPath,
    JSON.stringify({
      logLevel: 'warn',
      ...extraConfig,
      runtime: { name: 'runc', ...runtime },
      network: {
        bridge,
        subnet,
        nftTable,
        ...((extraConfig.network as Record<string, unknown> | undefined) ?? {}),
      },
    }),
  );
  const berth: CliEnv['berth'] = (args, opts = {}) =>
    exec(process.execPath, [BERTH, '--state-dir', stateDir, '--config', configPath, ...args], {
      timeoutMs: opts.timeoutMs ?? 180_000,
      allowFailure: opts.allowFailure ?? false,
      env: { ...process.env, ...env, ...(opts.env ?? {}) },
    });
  const ps: CliEnv['ps'] = async () => JSON.parse((await berth(['ps', '-a', '--json'])).stdout);
  t.teardown(async () => {
    const list = await ps().catch(() => []);
    for (const c of list) await berth(['rm', '-f', c.id], { allowFailure: true });
    await exec('/usr/sbin/nft', ['delete', 'table', 'ip', nftTable], { allowFailure: true });
    await deleteChains(nftTable).catch(() => undefined);
    await exec('/usr/sbin/ip', ['link', 'del', bridge], { allowFailure: true });
    await new HostClaims().releaseSubnet(subnet, stateDir);
  });
  return {
    dir,
    stateDir,
    rootfs,
    configPath,
    bridge,
    subnet,
    gateway: `10.${hi}.${octet}.1`,
    nftTable,
    berth,
    ps,
  };
}

export async function waitUntil<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  ms = 30_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** GET http://host:port/ (3 s timeout), the body. */
export function httpGet(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: '/', timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

/** busybox httpd serving the test rootfs' /var/www ("hello from berth") on 8080, in the foreground */
export const HTTPD = ['httpd', '-f', '-p', '8080', '-h', '/var/www'];
