// Figures for the packaged executables (build them first: `npm run package`):
//   node bench/package.mjs [--dist dist] [--runs 9] [--arch x64 ...]
// Per arch: executable size against the Node base binary (aim: base + 15 MiB), start-up of `berth version`
// (first run and median of --runs; native x64 aim <= 150 ms, emulated arches reported, not judged) and of
// `berth ps` without an agent (median; aim <= 250 ms), each also as a ratio to `node -e 0` timed in the same
// loop (the reference: on a shared machine load hits both sides), and the
// RSS of a connected, database-open process (`mqtt-ping --hold`, standing in for the idle agent) 2 s after
// start. Under qemu-user the RSS includes the emulator.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const { values } = parseArgs({
  options: {
    dist: { type: 'string', default: path.join(ROOT, 'dist') },
    runs: { type: 'string', default: '9' },
    arch: { type: 'string', multiple: true },
  },
});
const runs = Number(values.runs);
const arches = values.arch ?? ['x64', 'arm64', 'armv7', 'ppc64le'];
const MiB = 1048576;

function runner(def, exe, args) {
  return def.qemu ? [def.qemu, ['-L', `/usr/${def.triple}`, exe, ...args]] : [exe, args];
}

// GNU time gives the CPU time too: on a busy machine wall-clock start-up says more about the load.
const GNU_TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : null;

/** @returns {{ wall: number, cpu: number | null }} milliseconds */
function timeRun(def, exe, args, env) {
  const [file, argv] = runner(def, exe, args);
  const t0 = process.hrtime.bigint();
  if (!GNU_TIME) {
    execFileSync(file, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    return { wall: Number(process.hrtime.bigint() - t0) / 1e6, cpu: null };
  }
  const r = spawnSync(GNU_TIME, ['-f', '@@%U %S', file, ...argv], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  if (r.status !== 0) throw new Error(`${exe} ${args.join(' ')} failed: ${r.stderr}`);
  const out = r.stderr.toString();
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const [user, sys] = out
    .slice(out.lastIndexOf('@@') + 2)
    .trim()
    .split(' ')
    .map(Number);
  return { wall, cpu: (user + sys) * 1000 };
}

/** `node -e 0` (the node running this script) runs natively whatever the arch. */
const NATIVE = { qemu: null };

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const cpuRatio = (xs, refs) =>
  [...xs, ...refs].every((x) => x.cpu !== null)
    ? (median(xs.map((x) => x.cpu)) / Math.max(1, median(refs.map((x) => x.cpu)))).toFixed(2)
    : 'n/a';

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function rssAfterStart(def, exe, brokerUrl, env) {
  const [file, argv] = runner(def, exe, [
    'mqtt-ping',
    '--broker',
    brokerUrl,
    '--topic',
    'bench/rss',
    '--hold',
    '20',
  ]);
  const child = spawn(file, argv, { env, stdio: 'ignore' });
  // wait until it has connected and published (emulated arches start slowly), then 2 s more
  const deadline = Date.now() + 60_000;
  let published = false;
  while (!published && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    try {
      execFileSync(
        'mosquitto_sub',
        ['-p', brokerUrl.split(':').pop(), '-t', 'bench/rss', '-C', '1', '-W', '1'],
        {
          stdio: 'ignore',
        },
      );
      published = true;
    } catch {
      /* not yet */
    }
  }
  await new Promise((r) => setTimeout(r, 2000));
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
  child.kill();
  const field = (name) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)?.[1]) / 1024;
  return { rss: field('VmRSS'), anon: field('RssAnon'), file: field('RssFile') };
}

