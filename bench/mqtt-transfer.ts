/**
 * MQTT blob transfer benchmark. Prints figures and ratios; asserts nothing.
 *
 *   node --import tsx bench/mqtt-transfer.ts [--size-mib 256] [--fanout 20,50] [--fanout-mib 32] [--skip-raw]
 *
 * (a) raw MQTT.js: one client publishes SIZE MiB as QoS 1 messages of CHUNK bytes to a topic another
 *     client subscribes to (QoS 1), through one Mosquitto; time from first publish to last message.
 * (b) berth: a fleet server and an agent (both in this process, each with its own MQTT connection)
 *     through the same Mosquitto; the agent pulls a SIZE MiB single-layer image (plan + windowed
 *     chunks + per-chunk checks + SQLite progress + final sha256 commit).
 * (c) fan-out: N agents pull one image at once; server egress / image size and wall time vs one pull.
 * State dirs live on /dev/shm (the root FS here is erratic for benchmarks).
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { connectAsync } from 'mqtt';
import { AgentConnection } from '../src/agent/connection.js';
import { ContentStore } from '../src/content/store.js';
import { openDatabase } from '../src/db/database.js';
import { describeFleetImage } from '../src/fleet/image-record.js';
import { keygen, loadFleetPrivateKey, resolvePublicKey } from '../src/fleet/keys.js';
import { FleetServer } from '../src/fleet/server.js';
import { FLEET_DB_FILE, openFleetStores } from '../src/fleet/store/index.js';
import { silentLogger } from '../src/lib/logger.js';
import { putTestImage } from '../test/helpers/fleet-images.js';
import { Mosquitto } from '../test/helpers/mosquitto.js';

const MiB = 1024 * 1024;
const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : def;
};
const SIZE = Number(arg('size-mib', '256')) * MiB;
const CHUNK = Number(arg('chunk-kib', '256')) * 1024;
const FANOUT = arg('fanout', '20,50').split(',').filter(Boolean).map(Number);
const FANOUT_SIZE = Number(arg('fanout-mib', '32')) * MiB;
const root = await fsp.mkdtemp('/dev/shm/berth-bench-');
const log = silentLogger();
const mbps = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);

async function rawMqtt(url: string): Promise<number> {
  const sub = await connectAsync(url, { protocolVersion: 5, clientId: 'bench-sub' });
  const pub = await connectAsync(url, { protocolVersion: 5, clientId: 'bench-pub' });
  await sub.subscribeAsync('bench/raw', { qos: 1 });
  const n = Math.ceil(SIZE / CHUNK);
  const payload = Buffer.alloc(CHUNK, 7);
  let got = 0;
  const done = new Promise<void>((resolve) =>
    sub.on('message', () => {
      if (++got === n) resolve();
    }),
  );
  const t0 = performance.now();
  // Keep a window of publishes in flight, as a well-behaved publisher does (mqtt.js has no limit).
  let inflight = 0;
  let next = 0;
  await new Promise<void>((resolve) => {
    const pump = () => {
      while (inflight < 32 && next < n) {
        inflight++;
        next++;
        pub.publish('bench/raw', payload, { qos: 1 }, () => {
          inflight--;
          if (next === n && inflight === 0) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  await done;
  const ms = performance.now() - t0;
  await sub.endAsync();
  await pub.endAsync();
  return ms;
}

async function fleetServer(url: string) {
  const dir = path.join(root, `fleet-${Date.now()}`);
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
    mqtt: { url, protocolVersion: 5 },
  });
  await server.start();
  return { server, store, db, publicKeyFile: k.publicFile };
}

async function agent(url: string, publicKeyFile: string, id: string, fanout: boolean) {
  const dir = path.join(root, `agent-${id}-${Date.now()}`);
  const db = openDatabase(path.join(dir, 'berth.db'));
  const store = new ContentStore(path.join(dir, 'content'));
  const a = new AgentConnection({
    fleet: 'bench',
    deviceId: id,
    groups: [],
    platform: { os: 'linux', architecture: 'amd64' },
    agentVersion: 'bench',
    mqtt: { url, protocolVersion: 5 },
    store,
    db,
    publicKey: await resolvePublicKey(publicKeyFile),
    log,
    transfer: { fanout, window: Number(arg('window', '16')) },
  });
  await a.start();
  return { a, db, dir };
}

const m = await Mosquitto.start([
  'max_inflight_messages 100',
  'max_queued_messages 100000',
  'max_queued_bytes 0',
  'set_tcp_nodelay true',
]);
try {
  const results: Record<string, string | number> = {};
  let rawRate = 0;
  if (!args.includes('--skip-raw')) {
    const ms = await rawMqtt(m.url);
    rawRate = mbps(SIZE, ms);
    console.log(
      `(a) raw MQTT.js QoS1 ${SIZE / MiB} MiB in ${CHUNK / 1024} KiB messages: ${ms.toFixed(0)} ms, ${rawRate.toFixed(1)} MiB/s`,
    );
  }
  const f = await fleetServer(m.url);
  const big = await putTestImage(f.store, { layerSizes: [SIZE] });
  f.server.stores.images.put(await describeFleetImage(f.store, 'big:1', big.digest, big.mediaType));
  {
    const { a, db } = await agent(m.url, f.publicKeyFile, 'single', true);
    const t0 = performance.now();
    const r = await a.pullImage('big:1');
    const ms = performance.now() - t0;
    const rate = mbps(r.size, ms);
    console.log(
      `(b) berth pull ${SIZE / MiB} MiB image: ${ms.toFixed(0)} ms, ${rate.toFixed(1)} MiB/s, server egress ${(f.server.blobs!.egressBytes / r.size).toFixed(3)}x`,
    );
    if (rawRate) console.log(`    ratio berth/raw = ${(rate / rawRate).toFixed(2)} (aim >= 0.9)`);
    results.pull = rate;
    await a.stop();
    db.close();
  }
  if (FANOUT.length) {
    const small = await putTestImage(f.store, { layerSizes: [FANOUT_SIZE] });
    f.server.stores.images.put(await describeFleetImage(f.store, 'fan:1', small.digest, small.mediaType));
    const imageBytes = small.blobs.reduce((n, b) => n + b.size, 0);
    // One pull alone for the wall-time baseline.
    const solo = await agent(m.url, f.publicKeyFile, 'solo', true);
    let t0 = performance.now();
    await solo.a.pullImage('fan:1');
    const soloMs = performance.now() - t0;
    await solo.a.stop();
    solo.db.close();
    console.log(`(c) single pull of ${FANOUT_SIZE / MiB} MiB: ${soloMs.toFixed(0)} ms`);
    for (const n of FANOUT) {
      const agents = await Promise.all(
        Array.from({ length: n }, (_, i) => agent(m.url, f.publicKeyFile, `fan${n}-${i}`, true)),
      );
      const before = f.server.blobs!.egressBytes;
      const streamBefore = f.server.blobs!.stats.streamBytes;
      t0 = performance.now();
      await Promise.all(agents.map((x) => x.a.pullImage('fan:1')));
      const ms = performance.now() - t0;
      const egress = f.server.blobs!.egressBytes - before;
      const stream = f.server.blobs!.stats.streamBytes - streamBefore;
      console.log(
        `    ${n} agents at once: ${ms.toFixed(0)} ms (${(ms / soloMs).toFixed(2)}x single, aim <= 3), server egress ${(egress / MiB).toFixed(1)} MiB = ${(egress / imageBytes).toFixed(2)}x image (aim <= 1.5; stream ${(stream / MiB).toFixed(1)} MiB, unicast ${((egress - stream) / MiB).toFixed(1)} MiB); ` +
          `delivered ${((n * imageBytes) / MiB).toFixed(0)} MiB to ${n} in-process agents = ${mbps(n * imageBytes, ms).toFixed(1)} MiB/s aggregate`,
      );
      await Promise.all(
        agents.map(async (x) => {
          await x.a.stop();
          x.db.close();
          await fsp.rm(x.dir, { recursive: true, force: true });
        }),
      );
    }
  }
  await f.server.stop();
  f.db.close();
} finally {
  await m.stop();
  await fsp.rm(root, { recursive: true, force: true });
}
