/**
 * The web console's weight and speed. Prints figures; asserts nothing.
 *
 *   node --import tsx bench/console.ts [devices=1000] [runs=5]
 *
 * - weight: gzipped JS + CSS of the first page (what the browser must fetch before it can draw) and of
 *   everything (uPlot is loaded on demand by the device page); aim ≤ 150 KiB.
 * - speed: `berth fleet serve --http` from the built bundle (dist/berth.mjs, the console embedded), with
 *   `devices` simulated devices, and headless Chromium (fresh profile, cache cold per run) on loopback: time
 *   from navigation start to the login form usable, the overview's counts on screen, the devices table on
 *   screen; aim ≤ 1 s. Reference in the same run: the browser loading /api/v1/health (one small JSON
 *   response from the same server: the floor of a navigation here), printed as ratios.
 */
import { spawn } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium } from 'playwright-core';
// @ts-expect-error: a plain ES module of the build scripts (JSDoc-typed)
import { buildConsole } from '../scripts/console-build.mjs';
import { loadFleetPrivateKey } from '../src/fleet/keys.js';
import { exec } from '../src/lib/exec.js';
import { startSimulator } from '../test/helpers/device-sim.js';

const DEVICES = Number(process.argv[2] ?? 1000);
const RUNS = Number(process.argv[3] ?? 5);
const BUNDLE = path.resolve('dist/berth.mjs');
const CHROMIUM = process.env.BERTH_CHROMIUM ?? '/usr/bin/chromium';
const PASSWORD = 'bench-console-password';

// ---- weight -------------------------------------------------------------------------------------------
const assets = (await buildConsole()) as Array<{ path: string; gzip: string; size: number }>;
const gz = (a: { gzip: string }) => Buffer.from(a.gzip, 'base64').length;
const html = assets.find((a) => a.path === '/');
const firstNames = new Set<string>();
const index = html ? (await import('node:zlib')).gunzipSync(Buffer.from(html.gzip, 'base64')).toString() : '';
for (const m of index.matchAll(/(?:src|href)="(\/assets\/[^"]+\.(?:js|css))"/g)) firstNames.add(m[1]!);
const code = assets.filter((a) => /\.(js|css)$/.test(a.path));
const first = code.filter((a) => firstNames.has(a.path));
const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
console.log('console weight (gzipped):');
for (const a of code)
  console.log(`  ${a.path.padEnd(36)} ${kib(a.size).padStart(10)} → ${kib(gz(a)).padStart(9)}`);
const firstGz = first.reduce((n, a) => n + gz(a), 0);
const allGz = code.reduce((n, a) => n + gz(a), 0);
console.log(`  first page JS+CSS ${kib(firstGz)}; everything ${kib(allGz)} (aim ≤ 150 KiB)`);

// ---- speed --------------------------------------------------------------------------------------------
if (!existsSync(CHROMIUM)) {
  console.error(`bench/console: no browser at ${CHROMIUM} (scripts/bootstrap.sh installs chromium)`);
  process.exit(1);
}
const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-bench-console-'));
const fleetDir = path.join(work, 'fleet');
const berth = (args: string[], input?: string) =>
  exec(process.execPath, [BUNDLE, '--log-level', 'warn', '--state-dir', fleetDir, ...args], {
    timeoutMs: 60_000,
    ...(input ? { input } : {}),
  });
