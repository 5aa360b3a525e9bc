/**
 * Blob transfer in memory: the fleet's BlobServer and a device's AgentConnection talk through the
 * embedded broker (aedes) over in-memory duplex links, with a manual clock for every timeout, backoff and
 * re-grant — so losses, reordering, duplicates and a broker restart play out without sockets and without
 * waiting out real seconds. The links' fault policies act on real MQTT packets from the broker.
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { AgentConnection } from '../../src/agent/connection.js';
import { ImageRepo } from '../../src/content/images.js';
import { ContentStore } from '../../src/content/store.js';
import { type Db, openDatabase } from '../../src/db/database.js';
import { isBerthError } from '../../src/lib/errors.js';
import { BlobServer } from '../../src/transport/blob-server.js';
import { MqttConnection } from '../../src/transport/connection.js';
import { generateFleetKey, loadPrivateKey, loadPublicKey } from '../../src/transport/signing.js';
import { FLEET, testLog } from '../helpers/fleet-harness.js';
import { putTestImage, type TestImage } from '../helpers/fleet-images.js';
import { drive, ManualClock } from '../helpers/manual-clock.js';
import { type FaultPolicy, isChunkPublish, MemoryBroker } from '../helpers/memory-mqtt.js';

const MiB = 1024 * 1024;
const CHUNK = 256 * 1024;
const LAYER = 4 * MiB + 1000; // 17 chunks, the last one short

async function dir(t: ExecutionContext, name: string): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), `berth-mem-${name}-`));
  t.teardown(() => fsp.rm(d, { recursive: true, force: true }));
  return d;
}

interface Setup {
  broker: MemoryBroker;
  clock: ManualClock;
  server: BlobServer;
  serverConn: MqttConnection;
  img: TestImage;
  /** served as `arm:1`: a single-platform linux/arm64 image (the devices here are linux/amd64) */
  arm: TestImage;
  layer: { digest: `sha256:${string}`; size: number };
  device(opts?: { policy?: FaultPolicy; id?: string; stateDir?: string }): Promise<Device>;
}

interface Device {
  agent: AgentConnection;
  store: ContentStore;
  db: Db;
  stateDir: string;
}

async function setup(t: ExecutionContext): Promise<Setup> {
  const broker = await MemoryBroker.start();
  t.teardown(() => broker.stop());
  const clock = new ManualClock();
  const keys = generateFleetKey();
  const fdir = await dir(t, 'fleet');
  const db = openDatabase(path.join(fdir, 'berth.db'));
  t.teardown(() => db.close());
  const store = new ContentStore(path.join(fdir, 'content'));
  const img = await putTestImage(store, { layerSizes: [LAYER] });
  const layer = img.blobs.find((b) => b.size === LAYER)!;
  const arm = await putTestImage(store, { layerSizes: [1000], platforms: [{ architecture: 'arm64' }] });
  const serverConn = new MqttConnection({
    url: 'mqtt://memory',
    clientId: 'fleet',
    protocolVersion: 'auto',
    log: testLog(),
    streamBuilder: broker.streamBuilder(),
    clock,
    backoff: { initialMs: 100, maxMs: 1000 },
  });
  const server = new BlobServer({
    conn: serverConn,
    fleet: FLEET,
    store,
    db,
    privateKey: loadPrivateKey(keys.privateKeyPem),
    resolveImage: (name) => {
      const i = name === 'mem:1' ? img : name === 'arm:1' ? arm : undefined;
      return i && { mediaType: i.mediaType, digest: i.digest, size: i.blobs[0]!.size };
    },
    log: testLog(),
    clock,
  });
  await serverConn.start();
  await server.start();
  t.teardown(async () => {
    server.stop();
    await serverConn.close();
  });
  const device = async (opts: { policy?: FaultPolicy; id?: string; stateDir?: string } = {}) => {
    const stateDir = opts.stateDir ?? (await dir(t, 'dev'));
    const ddb = openDatabase(path.join(stateDir, 'berth.db'));
    const dstore = new ContentStore(path.join(stateDir, 'content'));
    const agent = new AgentConnection({
      fleet: FLEET,
      deviceId: opts.id ?? 'mem-dev',
      groups: [],
      platform: { os: 'linux', architecture: 'amd64' },
      agentVersion: 'test',
      mqtt: {
        url: 'mqtt://memory',
        protocolVersion: 'auto',
        streamBuilder: broker.streamBuilder(opts.policy),
        clock,
        backoff: { initialMs: 100, maxMs: 1000 },
      },
      store: dstore,
      db: ddb,
      publicKey: loadPublicKey(keys.publicKeyPem),
      log: testLog(),
      presence: false,
      transfer: { window: 8, fanout: false },
    });
    await agent.start();
    t.teardown(async () => {
      await agent.stop();
      ddb.close();
    });
    return { agent, store: dstore, db: ddb, stateDir };
  };
  return { broker, clock, server, serverConn, img, arm, layer, device };
}

