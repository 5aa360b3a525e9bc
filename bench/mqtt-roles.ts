/**
 * The processes of bench/mqtt-transfer.ts, one role each (forked with IPC; never run by hand):
 *
 *   raw-sub  <url> <bytes> <chunk>          MQTT.js subscriber, QoS 1; reports when every message arrived
 *   raw-pub  <url|embedded> <bytes> <chunk> MQTT.js publisher, QoS 1, 32 publishes in flight (the
 *                                            well-behaved publisher's window); with `embedded` it hosts
 *                                            the embedded broker (aedes) in its own process, as
 *                                            `berth fleet serve` does; `embedded-direct`: the same
 *                                            broker, publishing through its in-process API at QoS 0
 *                                            (no client, no loopback socket), as `fleet serve` sends chunks
 *   fleet    <url|embedded> <dir>           a FleetServer (embedded broker when asked) over a content store
 *   device   <url> <dir> <id> <pubkey> <chunk>  an AgentConnection with its own database and content store,
 *                                            asking for chunks of at most <chunk> bytes
 *
 * Every role answers {ready} once connected, then acts on {cmd} messages; timings are taken inside the
 * process that sees the event (first publish / last message, pull start / pull done) and CPU time
 * (user + system, this process) is reported with them.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import * as path from 'node:path';
import { connectAsync } from 'mqtt';
import { AgentConnection } from '../src/agent/connection.js';
import { ContentStore } from '../src/content/store.js';
import { openDatabase } from '../src/db/database.js';
import { startEmbeddedBroker } from '../src/fleet/broker.js';
import { describeFleetImage } from '../src/fleet/image-record.js';
import { keygen, loadFleetPrivateKey, resolvePublicKey } from '../src/fleet/keys.js';
import { FleetServer } from '../src/fleet/server.js';
import { FLEET_DB_FILE, openFleetStores } from '../src/fleet/store/index.js';
import { silentLogger } from '../src/lib/logger.js';
import { putTestImage } from '../test/helpers/fleet-images.js';

const log = silentLogger();
/**
 * The raw MQTT.js reference's topic: shaped like a device's chunk topic (same length class), and inside
 * the fleet's tree, which is all the embedded broker lets anyone use.
 */
const RAW_TOPIC = 'berth/v1/bench/devices/raw-sub/chunks';
const [role, ...argv] = process.argv.slice(2);
const send = (m: unknown) => process.send!(m);
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
/** System CPU time (ms) and minor page faults of this process so far: where a copy-heavy path shows. */
const sysFaults = () => {
  const r = process.resourceUsage();
  return { sysMs: r.systemCPUTime / 1000, faults: r.minorPageFault };
};
/**
 * CPU time (ms) of each thread of this process so far, by thread id (/proc/self/task): the device's main
 * thread (tid = pid), its chunk writer (a worker thread) and V8's and libuv's helpers are told apart.
 */
const threadCpu = (): Map<number, number> => {
  const out = new Map<number, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const f = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      out.set(Number(tid), ((Number(f[11]) + Number(f[12])) * 1000) / 100);
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
};
/** Thread CPU since `a`: the main thread, the busiest other thread (the chunk writer) and the rest. */
const threadSplit = (a: Map<number, number>) => {
  let main = 0;
  const others: number[] = [];
  for (const [tid, ms] of threadCpu()) {
    const d = ms - (a.get(tid) ?? 0);
    if (tid === process.pid) main = d;
    else others.push(d);
  }
  others.sort((x, y) => y - x);
  return { main, busiest: others[0] ?? 0, rest: others.slice(1).reduce((n, x) => n + x, 0) };
};
const since = (a: ReturnType<typeof sysFaults>) => {
  const b = sysFaults();
  return { sysMs: b.sysMs - a.sysMs, faults: b.faults - a.faults };
};
const on = (fn: (m: { cmd: string; [k: string]: unknown }) => Promise<void>) =>
  process.on('message', (m: { cmd: string }) => {
    fn(m).catch((err: unknown) => {
      send({ error: String((err as Error)?.stack ?? err) });
    });
  });
/**
 * BENCH_PROFILE_DIR: a CPU profile of this process's main thread over what the bench times (a device's
 * pull; the fleet between `profile-start` and `profile-stop`), without start-up and module loading.
 */
const profileDir = process.env.BENCH_PROFILE_DIR;
let profiler: Session | undefined;
const profileStart = async () => {
  if (!profileDir) return;
  profiler = new Session();
  profiler.connect();
  await profiler.post('Profiler.enable');
  await profiler.post('Profiler.setSamplingInterval', { interval: 200 });
  await profiler.post('Profiler.start');
};
const profileStop = async (name: string) => {
  if (!profiler || !profileDir) return;
  const { profile } = await profiler.post('Profiler.stop');
  profiler.disconnect();
  profiler = undefined;
  writeFileSync(
    path.join(profileDir, `${name}-${process.pid}-${Date.now()}.cpuprofile`),
    JSON.stringify(profile),
  );
};
process.on('disconnect', () => process.exit(0));
process.on('message', (m: { cmd?: string }) => {
  if (m.cmd === 'exit') process.exit(0); // (a profile, if asked for, is written on a normal exit)
});

