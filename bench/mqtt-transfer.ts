/**
 * MQTT blob transfer benchmark. Prints figures and ratios against references measured in the same run;
 * asserts nothing. Every party is its own process (bench/mqtt-roles.ts), as on real machines:
 *
 *   node --import tsx bench/mqtt-transfer.ts [--size-mib 256] [--chunk-kib 256] [--runs 3]
 *        [--brokers mosquitto,aedes] [--fanout 20] [--fanout-mib 32] [--skip-single] [--skip-fanout]
 *        [--mosquitto-malloc-tuned] [--device-warm-mib 0]
 *
 * Per broker (Mosquitto as its own process; the embedded aedes inside the sending process, where
 * `berth fleet serve` runs it):
 * (a) reference: raw MQTT.js — one process publishes SIZE MiB as QoS 1 messages of CHUNK bytes (32 in
 *     flight), another subscribes at QoS 1; time from the first publish to the last message.
 *     With aedes also (a'): the broker's own publish API at QoS 0 in the process hosting it (no client,
 *     no loopback socket) to the same subscriber — the path `fleet serve` sends chunks on, so berth's
 *     ratio to it is printed too.
 * (b) berth: a fleet server process and a device process (AgentConnection) through the same broker; the
 *     device pulls a SIZE MiB single-layer image (resolve, signed plan, credit-window stream, per-chunk
 *     checks, batched progress, whole-blob sha256, commit). The chunk plan is computed once by an untimed
 *     warm-up pull from another device, as a fleet serving many devices has it cached.
 *     (a) and (b) alternate `runs` times; medians and their ratio are printed (aim >= 0.9).
 * (c) fan-out: N device processes pull one FANOUT MiB image at once; wall time vs one device process
 *     pulling it alone (same run; aim <= 3x) and server egress / image size (aim <= 1.5x). In-run
 *     reference: N raw MQTT.js subscriber processes receiving FANOUT MiB from one publisher through the
 *     same broker (QoS 1, same chunks), so berth-fan-out / raw-fan-out is printed too; and the CPU-bound
 *     floor of each (CPU time of every process, broker included, / cores): N processes on few cores
 *     cannot finish sooner than that. Repeated `runs` times (fresh device processes each time); the
 *     device's CPU per pull is split by thread (main, chunk writer, V8/libuv helpers) and set against a
 *     raw subscriber's, and the CPU a device spent before it was ready (start-up, not timed) is printed.
 * State dirs live on /dev/shm (the root FS here is erratic for benchmarks).
 *
 * `--mosquitto-malloc-tuned` starts Mosquitto with the glibc malloc settings docs/protocol.md recommends
 * (Connections); without it, many berth runs show ~96,000 broker page faults per 256 MiB (see there).
 *
 * Profiling: BENCH_PROFILE_DIR=<dir> writes a CPU profile of the device's main thread over each timed
 * pull and of the fleet over the same span; BENCH_NODE_ARGS is passed to every role (e.g. --cpu-prof),
 * BENCH_DEVICE_NODE_ARGS to the device alone (e.g. the V8 settings the agent runs with).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { Mosquitto } from '../test/helpers/mosquitto.js';

const MiB = 1024 * 1024;
const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : def;
};
const SIZE = Number(arg('size-mib', '256')) * MiB;
const CHUNK = Number(arg('chunk-kib', '256')) * 1024;
const RUNS = Number(arg('runs', '3'));
const BROKERS = arg('brokers', 'mosquitto,aedes').split(',').filter(Boolean);
const FANOUT = Number(arg('fanout', '20'));
const FANOUT_SIZE = Number(arg('fanout-mib', '32')) * MiB;
/**
 * `--device-warm-mib N`: each fan-out device process first pulls another image of N MiB (untimed), so
 * the timed pull is a running agent's next pull (code compiled, chunk writer thread up, heap grown), not
 * the first pull of a fresh process.
 */
const DEVICE_WARM = Number(arg('device-warm-mib', '0')) * MiB;
/** glibc malloc settings for Mosquitto (docs/protocol.md, Connections). */
const MOSQUITTO_MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '4194304', MALLOC_TRIM_THRESHOLD_: '67108864' };
const root = await fsp.mkdtemp('/dev/shm/berth-bench-');
const ROLES = path.join(import.meta.dirname, 'mqtt-roles.ts');
const children = new Set<ChildProcess>();

