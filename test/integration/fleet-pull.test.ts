import test from 'ava';
import type { SignedTarget } from '../../src/transport/messages.js';
import { startAgent, startFleet, waitFor } from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';
import { Mosquitto } from '../helpers/mosquitto.js';

for (const broker of ['embedded', 'mosquitto'] as const) {
  test(`push → deploy → agent receives the signed target and pulls every blob (${broker} broker)`, async (t) => {
    let mqtt: { url: string; protocolVersion: 5 } | undefined;
    if (broker === 'mosquitto') {
      const m = await Mosquitto.start();
      t.teardown(() => m.stop());
      mqtt = { url: m.url, protocolVersion: 5 };
    }
    const fleet = await startFleet(t, { mqtt });
    const img = await putTestImage(fleet.store, {
      layerSizes: [3 * 1024 * 1024 + 17, 1000],
      platforms: [{ architecture: 'amd64' }, { architecture: 'arm64' }],
    });
    await fleet.addImage('app:1', img.digest, img.mediaType);
    const dev = await startAgent(t, fleet, { deviceId: 'dev1', groups: ['g1'] });
    const got: SignedTarget[] = [];
    dev.agent.on('target', (s) => got.push(s));

    await fleet.deploy(
      { kind: 'device', id: 'dev1' },
      { apps: { web: { services: { main: { image: 'app:1' } } } }, images: ['app:1'] },
    );
    await waitFor(() => got.length === 1, 10_000, 'target');
    t.is(got[0]!.target.version, 1);
    t.deepEqual(got[0]!.target.images, [{ name: 'app:1', digest: img.digest }]);

    const pulled = await dev.agent.pullImage('app:1', { expectDigest: img.digest });
    t.is(pulled.indexDigest, img.digest);
    t.is(pulled.platform, 'linux/amd64');
    // Every amd64 blob present and verified; arm64 layers not fetched.
    const manifest = JSON.parse((await dev.store.get(pulled.digest)).toString());
    for (const d of [manifest.config.digest, ...manifest.layers.map((l: { digest: string }) => l.digest)]) {
      t.true(await dev.store.has(d), d);
      await t.notThrowsAsync(dev.store.verify(d));
    }
    const row = dev.db.prepare('SELECT * FROM images WHERE name = ?').get('app:1') as {
      digest: string;
      index_digest: string;
    };
    t.is(row.digest, pulled.digest);
    t.is(row.index_digest, img.digest);
    t.is((dev.db.prepare('SELECT COUNT(*) AS n FROM transport_transfers').get() as { n: number }).n, 0);
    // The fleet saw the device online, with its groups.
    await waitFor(
      () => fleet.stores.devices.get('dev1')?.online === true,
      5000,
      'device online in the fleet',
    );
    t.deepEqual(fleet.stores.devices.get('dev1')!.groups, ['g1']);
  });
}

test('fan-out: 6 devices pulling one image at once cost the server about one copy', async (t) => {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const fleet = await startFleet(t, { mqtt: { url: m.url, protocolVersion: 5 } });
  const img = await putTestImage(fleet.store, { layerSizes: [6 * 1024 * 1024] });
  await fleet.addImage('fan:1', img.digest, img.mediaType);
  const devs = await Promise.all(
    Array.from({ length: 6 }, (_, i) =>
      startAgent(t, fleet, { deviceId: `fan-${i}`, url: m.url, protocolVersion: 5 }),
    ),
  );
  await Promise.all(devs.map((d) => d.agent.pullImage('fan:1')));
  const imageBytes = img.blobs.reduce((n, b) => n + b.size, 0);
  const st = fleet.server.blobs!.stats;
  for (const d of devs) {
    await t.notThrowsAsync(d.store.verify(img.blobs[1]!.digest));
    t.true(d.agent.fetcher.stats.streamBytes > 0, 'took chunks from the stream');
  }
  const ratio = (st.unicastBytes + st.streamBytes) / imageBytes;
  t.log(
    `6 devices: server egress ${(ratio).toFixed(2)}x the image (stream ${st.streamBytes} B, unicast ${st.unicastBytes} B)`,
  );
  t.is(st.streams, 1);
  t.true(ratio < 1.5, `egress ${ratio}x`);
});

test('fan-out carousel: a device that asks mid-stream gets the part it missed from the stream, not by unicast', async (t) => {
  // The stream is rate-limited so it lasts ~3 s: long enough for the late joiner to ask mid-stream even on
  // a loaded machine (at 6 MiB/s it had ended before the late request arrived, under load 15).
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const fleet = await startFleet(t, {
    mqtt: { url: m.url, protocolVersion: 5 },
    blob: { rateLimit: 2 * 1024 * 1024 },
  });
  const img = await putTestImage(fleet.store, { layerSizes: [6 * 1024 * 1024] });
  await fleet.addImage('late:1', img.digest, img.mediaType);
  const early = await Promise.all(
    [0, 1, 2].map((i) => startAgent(t, fleet, { deviceId: `early-${i}`, url: m.url, protocolVersion: 5 })),
  );
  const late = await startAgent(t, fleet, { deviceId: 'late', url: m.url, protocolVersion: 5 });
  const pulls = early.map((d) => d.agent.pullImage('late:1'));
  const st = fleet.server.blobs!.stats;
  await waitFor(() => st.streamBytes > 1024 * 1024, 30_000, 'stream under way');
  await Promise.all([...pulls, late.agent.pullImage('late:1')]);
  const layer = img.blobs[1]!;
  await t.notThrowsAsync(late.store.verify(layer.digest));
  const imageBytes = img.blobs.reduce((n, b) => n + b.size, 0);
  const ratio = (st.unicastBytes + st.streamBytes) / imageBytes;
  t.log(
    `late joiner: stream gave it ${late.agent.fetcher.stats.streamBytes} B; server egress ${ratio.toFixed(2)}x the image`,
  );
  t.true(late.agent.fetcher.stats.streamBytes > layer.size / 2, 'most of the blob came from the stream');
  t.true(ratio < 2.1, `egress ${ratio}x: one late joiner costs at most one extra turn`);
});
