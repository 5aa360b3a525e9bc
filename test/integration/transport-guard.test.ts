/**
 * The last-resort guard on inbound MQTT messages (src/transport/guard.ts): a listener that throws, or whose
 * promise rejects, costs that message only — the error is logged, the other listeners still get the
 * message, later messages are delivered, and the process sees no exception. Real aedes broker and
 * MqttConnection; no handler of berth's is expected to throw (they validate first), this is what happens if
 * one ever does.
 */
import test from 'ava';
import { startEmbeddedBroker } from '../../src/fleet/broker.js';
import { MqttConnection } from '../../src/transport/connection.js';
import { memoryLog, testLog, waitFor } from '../helpers/fleet-harness.js';

test('a throwing or rejecting message listener drops its message with a log line; nothing crashes', async (t) => {
  // an anonymous lab broker: the embedded broker authenticates every client, anonymous is an explicit opt-in
  const broker = await startEmbeddedBroker({
    port: 0,
    log: testLog(),
    auth: { fleet: 'guard', allowAnonymous: true, authenticate: () => undefined },
  });
  t.teardown(() => broker.close());
  const mem = memoryLog();
  const conn = new MqttConnection({
    url: broker.url,
    clientId: `guard-${process.pid}`,
    protocolVersion: 4,
    log: mem.log,
  });
  const got: string[] = [];
  conn.on('message', (_topic, payload) => {
    if (payload.toString() === 'boom') throw new RangeError('Maximum call stack size exceeded');
  });
  conn.on('message', async (_topic, payload) => {
    if (payload.toString() === 'reject') throw new Error('async handler failed');
  });
  conn.on('message', (_topic, payload) => got.push(payload.toString()));
  await conn.start();
  t.teardown(() => conn.close());
  await conn.subscribe('berth/v1/guard/#', 1);
  for (const p of ['boom', 'reject', 'after']) await conn.publish('berth/v1/guard/x', p, { qos: 1 });
  await waitFor(() => got.includes('after'), 10_000, 'the message after the failures');
  t.deepEqual(got, ['boom', 'reject', 'after']);
  await waitFor(
    () => mem.lines().filter((l) => l.msg === 'message handler failed; message dropped').length === 2,
  );
  const failed = mem.lines().filter((l) => l.msg === 'message handler failed; message dropped');
  t.deepEqual(
    failed.map((l) => [l.topic, l.err]),
    [
      ['berth/v1/guard/x', 'Maximum call stack size exceeded'],
      ['berth/v1/guard/x', 'async handler failed'],
    ],
  );
  t.true(conn.connected);
});