if (role === 'raw-sub') {
  const [url, bytes, chunk] = [argv[0]!, Number(argv[1]), Number(argv[2])];
  const n = Math.ceil(bytes / chunk);
  const sub = await connectAsync(url, { protocolVersion: 4, clientId: `raw-sub-${process.pid}` });
  await sub.subscribeAsync(RAW_TOPIC, { qos: 1 });
  let got = 0;
  let c0 = 0;
  let s0 = sysFaults();
  sub.on('message', () => {
    if (got === 0) {
      c0 = cpuMs();
      s0 = sysFaults();
    }
    if (++got === n) {
      send({ done: performance.timeOrigin + performance.now(), cpuMs: cpuMs() - c0, ...since(s0) });
      got = 0;
    }
  });
  on(async () => undefined);
  send({ ready: true });
} else if (role === 'raw-pub') {
  const [where, bytes, chunk] = [argv[0]!, Number(argv[1]), Number(argv[2])];
  const broker =
    where === 'embedded' || where === 'embedded-direct'
      ? await startEmbeddedBroker({
          port: 0,
          log,
          auth: { fleet: 'bench', allowAnonymous: true, authenticate: () => undefined },
        })
      : undefined;
  const url = broker?.url ?? where;
  const direct = where === 'embedded-direct';
  const pub = await connectAsync(url, { protocolVersion: 4, clientId: `raw-pub-${process.pid}` });
  const publish = (cb: () => void) => {
    if (direct) void broker!.publish(RAW_TOPIC, payload, 0).then(cb);
    else pub.publish(RAW_TOPIC, payload, { qos: 1 }, cb);
  };
  const n = Math.ceil(bytes / chunk);
  const payload = Buffer.alloc(chunk, 7);
  on(async (m) => {
    if (m.cmd !== 'go') return;
    const c0 = cpuMs();
    const s0 = sysFaults();
    const start = performance.timeOrigin + performance.now();
    let inflight = 0;
    let next = 0;
    await new Promise<void>((resolve) => {
      const pump = () => {
        while (inflight < 32 && next < n) {
          inflight++;
          next++;
          publish(() => {
            inflight--;
            if (next === n && inflight === 0) resolve();
            else pump();
          });
        }
      };
      pump();
    });
    send({ start, cpuMs: cpuMs() - c0, ...since(s0) });
  });
  send({ ready: true, url });
} else if (role === 'fleet') {
  const [where, dir] = [argv[0]!, argv[1]!];
  const k = await keygen(dir);
  const db = openDatabase(path.join(dir, 'berth.db'));
  const store = new ContentStore(path.join(dir, 'content'));
  const server = new FleetServer({
    fleet: 'bench',
    db,
    stores: openFleetStores(path.join(dir, FLEET_DB_FILE)),
    store,
    privateKey: await loadFleetPrivateKey(dir),
    log,
    // a lab broker: the bench's devices connect without enrolling
    ...(where === 'embedded'
      ? { listen: { port: 0 }, allowAnonymous: true }
      : { mqtt: { url: where, protocolVersion: 'auto' } }),
  });
  await server.start();
  on(async (m) => {
    if (m.cmd === 'image') {
      const img = await putTestImage(store, { layerSizes: [Number(m.bytes)] });
      server.stores.images.put(await describeFleetImage(store, String(m.name), img.digest, img.mediaType));
      send({ image: String(m.name), bytes: img.blobs.reduce((n, b) => n + b.size, 0) });
    } else if (m.cmd === 'cpu') {
      send({ cpuMs: cpuMs() });
    } else if (m.cmd === 'profile-start') {
      await profileStart();
      send({ ok: true });
    } else if (m.cmd === 'profile-stop') {
      await profileStop('fleet');
      send({ ok: true });
    } else if (m.cmd === 'stats') {
      const s = server.blobs!.stats;
      send({ egress: server.blobs!.egressBytes, stream: s.streamBytes, cpuMs: cpuMs(), ...sysFaults() });
    }
  });
  send({ ready: true, url: server.brokerUrl, publicKeyFile: k.publicFile });
} else if (role === 'device') {
  const [url, dir, id, pub, chunk] = [argv[0]!, argv[1]!, argv[2]!, argv[3]!, Number(argv[4])];
  const db = openDatabase(path.join(dir, 'berth.db'));
  const store = new ContentStore(path.join(dir, 'content'));
  const agent = new AgentConnection({
    fleet: 'bench',
    deviceId: id,
    groups: [],
    platform: { os: 'linux', architecture: 'amd64' },
    agentVersion: 'bench',
    mqtt: { url, protocolVersion: 'auto' },
    store,
    db,
    publicKey: await resolvePublicKey(pub),
    log,
    transfer: {
      maxChunk: chunk,
      ...(process.env.BENCH_WINDOW ? { window: Number(process.env.BENCH_WINDOW) } : {}),
      ...(process.env.BENCH_ACK ? { ackEvery: Number(process.env.BENCH_ACK) } : {}),
    },
  });
  await agent.start();
  on(async (m) => {
    if (m.cmd !== 'pull') return;
    await profileStart();
    const c0 = cpuMs();
    const s0 = sysFaults();
    const t0 = threadCpu();
    const start = performance.timeOrigin + performance.now();
    const r = await agent.pullImage(String(m.ref));
    const threads = threadSplit(t0);
    const done = performance.timeOrigin + performance.now();
    await profileStop(`device-${id}`);
    send({
      start,
      done,
      bytes: r.size,
      cpuMs: cpuMs() - c0,
      ...since(s0),
      threads,
      stats: agent.fetcher.stats,
    });
  });
  // CPU so far: node's start, module loading (through tsx here, unlike the bundle), database, connect
  send({ ready: true, startCpuMs: cpuMs() });
} else {
  throw new Error(`unknown role ${role}`);
}