/** Pull `mem:1` (or `ref`), driving the manual clock until it settles. */
async function pull(s: Setup, d: Device, ref = 'mem:1') {
  let settled = false;
  const p = d.agent.pullImage(ref).finally(() => {
    settled = true;
  });
  p.catch(() => undefined);
  await drive(s.clock, () => settled, { what: 'the pull' });
  return p;
}

const imageBytes = (img: TestImage) => img.blobs.reduce((n, b) => n + b.size, 0);
const frameIndex = (payload: Buffer) => payload.readUInt32BE(52);

test('loss: chunks the broker drops are granted again after the timeout, each sent once more', async (t) => {
  const s = await setup(t);
  let chunks = 0;
  let dropped = 0;
  const d = await s.device({
    policy: (p) => {
      if (!isChunkPublish(p)) return 'pass';
      if (++chunks % 5 === 0) {
        dropped++;
        return 'drop';
      }
      return 'pass';
    },
  });
  const r = await pull(s, d);
  t.is(r.size, imageBytes(s.img));
  await t.notThrowsAsync(d.store.verify(s.layer.digest));
  const st = d.agent.fetcher.stats;
  t.true(dropped >= 3, `dropped ${dropped}`);
  t.true(st.rerequests >= dropped, `re-granted ${st.rerequests} for ${dropped} lost`);
  t.is(st.receivedBytes, imageBytes(s.img), 'every byte written once');
  t.is(st.duplicateBytes, 0);
  // The fleet sent every chunk once, plus once more for each one lost: no spurious re-sends.
  t.is(s.server.stats.chunksServed, chunks);
  t.is(
    chunks - dropped,
    s.img.blobs.reduce((n, b) => n + Math.max(1, Math.ceil(b.size / CHUNK)), 0),
  );
});

test('reorder: chunks arriving out of order are written in place and the blob hash still comes out right', async (t) => {
  const s = await setup(t);
  let held = 0;
  const count = Math.ceil(LAYER / CHUNK);
  const d = await s.device({
    policy: (p) => {
      if (!isChunkPublish(p) || p.payload.length < 60) return 'pass';
      const frame = p.payload as Buffer;
      if (frame.toString('hex', 8, 40) !== s.layer.digest.slice(7)) return 'pass';
      const i = frameIndex(frame);
      // hold back every even chunk of the layer until the next packet has passed (never the last: no
      // chunk follows it)
      if (i % 2 === 0 && i < count - 1) {
        held++;
        return 'hold';
      }
      return 'pass';
    },
  });
  const r = await pull(s, d);
  t.is(r.size, imageBytes(s.img));
  await t.notThrowsAsync(d.store.verify(s.layer.digest));
  t.true(held >= 8, `held ${held}`);
  const st = d.agent.fetcher.stats;
  t.is(st.duplicateBytes, 0);
  t.is(st.rerequests, 0, 'nothing lost, nothing asked twice');
});

