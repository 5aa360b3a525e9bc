import * as path from 'node:path';
import test from 'ava';
import { ContentStore } from '../../src/content/store.js';
import { openDatabase } from '../../src/db/database.js';
import { loadFleetPrivateKey } from '../../src/fleet/keys.js';
import { FleetServer } from '../../src/fleet/server.js';
import { FLEET_DB_FILE, openFleetStores } from '../../src/fleet/store/index.js';
import { FLEET, startAgent, startFleet, testLog, waitFor } from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';
import { Mosquitto } from '../helpers/mosquitto.js';

const MiB = 1024 * 1024;

test('two fleet servers share requests through an MQTT 5 shared subscription; one dies mid-pull, the other finishes it', async (t) => {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const mqtt = { url: m.url, protocolVersion: 5 as const, backoff: { initialMs: 50, maxMs: 500 } };
  const a = await startFleet(t, { mqtt, blob: { rateLimit: 16 * MiB } });
  const img = await putTestImage(a.store, { layerSizes: [24 * MiB] });
  await a.addImage('shared:1', img.digest, img.mediaType);
  // A second server on the same state (database, content store, fleet key).
  const db = openDatabase(path.join(a.dir, 'berth.db'));
  const stores = openFleetStores(path.join(a.dir, FLEET_DB_FILE));
  const b = new FleetServer({
    fleet: FLEET,
    db,
    stores,
    store: new ContentStore(path.join(a.dir, 'content')),
    privateKey: await loadFleetPrivateKey(a.dir),
    log: testLog(),
    mqtt,
    blob: { rateLimit: 16 * MiB },
  });
  await b.start();
  t.teardown(async () => {
    await b.stop();
    stores.close();
    db.close();
  });
  const dev = await startAgent(t, a, {
    deviceId: 'dev-shared',
    url: m.url,
    protocolVersion: 5,
    transfer: { fanout: false, requestTimeoutMs: 1500 },
  });
  const pull = dev.agent.pullImage('shared:1');
  await waitFor(
    () => a.server.blobs!.stats.chunksServed > 5 && b.blobs!.stats.chunksServed > 5,
    30_000,
    'both servers serving',
  );
  const before = { a: a.server.blobs!.stats.chunksServed, b: b.blobs!.stats.chunksServed };
  await b.stop(); // its share of requests in flight is lost; the device asks again and A answers
  const r = await pull;
  t.is(
    r.size,
    img.blobs.reduce((n, x) => n + x.size, 0),
  );
  await t.notThrowsAsync(dev.store.verify(img.blobs[1]!.digest));
  t.true(a.server.blobs!.stats.chunksServed > before.a);
  t.log(
    `server A served ${a.server.blobs!.stats.chunksServed} chunks, server B ${before.b} before it stopped; re-requests ${dev.agent.fetcher.stats.rerequests}`,
  );
});