interface Msg {
  [k: string]: unknown;
}

class Role {
  private readonly inbox: Msg[] = [];
  private waiter: ((m: Msg) => void) | undefined;
  readonly proc: ChildProcess;
  /** a device's CPU before it was ready */
  startCpuMs = 0;
  constructor(role: string, argv: string[]) {
    this.proc = fork(ROLES, [role, ...argv], {
      execArgv: [
        '--import',
        'tsx',
        ...(process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
        // the device alone, e.g. the V8 settings the agent runs with (src/agent/memory.ts)
        ...(role === 'device' ? (process.env.BENCH_DEVICE_NODE_ARGS?.split(' ').filter(Boolean) ?? []) : []),
      ],
      stdio: 'inherit',
    });
    children.add(this.proc);
    this.proc.on('exit', (code, signal) => {
      children.delete(this.proc);
      // A role that dies before answering must not leave the bench waiting forever.
      if (this.waiter && (code || signal)) {
        const w = this.waiter;
        this.waiter = undefined;
        console.error(`${role}: exited (${code ?? signal}) before answering`);
        process.exitCode = 1;
        w({ error: `${role} exited` });
      }
    });
    this.proc.on('message', (m: Msg) => {
      if (m.error) {
        console.error(`${role}: ${m.error}`);
        process.exitCode = 1;
      }
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(m);
      } else this.inbox.push(m);
    });
  }
  next(): Promise<Msg> {
    const m = this.inbox.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }
  async ask(m: Msg): Promise<Msg> {
    this.proc.send(m);
    return this.next();
  }
  stop(): void {
    if (this.proc.connected) this.proc.send({ cmd: 'exit' });
    setTimeout(() => this.proc.kill('SIGKILL'), 2000).unref();
  }
}

/** CPU time (user + system) of another process so far, in ms (the broker's). */
const procCpuMs = (pid: number | undefined): number => {
  if (!pid) return 0;
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime in clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
};

/**
 * Read and write syscalls and minor page faults of another process so far (the broker's): many small
 * syscalls mean a slow reader; page faults mean its heap grows and shrinks (buffers queued, then freed).
 */
const procIo = (pid: number | undefined): { r: number; w: number; faults: number } => {
  if (!pid) return { r: 0, w: 0, faults: 0 };
  try {
    const io = Object.fromEntries(
      readFileSync(`/proc/${pid}/io`, 'utf8')
        .trim()
        .split('\n')
        .map((l) => l.split(': ')),
    ) as Record<string, string>;
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return { r: Number(io.syscr), w: Number(io.syscw), faults: Number(stat[7]) };
  } catch {
    return { r: 0, w: 0, faults: 0 };
  }
};
const ioDelta = (a: ReturnType<typeof procIo>, b: ReturnType<typeof procIo>) => ({
  r: b.r - a.r,
  w: b.w - a.w,
  faults: b.faults - a.faults,
});

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const rate = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);
let dirs = 0;
const freshDir = async (name: string) => {
  const d = path.join(root, `${name}-${++dirs}`);
  await fsp.mkdir(d, { recursive: true });
  return d;
};

/** A process's system CPU time and minor page faults over the timed span. */
interface SysFaults {
  sysMs: number;
  faults: number;
}
const sysFaults = (m: Msg): SysFaults => ({ sysMs: Number(m.sysMs), faults: Number(m.faults) });
const fmtSys = (s: SysFaults | undefined) =>
  s ? ` (sys ${s.sysMs.toFixed(0)}, ${(s.faults / 1000).toFixed(1)}k faults)` : '';

