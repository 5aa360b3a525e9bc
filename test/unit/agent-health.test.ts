import * as http from 'node:http';
import * as net from 'node:net';
import test from 'ava';
import { createExecutors, type Executors } from '../../src/agent/executors.js';
import { nextHealth, realNetProbes, resolveHealthcheck, runProbe } from '../../src/agent/health.js';
import { type AgentPorts, type ContainerEngine, systemClock } from '../../src/agent/ports.js';
import type { AgentStore } from '../../src/agent/store.js';
import { DEFAULT_RESTART_BACKOFF } from '../../src/core/restart.js';
import type { StepKind } from '../../src/core/steps.js';
import { parseTarget } from '../../src/core/target.js';

const svc = (healthcheck?: unknown) =>
  parseTarget({
    version: 1,
    apps: { a: { services: { s: { image: 'i', ...(healthcheck ? { healthcheck } : {}) } } } },
  }).apps.a!.services.s!;

test('health transitions follow Docker: starting → healthy; retries consecutive failures → unhealthy', (t) => {
  let s = { status: 'starting' as const, failures: 0 } as Parameters<typeof nextHealth>[0];
  s = nextHealth(s, false, true, 3);
  t.is(s.status, 'starting');
  t.is(s.failures, 0, 'failures in the start period do not count');
  s = nextHealth(s, false, false, 3);
  s = nextHealth(s, false, false, 3);
  t.is(s.status, 'starting');
  s = nextHealth(s, false, false, 3);
  t.is(s.status, 'unhealthy');
  s = nextHealth(s, true, false, 3, 'ok');
  t.deepEqual(s, { status: 'healthy', failures: 0, lastOutput: 'ok' });
  s = nextHealth(s, false, true, 1);
  t.is(s.status, 'unhealthy', 'once healthy, the start period no longer forgives');
});

test('the check comes from the service, else the image Healthcheck, else "stays running"', (t) => {
  const own = resolveHealthcheck(svc({ probe: { type: 'tcp', port: 80 } }), { test: ['CMD', 'x'] });
  t.deepEqual(own.probe, { type: 'tcp', port: 80 });
  const img = resolveHealthcheck(svc(), {
    test: ['CMD-SHELL', 'curl -f localhost'],
    intervalMs: 5000,
    retries: 2,
  });
  t.deepEqual(img, {
    probe: { type: 'shell', command: 'curl -f localhost' },
    intervalMs: 5000,
    timeoutMs: 30_000,
    retries: 2,
    startPeriodMs: 0,
  });
  t.deepEqual(resolveHealthcheck(svc(), { test: ['CMD', 'check', '--fast'] }).probe, {
    type: 'exec',
    command: ['check', '--fast'],
  });
  t.deepEqual(resolveHealthcheck(svc(), { test: ['NONE'] }).probe, { type: 'none' });
  t.deepEqual(resolveHealthcheck(svc(), undefined).probe, { type: 'running' });
});

test('probes: exec and shell go through the engine; TCP and HTTP against real sockets', async (t) => {
  const seen: string[][] = [];
  const engine = {
    exec: async (_id: string, argv: string[]) => {
      seen.push(argv);
      return { exitCode: argv.includes('fail') ? 1 : 0, stdout: 'out', stderr: '' };
    },
  } as unknown as ContainerEngine;
  const c = { id: 'c1', status: 'running' as const, ip: '127.0.0.1' };
  t.like(await runProbe({ type: 'exec', command: ['check'] }, c, 1000, engine, realNetProbes), { ok: true });
  t.like(await runProbe({ type: 'shell', command: 'fail' }, c, 1000, engine, realNetProbes), { ok: false });
  t.deepEqual(seen, [['check'], ['/bin/sh', '-c', 'fail']]);

  const tcp = net.createServer((s) => s.end());
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  const tcpPort = (tcp.address() as net.AddressInfo).port;
  const web = http.createServer((req, res) => {
    res.statusCode = req.url === '/ok' ? 204 : 503;
    res.end();
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  const webPort = (web.address() as net.AddressInfo).port;
  t.teardown(() => {
    tcp.close();
    web.close();
  });
  t.like(await runProbe({ type: 'tcp', port: tcpPort }, c, 1000, engine, realNetProbes), { ok: true });
  t.like(await runProbe({ type: 'http', port: webPort, path: '/ok' }, c, 1000, engine, realNetProbes), {
    ok: true,
  });
  const bad = await runProbe({ type: 'http', port: webPort, path: '/bad' }, c, 1000, engine, realNetProbes);
  t.false(bad.ok);
  t.regex(bad.output, /answered 503/);
  // a port nobody listens on
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const closedPort = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  t.like(await runProbe({ type: 'tcp', port: closedPort }, c, 1000, engine, realNetProbes), { ok: false });
  t.like(await runProbe({ type: 'running' }, { ...c, status: 'stopped' }, 1000, engine, realNetProbes), {
    ok: false,
  });
});

test('every step kind has an executor: the record type is exhaustive (compile-time and at run time)', (t) => {
  type Missing = Exclude<StepKind, keyof Executors>;
  const exhaustive: [Missing] extends [never] ? true : false = true;
  // @ts-expect-error a record without the `fetch` executor (and the others) does not type-check
  const partial: Executors = { unpack: async () => {} };
  const ALL = {
    fetch: 1,
    unpack: 1,
    createVolume: 1,
    removeVolume: 1,
    createNetwork: 1,
    removeNetwork: 1,
    create: 1,
    start: 1,
    stop: 1,
    kill: 1,
    remove: 1,
    updateMetadata: 1,
    removeImage: 1,
    cleanup: 1,
    wait: 1,
    noop: 1,
  } satisfies Record<StepKind, 1>;
  const ex = createExecutors({
    ports: {} as AgentPorts,
    store: {} as AgentStore,
    clock: systemClock,
    backoff: DEFAULT_RESTART_BACKOFF,
  });
  t.deepEqual(Object.keys(ex).sort(), Object.keys(ALL).sort());
  t.true(Object.values(ex).every((f) => typeof f === 'function'));
  t.true(exhaustive);
  t.is(Object.keys(partial).length, 1);
});
