/**
 * Chunk frames through the fleet's own embedded broker: the fleet hands them to aedes directly
 * (EmbeddedBroker.publish) instead of through its loopback MQTT client. The blob server reuses a frame's
 * buffer as soon as its publish resolves, so the publish must resolve only once every subscriber's socket
 * took the bytes — checked here with a subscriber that stops reading — and unicast pulls and fan-out
 * streams (chunks and the end frame) must arrive whole through that path.
 */
import test from 'ava';
import { connectAsync } from 'mqtt';
import { startEmbeddedBroker } from '../../src/fleet/broker.js';
import { deviceTopic } from '../../src/transport/topics.js';
import { FLEET, startAgent, startFleet, testLog, waitFor } from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';

const MiB = 1024 * 1024;

test('embedded broker publish resolves only once the subscriber took the bytes: buffers reused after it are never seen half-sent', async (t) => {
  const broker = await startEmbeddedBroker({
    port: 0,
    log: testLog(),
    auth: { fleet: FLEET, allowAnonymous: true, authenticate: () => undefined },
  });
  t.teardown(() => broker.close());
  const topic = deviceTopic(FLEET, 'slow', 'chunks');
  const sub = await connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'slow' });
  t.teardown(() => sub.endAsync(true).catch(() => undefined));
  await sub.subscribeAsync(topic, { qos: 0 });
  const got: Buffer[] = [];
  sub.on('message', (_topic, payload) => got.push(payload));

  // 4 buffers of 256 KiB reused for 160 messages (40 MiB): message i is all bytes i % 256.
  const N = 160;
  const pool = Array.from({ length: 4 }, () => Buffer.alloc(256 * 1024));
  const free = [...pool];
  let resolved = 0;
  let waiting: (() => void) | undefined;
  sub.stream.pause(); // the subscriber stops reading: the broker's socket to it fills up
  const sending = (async () => {
    for (let i = 0; i < N; i++) {
      while (free.length === 0) await new Promise<void>((r) => (waiting = r));
      const buf = free.pop()!;
      buf.fill(i % 256);
      void broker.publish(topic, buf, 0).then(() => {
        resolved++;
        free.push(buf);
        const w = waiting;
        waiting = undefined;
        w?.();
      });
    }
  })();
  // while nobody reads, the publishes stall once the socket buffers are full: far from all 40 MiB
  await new Promise((r) => setTimeout(r, 500));
  const stalledAt = resolved;
  t.true(stalledAt < N - 8, `${stalledAt} of ${N} publishes resolved with the subscriber not reading`);
  sub.stream.resume();
  await sending;
  await waitFor(() => got.length === N, 20_000, 'every message');
  t.is(resolved, N);
  const bad = got.flatMap((p, i) => (p.length === 256 * 1024 && p.every((b) => b === i % 256) ? [] : [i]));
  t.deepEqual(bad, [], 'messages whose bytes were overwritten before they were sent');
});

test('fan-out through the fleet’s embedded broker: 4 devices pulling at once cost the fleet about one copy', async (t) => {
  const fleet = await startFleet(t);
  const img = await putTestImage(fleet.store, { layerSizes: [6 * MiB] });
  await fleet.addImage('fan:1', img.digest, img.mediaType);
  const devs = await Promise.all(
    Array.from({ length: 4 }, (_, i) => startAgent(t, fleet, { deviceId: `efan-${i}` })),
  );
  await Promise.all(devs.map((d) => d.agent.pullImage('fan:1')));
  const imageBytes = img.blobs.reduce((n, b) => n + b.size, 0);
  const st = fleet.server.blobs!.stats;
  for (const d of devs) {
    for (const b of img.blobs) await t.notThrowsAsync(d.store.verify(b.digest));
    t.true(d.agent.fetcher.stats.streamBytes > 0, 'took chunks from the stream');
  }
  const ratio = (st.unicastBytes + st.streamBytes) / imageBytes;
  t.log(`4 devices: server egress ${ratio.toFixed(2)}x the image (stream ${st.streamBytes} B)`);
  t.is(st.streams, 1);
  t.true(ratio < 1.5, `egress ${ratio}x`);
});