interface Cpu {
  send: number;
  recv: number;
  sendSys?: SysFaults;
  recvSys?: SysFaults;
  broker: number;
  /** the broker's read and write syscalls */
  brokerIo?: { r: number; w: number; faults: number };
}
const fmtCpu = (c: Cpu, what: [string, string]) =>
  `cpu ${what[0]} ${c.send.toFixed(0)}${fmtSys(c.sendSys)} + ${what[1]} ${c.recv.toFixed(0)}${fmtSys(c.recvSys)}${c.broker ? ` + broker ${c.broker.toFixed(0)}` : ''} ms` +
  (c.brokerIo?.r || c.brokerIo?.w
    ? `, broker syscalls r ${c.brokerIo.r} w ${c.brokerIo.w}, page faults ${c.brokerIo.faults}`
    : '');

/**
 * The raw fan-out reference: one MQTT.js publisher, `n` subscriber processes (all connected first), the
 * same bytes; wall from the first publish to the last subscriber's last message.
 */
async function rawFanout(
  where: string,
  brokerPid: number | undefined,
  n: number,
  bytes: number,
): Promise<{ ms: number; cpuMs: number; subCpuMs: number[]; subSys: SysFaults[] }> {
  const pub = new Role('raw-pub', [where, String(bytes), String(CHUNK)]);
  const ready = await pub.next();
  const subs = Array.from(
    { length: n },
    () => new Role('raw-sub', [String(ready.url), String(bytes), String(CHUNK)]),
  );
  await Promise.all(subs.map((s) => s.next()));
  const b0 = procCpuMs(brokerPid);
  const [p, ...done] = await Promise.all([pub.ask({ cmd: 'go' }), ...subs.map((s) => s.next())]);
  const broker = procCpuMs(brokerPid) - b0;
  pub.stop();
  for (const s of subs) s.stop();
  return {
    ms: Math.max(...done.map((d) => Number(d.done))) - Number(p!.start),
    cpuMs: Number(p!.cpuMs) + done.reduce((c, d) => c + Number(d.cpuMs), 0) + broker,
    subCpuMs: done.map((d) => Number(d.cpuMs)),
    subSys: done.map(sysFaults),
  };
}

async function rawOnce(where: string, brokerPid: number | undefined): Promise<{ ms: number; cpu: Cpu }> {
  const pub = new Role('raw-pub', [where, String(SIZE), String(CHUNK)]);
  const ready = await pub.next();
  const sub = new Role('raw-sub', [String(ready.url), String(SIZE), String(CHUNK)]);
  await sub.next();
  const b0 = procCpuMs(brokerPid);
  const io0 = procIo(brokerPid);
  const [p, s] = await Promise.all([pub.ask({ cmd: 'go' }), sub.next()]);
  const broker = procCpuMs(brokerPid) - b0;
  const io1 = procIo(brokerPid);
  pub.stop();
  sub.stop();
  return {
    ms: Number(s.done) - Number(p.start),
    cpu: {
      send: Number(p.cpuMs),
      recv: Number(s.cpuMs),
      sendSys: sysFaults(p),
      recvSys: sysFaults(s),
      broker,
      brokerIo: ioDelta(io0, io1),
    },
  };
}

async function device(url: string, pubKey: string, id: string, warmRef?: string): Promise<Role> {
  // the same chunk size as the raw reference (the broker's packet limit permitting)
  const d = new Role('device', [url, await freshDir(id), id, pubKey, String(CHUNK)]);
  d.startCpuMs = Number((await d.next()).startCpuMs);
  if (warmRef) d.startCpuMs += (await pull(d, warmRef)).cpuMs;
  return d;
}

interface Pulled {
  start: number;
  done: number;
  bytes: number;
  cpuMs: number;
  sys: SysFaults;
  /** CPU of the device's threads over the pull: main, the busiest other (the chunk writer), the rest */
  threads: { main: number; busiest: number; rest: number };
  /** CPU the device process spent before it was ready (start-up, modules, database, connect) */
  startCpuMs: number;
  stats: { rerequests: number; duplicateBytes: number; streamBytes: number };
}
async function pull(d: Role, ref: string): Promise<Pulled> {
  const r = await d.ask({ cmd: 'pull', ref });
  return {
    start: Number(r.start),
    done: Number(r.done),
    bytes: Number(r.bytes),
    cpuMs: Number(r.cpuMs),
    sys: sysFaults(r),
    threads: r.threads as Pulled['threads'],
    startCpuMs: d.startCpuMs,
    stats: r.stats as Pulled['stats'],
  };
}