await berth(['fleet', 'keygen']);
await berth(['fleet', 'user', 'add', 'bench', '--role', 'admin', '--password-stdin'], `${PASSWORD}\n`);
let out = '';
const serve = spawn(
  process.execPath,
  [
    BUNDLE,
    '--state-dir',
    fleetDir,
    '--log-level',
    'warn',
    'fleet',
    'serve',
    '--fleet',
    'bench',
    '--listen',
    '127.0.0.1:0',
    '--http',
    '127.0.0.1:0',
  ],
  { stdio: ['ignore', 'pipe', 'pipe'] },
);
let sim: Awaited<ReturnType<typeof startSimulator>> | undefined;
let browser: import('playwright-core').Browser | undefined;
try {
  serve.stdout.on('data', (d) => (out += d));
  serve.stderr.on('data', (d) => (out += d));
  const until = Date.now() + 30_000;
  while (!/API on/.test(out)) {
    if (Date.now() > until || serve.exitCode !== null) throw new Error(`fleet serve did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const url = /API on (http:\/\/[^\s]+)\/api\/v1/.exec(out)![1]!;
  const broker = /serving on (mqtt:\/\/[^\s;]+)/.exec(out)![1]!;
  const account = JSON.parse(await fsp.readFile(path.join(fleetDir, 'fleet-account.json'), 'utf8'));
  sim = await startSimulator({
    url: broker,
    fleet: 'bench',
    count: DEVICES,
    publicKey: createPublicKey(await loadFleetPrivateKey(fleetDir)),
    account: { username: account.username, password: account.password },
    connections: 4,
  });
  await sim.ready();

  // a fresh temporary profile per launch (playwright's default); one context keeps the session cookie
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
  const context = await browser.newContext();
  const cdp = async (p: import('playwright-core').Page) => {
    const s = await context.newCDPSession(p);
    await s.send('Network.enable');
    await s.send('Network.setCacheDisabled', { cacheDisabled: true });
  };
  const sinceNavigation = (p: import('playwright-core').Page) =>
    p.evaluate('performance.now()') as Promise<number>;

  const times: Record<string, number[]> = { reference: [], login: [], overview: [], devices: [] };
  // log in once for the session cookie; every run below is a fresh navigation with the cache disabled
  const setup = await context.newPage();
  await setup.goto(`${url}/`);
  await setup.getByLabel('User name').fill('bench');
  await setup.getByLabel('Password').fill(PASSWORD);
  await setup.getByRole('button', { name: 'Log in' }).click();
  await setup.getByTestId('user').waitFor();
  await setup.close();
  for (let i = 0; i < RUNS; i++) {
    const p = await context.newPage();
    await cdp(p);
    await p.goto(`${url}/api/v1/health`);
    times.reference!.push(await sinceNavigation(p));
    await p.goto(`${url}/#/`);
    await p.locator('.tile-value').first().waitFor();
    times.overview!.push(await sinceNavigation(p));
    await p.goto('about:blank');
    await p.goto(`${url}/#/devices`);
    await p.locator('[data-testid=devices-table] tbody tr').first().waitFor();
    times.devices!.push(await sinceNavigation(p));
    await p.close();
    // the login page: a new context, without the cookie
    const anon = await browser.newContext();
    const q = await anon.newPage();
    await q.goto(`${url}/`);
    await q.getByRole('button', { name: 'Log in' }).waitFor();
    times.login!.push(await sinceNavigation(q));
    await anon.close();
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const ref = median(times.reference!);
  console.log(
    `\nfirst page usable, navigation start → on screen, median of ${RUNS}, cache disabled, ${DEVICES} devices:`,
  );
  console.log(`  reference (GET /api/v1/health in the browser)  ${ref.toFixed(0)} ms`);
  for (const k of ['login', 'overview', 'devices']) {
    const m = median(times[k]!);
    console.log(
      `  ${k.padEnd(46)} ${m.toFixed(0).padStart(4)} ms  (${(m / ref).toFixed(1)}× reference; aim ≤ 1000 ms)`,
    );
  }
  console.log('(the machine may be shared: compare the ratios)');
  console.log(
    `RESULT console: firstPageGzKiB=${(firstGz / 1024).toFixed(1)} allGzKiB=${(allGz / 1024).toFixed(1)} ` +
      `loginMs=${median(times.login!).toFixed(0)} overviewMs=${median(times.overview!).toFixed(0)} ` +
      `devicesMs=${median(times.devices!).toFixed(0)} referenceMs=${ref.toFixed(0)}`,
  );
} finally {
  // whatever happened, nothing is left running
  await browser?.close().catch(() => undefined);
  await sim?.stop().catch(() => undefined);
  if (serve.exitCode === null) {
    serve.kill('SIGTERM');
    await new Promise((r) => serve.once('exit', r));
  }
  await fsp.rm(work, { recursive: true, force: true });
}
