/**
 * The agent's local API over a real unix socket, with the agent assembled over FAKE ports
 * (test/helpers/agent-fakes.ts) and a real SQLite file; also commands and reporting through a fake transport.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { Agent } from '../../src/agent/agent.js';
import { AgentClient, agentSocketPath, connectAgent } from '../../src/agent/api-client.js';
import type { Channel, Transport } from '../../src/agent/ports.js';
import { parseTarget } from '../../src/core/target.js';
import { openDatabase } from '../../src/db/database.js';
import { isBerthError } from '../../src/lib/errors.js';
import { silentLogger } from '../../src/lib/logger.js';
import { FakeClock, FakeDevice, flush } from '../helpers/agent-fakes.js';

class FakeTransport implements Transport {
  online = false;
  published: Array<{ channel: Channel; payload: unknown; retain: boolean }> = [];
  private cbs = new Set<() => void>();
  async publish(channel: Channel, payload: unknown, opts: { retain: boolean }) {
    if (!this.online) throw new Error('offline');
    this.published.push({ channel, payload, retain: opts.retain });
  }
  onOnline(cb: () => void) {
    this.cbs.add(cb);
    return () => this.cbs.delete(cb);
  }
  goOnline() {
    this.online = true;
    for (const cb of this.cbs) cb();
  }
}

const sysStub = {
  osInfo: async () => ({
    platform: 'linux',
    distro: 'Debian',
    release: '12',
    kernel: '6',
    arch: 'x64',
    hostname: 'dev',
  }),
  cpu: async () => ({ manufacturer: 'x', brand: 'y', cores: 2, physicalCores: 2 }),
  mem: async () => ({ total: 1e9, active: 5e8 }),
  fsSize: async () => [{ fs: '/dev/root', type: 'ext4', size: 1e10, used: 1e9, available: 9e9, mount: '/' }],
  cpuTemperature: async () => ({ main: 45 }),
  networkStats: async () => [{ iface: 'eth0', rx_bytes: 1, tx_bytes: 2 }],
  networkInterfaces: async () => [{ iface: 'eth0', ip4: '10.0.0.2', ip6: '', mac: 'aa', internal: false }],
  currentLoad: async () => ({ currentLoad: 12.5 }),
} as unknown as import('../../src/device/info.js').SystemInformation;

async function setup(t: { teardown: (fn: () => Promise<void> | void) => void }) {
  const stateDir = mkdtempSync(path.join(tmpdir(), 'berth-api-'));
  const clock = new FakeClock();
  const device = new FakeDevice(clock);
  device.images.set('busybox:1', { fetched: true, unpacked: false, size: 1000 });
  device.registry.set('app:1', 1000);
  const transport = new FakeTransport();
  const db = openDatabase(path.join(stateDir, 'berth.db'));
  const agent = new Agent({
    db,
    ports: device.ports,
    transport,
    log: silentLogger(),
    stateDir,
    clock,
    sys: sysStub,
    metricsIntervalMs: 0,
  });
  await agent.start();
  t.teardown(async () => {
    await agent.stop();
    db.close();
  });
  const client = (await connectAgent(stateDir))!;
  return { stateDir, clock, device, transport, agent, client, db };
}

const TARGET = parseTarget({
  version: 1,
  apps: {
    app: {
      services: { web: { image: 'app:1', volumes: [{ type: 'volume', source: 'data', target: '/data' }] } },
      volumes: { data: {} },
    },
  },
});

test('ps, run, logs, exec, stop and rm over the unix socket', async (t) => {
  const { client, device } = await setup(t);
  t.truthy(client);
  t.deepEqual(await client.ps(), []);
  const { id } = await client.run({
    image: 'busybox:1',
    name: 'hello',
    command: ['sleep', '1000'],
    env: { A: '1' },
  });
  t.is(id, 'hello');
  t.true(device.images.get('busybox:1')!.unpacked, 'run unpacks a fetched image');
  const ps = await client.ps();
  t.like(ps[0], { id: 'hello', image: 'busybox:1', status: 'running', managed: false });
  t.deepEqual(device.containers.get('hello')!.req.spec.command, ['sleep', '1000']);
  t.regex((await client.logs('hello', 10)).lines[0]!, /^started at/);
  t.like(await client.exec('hello', ['echo', 'hi']), { exitCode: 0, stdout: 'ran echo hi\n' });
  const rmRunning = await t.throwsAsync(client.rm('hello'));
  t.true(isBerthError(rmRunning, 'Conflict'), String(rmRunning));
  await client.stop('hello', 1000);
  t.like((await client.ps())[0], { status: 'stopped', exitCode: 0 });
  const execStopped = await t.throwsAsync(client.exec('hello', ['true']));
  t.true(isBerthError(execStopped, 'Conflict'));
  await client.rm('hello');
  t.deepEqual(await client.ps(), []);
});

test('errors keep their codes across the socket', async (t) => {
  const { client } = await setup(t);
  const nf = await t.throwsAsync(client.logs('nope'));
  t.true(isBerthError(nf, 'NotFound'));
  t.regex(nf!.message, /no such container: nope/);
  const noImage = await t.throwsAsync(client.run({ image: 'missing:1' }));
  t.true(isBerthError(noImage, 'NotFound'));
  const bad = await t.throwsAsync(
    client.request('POST', '/v1/containers', { image: 'busybox:1', bogus: true }),
  );
  t.true(isBerthError(bad, 'InvalidInput'));
  t.regex(bad!.message, /bogus/);
  const route = await t.throwsAsync(client.request('GET', '/v2/whatever'));
  t.true(isBerthError(route, 'NotFound'));
});

/** One raw request (the client would JSON.stringify a body, which is the point here not to). */
function rawPost(
  socketPath: string,
  urlPath: string,
  body: Buffer,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath, method: 'POST', path: urlPath, headers: { 'content-type': 'application/json' } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('a body nested too deep, not UTF-8 or not finite is refused (400, InvalidInput) before it is parsed', async (t) => {
  const { stateDir, client } = await setup(t);
  const sock = agentSocketPath(stateDir);
  const cases: Array<[string, Buffer, RegExp]> = [
    [
      '/v1/commands',
      Buffer.from(`{"kind":"report","x":${'['.repeat(100_000)}${']'.repeat(100_000)}}`),
      /nested deeper than 64/,
    ],
    [
      '/v1/containers',
      Buffer.from(`{"image":"busybox:1","labels":${'{"a":'.repeat(5_000)}1${'}'.repeat(5_000)}}`),
      /nested deeper than 64/,
    ],
    [
      '/v1/commands',
      Buffer.concat([Buffer.from('{"kind":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]),
      /UTF-8/,
    ],
    ['/v1/containers', Buffer.from('{"image":"busybox:1","memoryBytes":1e400}'), /not finite/],
  ];
  for (const [url, body, reason] of cases) {
    const r = await rawPost(sock, url, body);
    t.is(r.status, 400, r.body);
    const e = (JSON.parse(r.body) as { error: { code: string; message: string } }).error;
    t.is(e.code, 'InvalidInput');
    t.regex(e.message, reason);
  }
  t.true((await client.ping()).ok);
});

test('a request target that is not a URL, or bad percent-encoding, is a 400, not a crashed agent', async (t) => {
  const { stateDir, client } = await setup(t);
  const raw = (line: string) =>
    new Promise<string>((resolve, reject) => {
      const c = net.connect(agentSocketPath(stateDir), () =>
        c.write(`${line}\r\nHost: berth\r\nConnection: close\r\n\r\n`),
      );
      let got = '';
      c.on('data', (d) => {
        got += String(d);
      });
      c.on('end', () => resolve(got));
      c.on('error', reject);
    });
  for (const line of ['GET http://[ HTTP/1.1', 'GET /v1/containers/%E0%A4%A/logs HTTP/1.1']) {
    const reply = await raw(line);
    t.regex(reply, /^HTTP\/1\.1 400 /, line);
    t.regex(reply, /"code":"InvalidInput"/);
  }
  t.true((await client.ping()).ok);
});

test('connectAgent: undefined without an agent or with a stale socket; a second agent is refused', async (t) => {
  const empty = mkdtempSync(path.join(tmpdir(), 'berth-api-none-'));
  t.is(await connectAgent(empty), undefined);
  writeFileSync(agentSocketPath(empty), '');
  t.is(await connectAgent(empty), undefined, 'a stale socket file is not an agent');
  const { stateDir, agent } = await setup(t);
  const err = await t.throwsAsync(agent.api.listen(agentSocketPath(stateDir)));
  t.true(isBerthError(err, 'Conflict'));
  t.truthy(await new AgentClient(agentSocketPath(stateDir)).ping());
});

test('managed containers: stop by hand sticks (restart policy off), rm needs force, commands work', async (t) => {
  const { client, agent, device } = await setup(t);
  agent.receiveTarget(TARGET);
  await agent.reconciler.idle();
  const [web] = await client.ps();
  t.like(web, { app: 'app', service: 'web', status: 'running', managed: true });
  await client.stop(web!.id);
  await agent.reconciler.trigger();
  t.like((await client.ps())[0], { status: 'stopped' }, 'not restarted by the reconciler');
  t.true(isBerthError(await t.throwsAsync(client.rm(web!.id)), 'Conflict'));

  const restart = await client.command({ kind: 'restart', app: 'app', id: 'r1' });
  t.like(restart, { id: 'r1', ok: true, result: { restarted: [web!.id] } });
  t.is(device.containers.get(web!.id)!.status, 'running');

  const logs = await client.command({ kind: 'logs', app: 'app', service: 'web', tail: 1 });
  t.like(logs, { ok: true, result: { container: web!.id } });
  t.is((logs as { result: { lines: string[] } }).result.lines.length, 1);

  device.heldLocks.add('app');
  t.like(await client.command({ kind: 'purgeVolume', app: 'app', volume: 'data' }), {
    ok: false,
    error: { code: 'Conflict' },
  });
  const before = device.calls.length;
  t.like(await client.command({ kind: 'purgeVolume', app: 'app', volume: 'data', force: true }), {
    ok: true,
  });
  t.deepEqual(
    device.calls.slice(before).map((c) => c.op),
    ['stop', 'removeVolume', 'createVolume', 'start'],
  );
  t.like(await client.command({ kind: 'explode' }), { ok: false, error: { code: 'InvalidInput' } });
  t.like(await client.command({ kind: 'purgeVolume', app: 'app', volume: 'nope' }), {
    ok: false,
    error: { code: 'NotFound' },
  });
});

test('offline: events wait in the outbox; on reconnect info, retained state and events go out in order', async (t) => {
  const { agent, transport, client } = await setup(t);
  agent.receiveTarget(TARGET);
  await agent.reconciler.idle();
  t.deepEqual(transport.published, []);
  t.true(agent.outbox.size().count > 0);
  transport.goOnline();
  await flush(20);
  await agent.reconciler.idle();
  await flush(20);
  const channels = transport.published.map((p) => p.channel);
  t.is(channels[0], 'info');
  t.is(channels[1], 'state');
  const state = transport.published[1]!;
  t.true(state.retain);
  t.like(state.payload, {
    schema: 1,
    target: { applied: { kind: 'local', version: 1 }, status: 'converged' },
    apps: { app: { services: { web: { state: 'running', image: 'app:1' } } } },
  });
  const events = transport.published
    .filter((p) => p.channel === 'event')
    .map((p) => p.payload as { type: string; seq: number });
  t.deepEqual(events.map((e) => e.type).slice(0, 2), ['target-accepted', 'converged']);
  t.deepEqual(
    events.map((e) => e.seq),
    [...events.map((e) => e.seq)].sort((a, b) => a - b),
  );
  t.is(agent.outbox.size().count, 0);
  t.like(await client.state(), { target: { applied: { version: 1 } } });
  // report command re-publishes
  const n = transport.published.length;
  t.like(await agent.command({ kind: 'report' }), { ok: true });
  t.deepEqual(
    transport.published.slice(n).map((p) => p.channel),
    ['info', 'state'],
  );
});

test('metrics: device + per-container stats are queued only when they move beyond the thresholds', async (t) => {
  const { agent, device } = await setup(t);
  agent.receiveTarget(TARGET);
  await agent.reconciler.idle();
  let memory = 10 * 1024 * 1024;
  let cpuNs = 0;
  const reporter = new (await import('../../src/agent/reporter.js')).Reporter({
    transport: new FakeTransport(),
    outbox: agent.outbox,
    store: agent.store,
    reconciler: agent.reconciler,
    engine: device.engine,
    clock: device.clock,
    log: silentLogger(),
    stateDir: '/',
    sys: sysStub,
    metricsIntervalMs: 0,
    containerStats: async () => ({ cpuUsageNs: cpuNs, memoryBytes: memory }),
  });
  const countMetrics = () => {
    agent.outbox.persist();
    return agent.outbox.peek(1000).filter((e) => e.channel === 'metrics').length;
  };
  t.true((await reporter.sampleMetrics()).length > 0, 'the first sample always goes');
  t.is(countMetrics(), 1);
  agent.outbox.persist();
  await device.clock.advance(10_000);
  cpuNs += 100_000_000; // 1 % of a core over 10 s
  memory += 1024 * 1024; // +1 MiB
  t.deepEqual(await reporter.sampleMetrics(), [], 'small moves are not sent');
  await device.clock.advance(10_000);
  cpuNs += 5_000_000_000; // 50 % over 10 s
  memory += 64 * 1024 * 1024;
  const changed = await reporter.sampleMetrics();
  const id = device.running()[0]!;
  t.deepEqual(changed, [`containers.${id}.cpuPercent`, `containers.${id}.memoryBytes`]);
  agent.outbox.persist();
  t.is(countMetrics(), 2);
  const last = agent.outbox
    .peek(1000)
    .filter((e) => e.channel === 'metrics')
    .at(-1)!.payload as {
    containers: Record<string, { cpuPercent: number }>;
    cpuPercent: number;
    temperatureC: number;
  };
  t.is(last.containers[id]!.cpuPercent, 50);
  t.is(last.cpuPercent, 12.5);
  t.is(last.temperatureC, 45);
});

test('failed reconciles: the state shows the next retry and the last error; the link back and `retry` start the backoff over', async (t) => {
  const { agent, client, clock, device, transport } = await setup(t);
  device.failures.set('fetch', new Error('pull failed under load'));
  agent.receiveTarget(TARGET);
  await agent.reconciler.idle();
  const rec = agent.reconciler;
  const retryIn = () => rec.retry!.at - clock.now();
  for (let i = 0; i < 9; i++) {
    await clock.advance(retryIn());
    await rec.idle();
  }
  t.like(rec.retry, { attempt: 10 });
  t.true(retryIn() >= 30_000 && retryIn() <= 60_000, `capped at 60 s, jittered: ${retryIn()}`);
  const state = (await client.state()) as {
    target: { status: string; retry?: { at: number; attempt: number; lastError?: string } };
  };
  t.is(state.target.status, 'applying');
  t.deepEqual(state.target.retry, rec.retry, 'the local API shows when and why');
  t.regex(state.target.retry!.lastError!, /^Internal: fetch app:1: pull failed under load$/);

  // The broker comes back: the agent tries at once, and a failure now waits the first delay again.
  transport.goOnline();
  await flush();
  await rec.idle();
  t.like(rec.retry, { attempt: 1 });
  t.true(retryIn() <= 1000, `first delay after the link came back: ${retryIn()}`);
  const published = transport.published.filter((p) => p.channel === 'state').at(-1)!.payload as {
    target: { retry?: { attempt: number; lastError?: string } };
  };
  t.like(published.target.retry, { attempt: 1 }, 'the reported state carries it to the fleet');
  t.regex(published.target.retry!.lastError!, /pull failed under load/);

  for (let i = 0; i < 6; i++) {
    await clock.advance(retryIn());
    await rec.idle();
  }
  t.like(rec.retry, { attempt: 7 });
  // The operator fixed the cause and says so (`berth agent retry`): the run happens now, not in a minute.
  device.failures.delete('fetch');
  t.like(await client.command({ kind: 'retry' }), { kind: 'retry', ok: true, result: { retrying: true } });
  await flush();
  await rec.idle();
  t.like(rec.lastOutcome, { status: 'converged' });
  t.is(rec.retry, undefined);
  t.is(((await client.state()) as { target: { retry?: unknown } }).target.retry, undefined);
});
