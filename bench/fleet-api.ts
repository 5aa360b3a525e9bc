/**
 * The fleet API at scale. Prints figures and ratios; asserts nothing.
 *
 *   node --import tsx bench/fleet-api.ts [--devices 10000] [--requests 1000] [--connections 8]
 *
 * One real Mosquitto, one `berth fleet serve --broker …` process (the built dist/berth.mjs, HTTP API on a
 * free port), and the device simulator (test/helpers/device-sim.ts: the real protocol over real MQTT, many
 * devices per connection) in this process:
 *
 *   (a) ingest: from the first simulated publish until the fleet server stored every device's status
 *       (online) and reported state — read from its fleet.db (read-only).
 *   (b) latency over HTTP (keep-alive, one request at a time, an operator API token): a filtered, sorted
 *       50-row devices page (`online=true&group=gN&sort=lastSeen&order=desc&limit=50`, N varied) and a
 *       device detail (random device); reference: `GET /health` on the same server (the HTTP stack, no
 *       database), measured in the same run.
 *   (c) fleet server RSS (VmRSS/VmHWM of its process) after ingest and after the queries; reference: its
 *       RSS right after start, before any device existed.
 * Aims (issue 11): page p99 ≤ 50 ms at 10,000 devices, ingest ≤ 30 s, RSS ≤ 300 MiB.
 * State dirs live on /dev/shm (the root FS here is erratic for benchmarks).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { openDatabase } from '../src/db/database.js';
import { keygen, resolvePublicKey } from '../src/fleet/keys.js';
import { exec } from '../src/lib/exec.js';
import { startSimulator } from '../test/helpers/device-sim.js';
import { Mosquitto } from '../test/helpers/mosquitto.js';

const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : def;
};
const DEVICES = Number(arg('devices', '10000'));
const REQUESTS = Number(arg('requests', '1000'));
const CONNECTIONS = Number(arg('connections', '8'));
const GROUPS = 20;
const FLEET = 'bench';
const BIN = path.resolve(import.meta.dirname, '..', 'dist', 'berth.mjs');

const root = await fsp.mkdtemp('/dev/shm/berth-fleet-api-');
const fleetDir = path.join(root, 'fleet');
const procs: ChildProcess[] = [];
let mosquitto: Mosquitto | undefined;

function rssMiB(pid: number): { rss: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function get(base: string, token: string, p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      `${base}/api/v1${p}`,
      { agent, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
  });
}

async function timed(n: number, path: (i: number) => string, base: string, token: string) {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const r = await get(base, token, path(i));
    ms.push(performance.now() - t0);
    if (r.status !== 200) throw new Error(`${path(i)}: HTTP ${r.status} ${r.body.slice(0, 200)}`);
  }
  ms.sort((a, b) => a - b);
  return { p50: pct(ms, 50), p99: pct(ms, 99), max: ms[ms.length - 1]! };
}

async function main(): Promise<void> {
  mosquitto = await Mosquitto.start(['max_queued_messages 100000']);
  const key = await keygen(fleetDir);
  const cli = (a: string[]) =>
    exec(process.execPath, [BIN, '--state-dir', fleetDir, '--log-level', 'warn', ...a], {
      timeoutMs: 60_000,
    });
  const token = (
    await cli(['fleet', 'token', 'create', '--name', 'bench', '--role', 'operator'])
  ).stdout.trim();

  let out = '';
  const serve = spawn(
    process.execPath,
    [
      ...[BIN, '--state-dir', fleetDir, '--log-level', 'warn', 'fleet', 'serve', '--fleet', FLEET],
      ...['--broker', mosquitto.url, '--http', '127.0.0.1:0'],
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  procs.push(serve);
  serve.stdout!.on('data', (d) => (out += d));
  serve.stderr!.on('data', (d) => (out += d));
  const until = Date.now() + 30_000;
  while (!/API on (\S+)\/api\/v1/.test(out)) {
    if (Date.now() > until || serve.exitCode !== null) throw new Error(`fleet serve did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const base = /API on (\S+)\/api\/v1/.exec(out)![1]!;
  const pid = serve.pid!;
  await new Promise((r) => setTimeout(r, 500));
  const idle = rssMiB(pid);

  // (a) ingest
  const db = openDatabase(path.join(fleetDir, 'fleet.db'), { readonly: true, integrityCheck: false });
  const count = () =>
    db
      .prepare(
        'SELECT (SELECT COUNT(*) FROM devices WHERE online = 1) AS online, (SELECT COUNT(*) FROM device_state) AS states',
      )
      .get() as {
      online: number;
      states: number;
    };
  const t0 = performance.now();
  const sim = await startSimulator({
    url: mosquitto.url,
    fleet: FLEET,
    count: DEVICES,
    connections: CONNECTIONS,
    groups: (_id, i) => [`g${i % GROUPS}`],
    publicKey: await resolvePublicKey(key.publicFile),
  });
  await sim.ready();
  const published = performance.now() - t0;
  for (;;) {
    const c = count();
    if (c.online >= DEVICES && c.states >= DEVICES) break;
    if (performance.now() - t0 > 300_000) throw new Error(`ingest stuck at ${JSON.stringify(c)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  const ingest = performance.now() - t0;
  db.close();
  const afterIngest = rssMiB(pid);

  // (b) latency: warm up, then the reference and the two measured requests
  await timed(50, () => '/health', base, token);
  await timed(
    50,
    (i) => `/devices?online=true&group=g${i % GROUPS}&sort=lastSeen&order=desc&limit=50`,
    base,
    token,
  );
  const health = await timed(REQUESTS, () => '/health', base, token);
  const page = await timed(
    REQUESTS,
    (i) => `/devices?online=true&group=g${i % GROUPS}&sort=lastSeen&order=desc&limit=50`,
    base,
    token,
  );
  const ids = sim.ids;
  const detail = await timed(REQUESTS, (i) => `/devices/${ids[(i * 7919) % ids.length]}`, base, token);
  const afterQueries = rssMiB(pid);
  await sim.stop();

  const f = (n: number) => n.toFixed(2);
  console.log(
    `devices ${DEVICES} (${CONNECTIONS} simulator connections, ${GROUPS} groups), requests ${REQUESTS} each`,
  );
  console.log(
    `(a) ingest of every status + state: ${f(ingest / 1000)} s (simulator done publishing at ${f(published / 1000)} s; ` +
      `server lag after the last PUBACK ${f((ingest - published) / 1000)} s) — aim ≤ 30 s`,
  );
  console.log(`(b) GET /health (reference): p50 ${f(health.p50)} ms, p99 ${f(health.p99)} ms`);
  console.log(
    `    devices page (filtered, sorted, 50 rows): p50 ${f(page.p50)} ms, p99 ${f(page.p99)} ms, max ${f(page.max)} ms ` +
      `= ${f(page.p50 / health.p50)}× / ${f(page.p99 / health.p99)}× the reference — aim p99 ≤ 50 ms`,
  );
  console.log(
    `    device detail: p50 ${f(detail.p50)} ms, p99 ${f(detail.p99)} ms, max ${f(detail.max)} ms ` +
      `= ${f(detail.p50 / health.p50)}× / ${f(detail.p99 / health.p99)}× the reference`,
  );
  console.log(
    `(c) fleet server RSS: idle ${f(idle.rss)} MiB (reference); after ingest ${f(afterIngest.rss)} MiB; ` +
      `after the queries ${f(afterQueries.rss)} MiB (peak ${f(afterQueries.hwm)} MiB) = ${f(afterQueries.hwm / idle.rss)}× idle — aim ≤ 300 MiB`,
  );
  console.log(
    `RESULT fleet-api devices=${DEVICES} ingest_s=${f(ingest / 1000)} page_p50_ms=${f(page.p50)} page_p99_ms=${f(page.p99)} ` +
      `detail_p50_ms=${f(detail.p50)} detail_p99_ms=${f(detail.p99)} health_p99_ms=${f(health.p99)} rss_peak_mib=${f(afterQueries.hwm)}`,
  );
}

try {
  await main();
} finally {
  agent.destroy();
  for (const p of procs) {
    if (p.exitCode === null) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
      if (p.exitCode === null) p.kill('SIGKILL');
    }
  }
  await mosquitto?.stop();
  await fsp.rm(root, { recursive: true, force: true });
}
