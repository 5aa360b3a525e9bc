import { type ChildProcess, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { openDatabase } from '../../src/db/database.js';
import { FLEET, startAgent, startFleet, tempDir, waitFor } from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';
import { Mosquitto } from '../helpers/mosquitto.js';

const MiB = 1024 * 1024;

test('broker killed and restarted 5 times during a 64 MiB pull: completes, re-sent bytes reported', async (t) => {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  // Rate-limited so the pull spans the restarts (~32 MiB/s).
  const fleet = await startFleet(t, {
    mqtt: { url: m.url, protocolVersion: 5, backoff: { initialMs: 50, maxMs: 500 } },
    blob: { rateLimit: 32 * MiB },
  });
  const img = await putTestImage(fleet.store, { layerSizes: [64 * MiB] });
  await fleet.addImage('big:1', img.digest, img.mediaType);
  const dev = await startAgent(t, fleet, {
    deviceId: 'dev-restart',
    url: m.url,
    protocolVersion: 5,
    transfer: { requestTimeoutMs: 2000 },
  });

  const pull = dev.agent.pullImage('big:1');
  const stats = dev.agent.fetcher.stats;
  for (let k = 1; k <= 5; k++) {
    await waitFor(() => stats.receivedBytes >= (k * 64 * MiB) / 6.5, 60_000, `progress before restart ${k}`);
    await m.restart(150);
  }
  const r = await pull;
  const layer = img.blobs.find((b) => b.size === 64 * MiB)!;
  t.true(await dev.store.has(layer.digest));
  await t.notThrowsAsync(dev.store.verify(layer.digest));
  t.is(m.restarts, 5);
  t.true(dev.agent.conn.connects >= 6, `connects ${dev.agent.conn.connects}`);
  t.is(r.fetchedBytes, r.size, 'every byte of the image fetched exactly once into the store');
  const st = fleet.server.blobs!.stats;
  const payloadSent = st.attemptedBytes - Math.ceil(st.attemptedBytes / (262144 + 92)) * 92;
  t.log(
    `64 MiB pull, 5 broker restarts: image ${r.size} B; server sent ${st.attemptedBytes} B of frames ` +
      `(≈${payloadSent - r.size} B payload re-sent, ${(((payloadSent - r.size) / r.size) * 100).toFixed(2)}%: chunks lost in the killed broker), ` +
      `device received ${stats.duplicateBytes} B twice, re-requested ${stats.rerequests} chunks`,
  );
});

async function waitExit(p: ChildProcess): Promise<number | null> {
  if (p.exitCode !== null) return p.exitCode;
  return new Promise((r) => p.once('exit', (code) => r(code)));
}

test('berth pull killed with SIGKILL mid-transfer resumes from persisted progress', async (t) => {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const fleet = await startFleet(t, {
    mqtt: { url: m.url, protocolVersion: 5 },
    blob: { rateLimit: 24 * MiB },
  });
  const img = await putTestImage(fleet.store, { layerSizes: [48 * MiB] });
  await fleet.addImage('big:2', img.digest, img.mediaType);
  const stateDir = await tempDir(t, 'pull-cli');
  const bin = path.resolve('dist/berth.mjs');
  const window = 8;
  const args = [
    '--state-dir',
    stateDir,
    '--log-level',
    'warn',
    'pull',
    'big:2',
    '--broker',
    m.url,
    '--fleet',
    FLEET,
    '--device-id',
    'dev-kill',
    '--fleet-key',
    fleet.publicKeyFile,
    '--window',
    String(window),
    '--no-fanout',
  ];
  const first = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (first.exitCode === null) first.kill('SIGKILL');
  });
  // Kill once about 40% of the layer is on the device's disk (as the persisted bitmap says).
  const layer = img.blobs.find((b) => b.size === 48 * MiB)!;
  const dbFile = path.join(stateDir, 'berth.db');
  let persistedChunks = 0;
  let chunkSize = 0;
  await waitFor(
    async () => {
      try {
        await fsp.stat(dbFile);
        const db = openDatabase(dbFile, { integrityCheck: false });
        try {
          const row = db
            .prepare('SELECT bitmap, chunk_size FROM transport_transfers WHERE digest = ?')
            .get(layer.digest) as { bitmap: Buffer; chunk_size: number } | undefined;
          if (!row) return false;
          chunkSize = row.chunk_size;
          persistedChunks = [...row.bitmap].reduce((n, b) => n + popcount(b), 0);
          return persistedChunks * chunkSize >= 0.4 * layer.size;
        } finally {
          db.close();
        }
      } catch {
        return false;
      }
    },
    60_000,
    'pull progress',
  );
  first.kill('SIGKILL');
  await waitExit(first);
  const sentBefore = fleet.server.blobs!.stats.unicastBytes;

  const second = spawn(process.execPath, [bin, ...args.map((a) => (a === 'warn' ? 'info' : a))], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  second.stderr!.on('data', (d) => (err += d));
  const code = await waitExit(second);
  t.is(code, 0, err);
  const db = openDatabase(dbFile);
  t.teardown(() => db.close());
  const row = db.prepare('SELECT digest FROM images WHERE name = ?').get('big:2') as
    | { digest: string }
    | undefined;
  t.truthy(row);
  const blobPath = path.join(stateDir, 'content', 'blobs', 'sha256', layer.digest.slice(7));
  t.is((await fsp.stat(blobPath)).size, layer.size);
  // Bytes the second run fetched of the big layer vs what was missing at kill time.
  const statsLine = err.split('\n').find((l) => l.includes('"pull stats"'));
  t.truthy(statsLine, err);
  const s2 = JSON.parse(statsLine!) as {
    resumedBytes: number;
    receivedBytes: number;
    duplicateBytes: number;
  };
  const resumed = s2.resumedBytes;
  const frame = 92;
  const totalSent = fleet.server.blobs!.stats.unicastBytes;
  const secondRunPayload = totalSent - sentBefore;
  const missing = layer.size - persistedChunks * chunkSize;
  // Payload the server sent over both runs minus the image's size = bytes fetched twice: the chunks in
  // flight (or received but not yet recorded) when the first run was killed. Must stay under a window.
  const st = fleet.server.blobs!.stats;
  const imageBytes = img.blobs.reduce((n, b) => n + b.size, 0);
  const refetched = st.unicastBytes - st.chunksServed * frame - imageBytes;
  t.log(
    `killed at ${persistedChunks} chunks of ${chunkSize} B persisted; second run resumed ${resumed} B, sent ${secondRunPayload} B ` +
      `(incl. ${frame} B/frame headers and small blobs); re-fetched after resume ≈ ${refetched} B; window = ${window * chunkSize} B`,
  );
  t.true(resumed >= persistedChunks * chunkSize, `resumed ${resumed}`);
  t.true(refetched <= window * chunkSize, `re-fetched ${refetched}`);
  t.true(
    secondRunPayload < missing + window * chunkSize + 64 * 1024,
    `second run sent ${secondRunPayload}, missing ${missing}`,
  );
});

function popcount(b: number): number {
  let n = 0;
  for (let x = b; x; x >>= 1) n += x & 1;
  return n;
}