async function benchBroker(kind: string): Promise<void> {
  const tuned = kind === 'mosquitto' && args.includes('--mosquitto-malloc-tuned');
  // only the broker gets them (it inherits this environment at spawn; the roles are forked later)
  if (tuned) Object.assign(process.env, MOSQUITTO_MALLOC_ENV);
  const m =
    kind === 'mosquitto'
      ? await Mosquitto.start([
          'max_inflight_messages 100',
          'max_queued_messages 100000',
          'max_queued_bytes 0',
          'set_tcp_nodelay true',
        ]).finally(() => {
          if (tuned) for (const k of Object.keys(MOSQUITTO_MALLOC_ENV)) delete process.env[k];
        })
      : undefined;
  const where = m?.url ?? 'embedded';
  const fleet = new Role('fleet', [where, await freshDir('fleet')]);
  try {
    const f = await fleet.next();
    const url = String(f.url);
    const pubKey = String(f.publicKeyFile);
    console.log(`\n== ${kind} (${url})${tuned ? ' with glibc malloc tuned' : ''}`);
    if (!args.includes('--skip-single')) {
      await fleet.ask({ cmd: 'image', name: 'big:1', bytes: SIZE });
      const warm = await device(url, pubKey, 'warm');
      await pull(warm, 'big:1'); // computes and caches the chunk plan, fills the page cache
      warm.stop();
      const raw: number[] = [];
      const direct: number[] = [];
      const berth: number[] = [];
      const rawCpu: number[] = [];
      const berthCpu: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        const r = await rawOnce(where, m?.pid);
        raw.push(r.ms);
        // the embedded broker's own publish API, no client: the path `fleet serve` sends chunks on
        const rd = where === 'embedded' ? await rawOnce('embedded-direct', undefined) : undefined;
        if (rd) direct.push(rd.ms);
        rawCpu.push(r.cpu.send + r.cpu.recv + r.cpu.broker);
        const d = await device(url, pubKey, `single-${i}`);
        if (process.env.BENCH_PROFILE_DIR) await fleet.ask({ cmd: 'profile-start' });
        const f0 = await fleet.ask({ cmd: 'stats' });
        const b0 = procCpuMs(m?.pid);
        const io0 = procIo(m?.pid);
        const b = await pull(d, 'big:1');
        const io1 = procIo(m?.pid);
        const f1 = await fleet.ask({ cmd: 'stats' });
        if (process.env.BENCH_PROFILE_DIR) await fleet.ask({ cmd: 'profile-stop' });
        const cpu: Cpu = {
          send: Number(f1.cpuMs) - Number(f0.cpuMs),
          recv: b.cpuMs,
          sendSys: {
            sysMs: Number(f1.sysMs) - Number(f0.sysMs),
            faults: Number(f1.faults) - Number(f0.faults),
          },
          recvSys: b.sys,
          broker: procCpuMs(m?.pid) - b0,
          brokerIo: ioDelta(io0, io1),
        };
        const egress = (Number(f1.egress) - Number(f0.egress)) / b.bytes;
        d.stop();
        berth.push(b.done - b.start);
        berthCpu.push(cpu.send + cpu.recv + cpu.broker);
        console.log(
          `  run ${i + 1}: raw MQTT.js ${r.ms.toFixed(0)} ms (${rate(SIZE, r.ms).toFixed(1)} MiB/s, ${fmtCpu(r.cpu, ['pub', 'sub'])}); ` +
            (rd
              ? `in-process publish ${rd.ms.toFixed(0)} ms (${rate(SIZE, rd.ms).toFixed(1)} MiB/s, ${fmtCpu(rd.cpu, ['broker+pub', 'sub'])}); `
              : '') +
            `berth pull ${(b.done - b.start).toFixed(0)} ms (${rate(b.bytes, b.done - b.start).toFixed(1)} MiB/s, ${fmtCpu(cpu, ['fleet', 'device'])}; ` +
            `device threads: main ${b.threads.main.toFixed(0)}, chunk writer ${b.threads.busiest.toFixed(0)}, other ${b.threads.rest.toFixed(0)}; ` +
            `egress ${egress.toFixed(3)}x, re-granted ${b.stats.rerequests} chunks)`,
        );
      }
      const rawRate = rate(SIZE, median(raw));
      const berthRate = rate(SIZE, median(berth));
      console.log(
        `RESULT mqtt-pull-${kind} ${SIZE / MiB} MiB in ${CHUNK / 1024} KiB chunks: raw MQTT.js QoS1 median ${rawRate.toFixed(1)} MiB/s, ` +
          `berth pull median ${berthRate.toFixed(1)} MiB/s, ratio berth/raw = ${(berthRate / rawRate).toFixed(2)} (aim >= 0.9); ` +
          `cpu (all processes) median raw ${median(rawCpu).toFixed(0)} ms, berth ${median(berthCpu).toFixed(0)} ms = ${(median(berthCpu) / median(rawCpu)).toFixed(2)}x; ` +
          `berth/raw per run ${raw.map((r, i) => (r / berth[i]!).toFixed(2)).join(' ')}`,
      );
      if (direct.length)
        console.log(
          `RESULT mqtt-pull-${kind}-in-process ${SIZE / MiB} MiB: the broker's own publish (QoS 0, 32 in flight, no client) -> MQTT.js subscriber median ${rate(SIZE, median(direct)).toFixed(1)} MiB/s, ` +
            `berth pull / that = ${(berthRate / rate(SIZE, median(direct))).toFixed(2)}; per run ${direct.map((r, i) => (r / berth[i]!).toFixed(2)).join(' ')}`,
        );
    }
    if (!args.includes('--skip-fanout') && FANOUT > 0) {
      const img = await fleet.ask({ cmd: 'image', name: 'fan:1', bytes: FANOUT_SIZE });
      const warmRef = DEVICE_WARM > 0 ? 'devwarm:1' : undefined;
      if (warmRef) await fleet.ask({ cmd: 'image', name: warmRef, bytes: DEVICE_WARM });
      const imageBytes = Number(img.bytes);
      const warm = await device(url, pubKey, 'fan-warm');
      await pull(warm, 'fan:1');
      warm.stop();
      const cores = availableParallelism();
      const walls: number[] = [];
      const rawWalls: number[] = [];
      const solos: number[] = [];
      const devCpus: number[] = [];
      const subCpus: number[] = [];
      for (let run = 0; run < RUNS; run++) {
        // All device processes up and connected first: the figures are the pulls, not node's start.
        const devs = await Promise.all(
          Array.from({ length: FANOUT }, (_, i) => device(url, pubKey, `fan-${run}-${i}`, warmRef)),
        );
        const solo = await device(url, pubKey, `fan-solo-${run}`, warmRef);
        const s = await pull(solo, 'fan:1');
        solo.stop();
        const soloMs = s.done - s.start;
        const before = await fleet.ask({ cmd: 'stats' });
        const b0 = procCpuMs(m?.pid);
        const rs = await Promise.all(devs.map((d) => pull(d, 'fan:1')));
        const brokerCpu = procCpuMs(m?.pid) - b0;
        const after = await fleet.ask({ cmd: 'stats' });
        for (const d of devs) d.stop();
        const wall = Math.max(...rs.map((r) => r.done)) - Math.min(...rs.map((r) => r.start));
        const egress = Number(after.egress) - Number(before.egress);
        const stream = Number(after.stream) - Number(before.stream);
        const fleetCpu = Number(after.cpuMs) - Number(before.cpuMs);
        const cpu = rs.reduce((c, r) => c + r.cpuMs, 0) + fleetCpu + brokerCpu;
        const raw = await rawFanout(where, m?.pid, FANOUT, imageBytes);
        const devCpu = median(rs.map((r) => r.cpuMs));
        const subCpu = median(raw.subCpuMs);
        const th = (k: 'main' | 'busiest' | 'rest') => median(rs.map((r) => r.threads[k])).toFixed(0);
        const medSys = (xs: SysFaults[]) => ({
          sysMs: median(xs.map((x) => x.sysMs)),
          faults: median(xs.map((x) => x.faults)),
        });
        walls.push(wall);
        rawWalls.push(raw.ms);
        solos.push(soloMs);
        devCpus.push(devCpu);
        subCpus.push(subCpu);
        console.log(
          `  run ${run + 1}: single device pull of ${FANOUT_SIZE / MiB} MiB: ${soloMs.toFixed(0)} ms (device cpu ${s.cpuMs.toFixed(0)} ms); ${FANOUT} devices at once: ${wall.toFixed(0)} ms ` +
            `(device cpu median ${devCpu.toFixed(0)} ms${fmtSys(medSys(rs.map((r) => r.sys)))}: main thread ${th('main')}, chunk writer ${th('busiest')}, other threads ${th('rest')}; ` +
            `per device received twice ${(median(rs.map((r) => r.stats.duplicateBytes)) / MiB).toFixed(1)} MiB (max ${(Math.max(...rs.map((r) => r.stats.duplicateBytes)) / MiB).toFixed(1)}), from the stream ${(median(rs.map((r) => r.stats.streamBytes)) / MiB).toFixed(1)} MiB; ` +
            `device start-up${warmRef ? ' and warm-up pull' : ''} cpu median ${median(rs.map((r) => r.startCpuMs)).toFixed(0)} ms (not in the pull); fleet ${fleetCpu.toFixed(0)}, broker ${brokerCpu.toFixed(0)} ms; ` +
            `server egress ${(egress / MiB).toFixed(1)} MiB: stream ${(stream / MiB).toFixed(1)}, unicast ${((egress - stream) / MiB).toFixed(1)}; ` +
            `cpu all processes ${cpu.toFixed(0)} ms, floor on ${cores} cores ${(cpu / cores).toFixed(0)} ms); ` +
            `raw MQTT.js 1 publisher -> ${FANOUT} subscriber processes: ${raw.ms.toFixed(0)} ms (subscriber cpu median ${subCpu.toFixed(0)} ms${fmtSys(medSys(raw.subSys))}; cpu all processes ${raw.cpuMs.toFixed(0)} ms, floor ${(raw.cpuMs / cores).toFixed(0)} ms)`,
        );
        console.log(
          `  run ${run + 1}: wall ${(wall / soloMs).toFixed(2)}x a single pull, ${(wall / raw.ms).toFixed(2)}x raw fan-out; device cpu / raw subscriber cpu ${(devCpu / subCpu).toFixed(2)}; ` +
            `wall / cpu-bound floor: berth ${(wall / (cpu / cores)).toFixed(2)}, raw ${(raw.ms / (raw.cpuMs / cores)).toFixed(2)}; ` +
            `server egress ${(egress / imageBytes).toFixed(2)}x the image (aim <= 1.5)`,
        );
      }
      const per = (xs: number[], ys: number[]) => xs.map((x, i) => (x / ys[i]!).toFixed(2)).join(' ');
      console.log(
        `RESULT mqtt-fanout-${kind} ${FANOUT} device processes, ${FANOUT_SIZE / MiB} MiB, ${RUNS} runs: median wall ${median(walls).toFixed(0)} ms = ` +
          `${(median(walls) / median(solos)).toFixed(2)}x a single pull (aim <= 3; per run ${per(walls, solos)}), ` +
          `${(median(walls) / median(rawWalls)).toFixed(2)}x raw MQTT.js fan-out to ${FANOUT} processes (per run ${per(walls, rawWalls)}); ` +
          `device cpu per pull median ${median(devCpus).toFixed(0)} ms vs raw subscriber ${median(subCpus).toFixed(0)} ms = ${(median(devCpus) / median(subCpus)).toFixed(2)}x (per run ${per(devCpus, subCpus)})`,
      );
    }
  } finally {
    fleet.stop();
    await m?.stop();
  }
}

try {
  for (const kind of BROKERS) await benchBroker(kind);
} finally {
  // Children were asked to exit; give them a moment (profiles are written at exit), then kill the rest.
  for (let i = 0; i < 30 && children.size > 0; i++) await new Promise((r) => setTimeout(r, 100));
  for (const c of children) c.kill('SIGKILL');
  await fsp.rm(root, { recursive: true, force: true });
}
