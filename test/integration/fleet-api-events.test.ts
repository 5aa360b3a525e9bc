/**
 * The live event stream (SSE) over real HTTP: events from the bus reach the client, filtered; a slow
 * client's backlog is bounded (resync instead of unbounded memory); heartbeats; a revoked token ends
 * the stream; no credentials → 401.
 */
import test from 'ava';
import { FleetBus } from '../../src/fleet/bus.js';
import { Caller, startApi } from '../helpers/fleet-api.js';

const LOCAL = { kind: 'local' as const, name: 'root', role: 'admin' as const, userId: null };

/** Read SSE frames from a fetch response until `until` says stop (or the stream ends). */
async function frames(res: Response, until: (all: string[]) => boolean): Promise<string[]> {
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  const out: string[] = [];
  while (!until(out)) {
    const { done, value } = await reader.read();
    if (done) {
      out.push('<end>');
      break;
    }
    buf += dec.decode(value, { stream: true });
    let i = buf.indexOf('\n\n');
    while (i >= 0) {
      out.push(buf.slice(0, i));
      buf = buf.slice(i + 2);
      i = buf.indexOf('\n\n');
    }
  }
  await reader.cancel().catch(() => undefined);
  return out;
}

function open(url: string, token: string, query = '') {
  return fetch(`${url}/api/v1/events/stream${query}`, { headers: { authorization: `Bearer ${token}` } });
}

test('events from the bus reach the stream, filtered by device and type', async (t) => {
  const bus = new FleetBus();
  const api = await startApi(t, { bus });
  const { token } = api.ops.createToken(LOCAL, { name: 'v', role: 'viewer' });
  const res = await open(api.url, token, '?device=d1&type=device.online&type=device.state');
  t.is(res.status, 200);
  t.regex(res.headers.get('content-type')!, /text\/event-stream/);
  const got = frames(res, (all) => all.filter((f) => f.includes('event: ')).length >= 2);
  while (bus.size === 0) await new Promise((r) => setTimeout(r, 10));
  bus.emit({ type: 'device.online', at: 1, deviceId: 'd2' });
  bus.emit({ type: 'device.event', at: 2, deviceId: 'd1', id: 1, event: {} });
  bus.emit({ type: 'device.online', at: 3, deviceId: 'd1' });
  bus.emit({
    type: 'device.state',
    at: 4,
    deviceId: 'd1',
    status: 'converged',
    applied: null,
    lastError: null,
  });
  const events = (await got).filter((f) => f.includes('event: '));
  t.deepEqual(
    events.map((f) => JSON.parse(f.split('data: ')[1]!)),
    [
      { type: 'device.online', at: 3, deviceId: 'd1' },
      { type: 'device.state', at: 4, deviceId: 'd1', status: 'converged', applied: null, lastError: null },
    ],
  );
  while (bus.size > 0) await new Promise((r) => setTimeout(r, 10));
  t.pass('the subscription is gone once the client left');
});

test('a client that falls behind gets resync, not an unbounded backlog', async (t) => {
  const bus = new FleetBus();
  const api = await startApi(t, { bus, sse: { maxQueue: 5, heartbeatMs: 60_000 } });
  const { token } = api.ops.createToken(LOCAL, { name: 'v', role: 'viewer' });
  const res = await open(api.url, token);
  while (bus.size === 0) await new Promise((r) => setTimeout(r, 10));
  // 10,000 events published while the client reads nothing: at most maxQueue stay queued
  for (let i = 0; i < 10_000; i++)
    bus.emit({
      type: 'device.state',
      at: i,
      deviceId: 'd1',
      status: 'applying',
      applied: null,
      lastError: null,
    });
  const got = await frames(res, (all) => all.some((f) => f.includes('"at":9999')));
  t.true(
    got.some((f) => f.startsWith('event: resync')),
    got.slice(0, 3).join('|'),
  );
  const delivered = got.filter((f) => f.includes('event: device.state'));
  t.true(delivered.length <= 5, `delivered ${delivered.length}`);
});

test('heartbeats keep the stream; a revoked token closes it; no credentials → 401', async (t) => {
  const bus = new FleetBus();
  const api = await startApi(t, { bus, sse: { heartbeatMs: 50 } });
  const made = api.ops.createToken(LOCAL, { name: 'v', role: 'viewer' });
  t.is((await fetch(`${api.url}/api/v1/events/stream`)).status, 401);
  const res = await open(api.url, made.token);
  const got = await frames(res, (all) => {
    if (all.filter((f) => f === ': ping').length === 2) api.ops.revokeToken(LOCAL, made.info.id);
    return false;
  });
  t.is(got.filter((f) => f === ': ping').length >= 2, true);
  t.is(got[got.length - 1], '<end>', 'the server ended the stream');
  const again = new Caller(api.url, made.token);
  t.is((await again.call('GET', '/events/stream')).status, 401);
});