test('duplicates: a chunk delivered twice is written once', async (t) => {
  const s = await setup(t);
  let n = 0;
  let dups = 0;
  const d = await s.device({
    policy: (p) => {
      if (!isChunkPublish(p)) return 'pass';
      if (++n % 3 === 0) {
        dups++;
        return 'dup';
      }
      return 'pass';
    },
  });
  const r = await pull(s, d);
  t.is(r.size, imageBytes(s.img));
  await t.notThrowsAsync(d.store.verify(s.layer.digest));
  const st = d.agent.fetcher.stats;
  t.true(dups >= 5);
  t.true(st.duplicateBytes >= (dups - 1) * CHUNK, `duplicate bytes ${st.duplicateBytes} for ${dups} dups`);
  t.is(st.receivedBytes, imageBytes(s.img));
});

test('broker restart mid-transfer: both sides reconnect (backoff on the manual clock) and the pull completes without starting over', async (t) => {
  const s = await setup(t);
  const d = await s.device();
  let settled = false;
  const p = d.agent.pullImage('mem:1').finally(() => {
    settled = true;
  });
  p.catch(() => undefined);
  const st = d.agent.fetcher.stats;
  await drive(s.clock, () => st.receivedBytes >= LAYER * 0.3 || settled, { what: '30% of the layer' });
  t.false(settled, 'the restart comes mid-transfer');
  const before = st.receivedBytes;
  await s.broker.restart();
  await drive(s.clock, () => settled, { what: 'the pull after the restart' });
  const r = await p;
  t.is(r.size, imageBytes(s.img));
  await t.notThrowsAsync(d.store.verify(s.layer.digest));
  t.true(d.agent.conn.connects >= 2, `device connects ${d.agent.conn.connects}`);
  t.true(s.serverConn.connects >= 2, `fleet connects ${s.serverConn.connects}`);
  t.is(st.receivedBytes, imageBytes(s.img), 'bytes written before the restart were kept');
  t.true(before > 0);
  t.is(s.broker.restarts, 1);
});

test('a device that dies mid-transfer resumes from its recorded bitmap: at most one credit window is fetched twice', async (t) => {
  const s = await setup(t);
  const first = await s.device();
  const st = first.agent.fetcher.stats;
  const p = first.agent.pullImage('mem:1');
  p.catch(() => undefined);
  await drive(s.clock, () => st.receivedBytes >= LAYER / 2, { what: 'half the layer' });
  // kill -9: the link drops, nothing is finished or recorded beyond what already was
  first.agent.fetcher.stop();
  await first.agent.conn.close(false);
  const servedAtKill = s.server.stats.chunksServed;
  const second = await s.device({ stateDir: first.stateDir });
  const r = await pull(s, second);
  t.is(r.size, imageBytes(s.img));
  await t.notThrowsAsync(second.store.verify(s.layer.digest));
  const resumed = second.agent.fetcher.stats.resumedBytes;
  t.true(resumed >= CHUNK, `resumed ${resumed}`);
  const totalChunks = s.img.blobs.reduce((n, b) => n + Math.max(1, Math.ceil(b.size / CHUNK)), 0);
  const twice = s.server.stats.chunksServed - totalChunks;
  t.log(`killed after ${servedAtKill} chunks served; resumed ${resumed} B; chunks sent twice: ${twice}`);
  t.true(twice <= 8, `chunks sent twice ${twice} (window 8)`);
});

test('one image path: a pull goes through the checks an import does; an image for another platform is refused and not recorded', async (t) => {
  const s = await setup(t);
  const d = await s.device();
  const err = await t.throwsAsync(pull(s, d, 'arm:1'));
  t.true(isBerthError(err, 'InvalidInput'), String(err));
  t.regex(err?.message ?? '', /image arm:1 is for linux\/arm64, this device is linux\/amd64/);
  t.is(new ImageRepo(d.db, d.store).find('arm:1'), undefined, 'nothing recorded under the name');
  // the same device pulls an image of its own platform through the same path
  const r = await pull(s, d);
  t.is(r.name, 'mem:1');
  t.is(new ImageRepo(d.db, d.store).find('mem:1')?.digest, s.img.digest);
});