const port = await freePort();
const broker = spawn('mosquitto', ['-p', String(port)], { stdio: 'ignore' });
await new Promise((r) => setTimeout(r, 300));
const rows = [];
try {
  for (const arch of arches) {
    const exe = path.join(values.dist, `berth-linux-${arch}`);
    if (!existsSync(exe)) {
      process.stderr.write(`bench: ${exe} missing, skipped (npm run package -- --arch ${arch})\n`);
      continue;
    }
    const def = JSON.parse(readFileSync(path.join(ROOT, 'arch', `${arch}.json`), 'utf8'));
    const m = JSON.parse(readFileSync(`${exe}.json`, 'utf8'));
    const home = mkdtempSync(path.join(tmpdir(), 'berth-bench-'));
    const env = {
      ...process.env,
      HOME: home,
      BERTH_STATE_DIR: path.join(home, 'state'),
      BERTH_LOG_LEVEL: 'warn',
    };
    try {
      const first = timeRun(def, exe, ['version'], env);
      const dbFirst = timeRun(def, exe, ['db-check'], env);
      const times = [];
      const psTimes = [];
      const refs = [];
      // interleaved: a load change hits the reference and both commands alike
      for (let i = 0; i < runs; i++) {
        times.push(timeRun(def, exe, ['version'], env));
        psTimes.push(timeRun(def, exe, ['ps'], env));
        refs.push(timeRun(NATIVE, process.execPath, ['-e', '0'], env));
      }
      const rss = await rssAfterStart(def, exe, `mqtt://127.0.0.1:${port}`, env);
      const ms = (x) => x.toFixed(0);
      const cpu = times.every((x) => x.cpu !== null) ? ms(median(times.map((x) => x.cpu))) : 'n/a';
      rows.push({
        arch,
        packager: m.packager,
        node: m.node.split('@')[1],
        sizeMiB: (m.size / MiB).toFixed(1),
        baseMiB: (m.baseNodeSize / MiB).toFixed(1),
        overMiB: ((m.size - m.baseNodeSize) / MiB).toFixed(1),
        budget: m.size - m.baseNodeSize <= 15 * MiB ? 'ok' : 'OVER',
        versionFirstMs: ms(first.wall),
        versionMedianMs: ms(median(times.map((x) => x.wall))),
        versionCpuMs: cpu,
        psMedianMs: ms(median(psTimes.map((x) => x.wall))),
        psCpuMs: psTimes.every((x) => x.cpu !== null) ? ms(median(psTimes.map((x) => x.cpu))) : 'n/a',
        nodeE0Ms: ms(median(refs.map((x) => x.wall))),
        nodeE0CpuMs: refs.every((x) => x.cpu !== null) ? ms(median(refs.map((x) => x.cpu))) : 'n/a',
        versionVsNode: (median(times.map((x) => x.wall)) / median(refs.map((x) => x.wall))).toFixed(2),
        psVsNode: (median(psTimes.map((x) => x.wall)) / median(refs.map((x) => x.wall))).toFixed(2),
        versionCpuVsNode: cpuRatio(times, refs),
        psCpuVsNode: cpuRatio(psTimes, refs),
        firstDbOpenMs: ms(dbFirst.wall),
        rssMiB: rss.rss.toFixed(1),
        anonMiB: rss.anon.toFixed(1),
        fileMiB: rss.file.toFixed(1),
        mode: def.qemu ? `emulated (${def.qemu})` : 'native',
      });
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  }
} finally {
  broker.kill();
}
const cols = Object.keys(rows[0] ?? {});
const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
const line = (cells) => cells.map((c, i) => String(c).padEnd(widths[i])).join('  ');
process.stdout.write(`${line(cols)}\n`);
for (const r of rows) process.stdout.write(`${line(cols.map((c) => r[c]))}\n`);
process.stdout.write(
  `(version*: start-up of \`berth version\`, first run and median of ${runs}, wall and CPU (user+sys) ms; ` +
    'ps*: `berth ps` with no agent (the state dir made by the first db-check); nodeE0*: `node -e 0` (the node ' +
    'running this script), the reference timed in the same loop; *VsNode: median ratios to it, wall and CPU; ' +
    'firstDbOpenMs: first `db-check`, extraction included; RSS of `mqtt-ping --hold` 2 s after publishing, ' +
    'anon + file-backed (pages of the executable); aim: native x64 <= 150 ms, size <= base + 15 MiB)\n',
);
