/**
 * Issue 15, item 1: whatever a broker client publishes, on whatever topic, retained or not, neither the
 * device agent nor the fleet server dies, and the device still converges to the next valid target.
 *
 * All real: `berth fleet serve` and `berth agent` as processes (the built CLI), the broker aedes (embedded
 * in `fleet serve`) or Mosquitto, sample images pushed with `berth fleet push`, targets deployed with
 * `berth fleet deploy`, containers run by berth-runtime. A plain MQTT client plays the attacker with no
 * credentials and no key: deep nesting (arrays and objects, 1,500 and 100,000 levels — the 3 KB
 * reproduction of the issue among them), huge arrays, long strings, huge numbers, invalid UTF-8,
 * truncated JSON, non-objects, `__proto__`, binary garbage and frame-like junk, each on every topic the
 * agent and the fleet server subscribe to (and the device's report topics, which fleet servers may read),
 * once retained and once not. Then:
 *   - both processes are the same processes as before, and neither ever needed its last-resort guard;
 *   - the agent logged each poison as rejected and converges to the next target (v2, pulled through the
 *     fleet's blob service, which is therefore alive and serving);
 *   - the agent restarted with poison still retained on its topics comes up, rejects it again, and
 *     converges to a later target; with Mosquitto the fleet server is restarted the same way.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, promises as fsp, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { connectAsync, type MqttClient } from 'mqtt';
import { encodeFrame, FrameType } from '../../src/transport/frames.js';
import { MAX_TARGET_BYTES } from '../../src/transport/messages.js';
import { deviceTopic, fanoutTopic, groupTargetTopic } from '../../src/transport/topics.js';
import { cli, type Device, makeDevice } from '../helpers/agent-process.js';
import { buildSampleImages } from '../helpers/agent-stack.js';
import { FLEET, waitFor } from '../helpers/fleet-harness.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { needPrivileges } from '../helpers/privileged.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'dist/berth.mjs');

let images: Promise<{ dir: string; layouts: Record<string, string> }> | undefined;
function sampleImages() {
  images ??= (async () => {
    const dir = await fsp.mkdtemp(path.join(tmpdir(), 'berth-fuzz-img-'));
    return { dir, layouts: await buildSampleImages(dir, ['v1', 'v2']) };
  })();
  return images;
}
test.after.always(async () => {
  if (images) await fsp.rm((await images).dir, { recursive: true, force: true });
});

type LogLine = { msg: string; reason?: string; [k: string]: unknown };

function logLines(file: string): LogLine[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

/** `berth fleet serve` as a process on its own state dir; its log in `<dir>.log`. */
class FleetProcess {
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  starts = 0;
  constructor(readonly dir: string) {}

  get logFile(): string {
    return `${this.dir}.log`;
  }

  get pid(): number | undefined {
    return this.proc?.exitCode === null && this.proc.signalCode === null ? this.proc.pid : undefined;
  }

  /** Start; resolves with the broker URL once the server has noted it in its serve file. */
  async start(args: string[]): Promise<string> {
    const serveFile = path.join(this.dir, 'fleet-serve.json');
    await fsp.rm(serveFile, { force: true });
    const fd = openSync(this.logFile, 'a');
    const p = spawn(
      process.execPath,
      [BIN, '--state-dir', this.dir, '--log-level', 'info', 'fleet', 'serve', '--fleet', FLEET, ...args],
      { stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    this.proc = p;
    this.starts++;
    this.exited = new Promise((r) => p.once('exit', () => r()));
    await waitFor(
      () => {
        if (p.exitCode !== null) throw new Error(`fleet serve exited (${p.exitCode}): ${this.tail()}`);
        return existsSync(serveFile);
      },
      30_000,
      'fleet serve',
    );
    return (JSON.parse(await fsp.readFile(serveFile, 'utf8')) as { broker: string }).broker;
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
    await this.exited;
    clearTimeout(t);
  }

  tail(n = 30): string {
    try {
      return readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-n).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

// ---- the corpus -------------------------------------------------------------------------------------

const deepArrays = (n: number) => '['.repeat(n) + ']'.repeat(n);
const deepObjects = (n: number) => '{"a":'.repeat(n) + '0' + '}'.repeat(n);

function envelopeTarget(deviceId: string, apps: string, version = '9007199254740991'): string {
  return (
    `{"v":1,"target":{"v":1,"fleet":"${FLEET}","scope":{"kind":"device","id":"${deviceId}"},` +
    `"version":${version},"issuedAt":"2024-01-01T00:00:00.000Z","images":[],"apps":${apps}},` +
    `"signature":{"alg":"ed25519","keyId":"0123456789abcdef","sig":"${Buffer.alloc(64).toString('base64')}"}}`
  );
}

/** Every payload, the issue's own reproduction last (so it is what stays retained on each topic). */
function corpus(deviceId: string): Array<{ name: string; payload: Buffer }> {
  const b = (s: string) => Buffer.from(s);
  const command = (body: string) =>
    `{"v":1,"command":{"v":1,"fleet":"${FLEET}","deviceId":"${deviceId}","id":"fuzz1",` +
    `"issuedAt":"2024-01-01T00:00:00.000Z","expiresAt":"2999-01-01T00:00:00.000Z","body":${body}},` +
    `"signature":{"alg":"ed25519","keyId":"0123456789abcdef","sig":"AA=="}}`;
  const junkFrame = encodeFrame({
    type: FrameType.Chunk,
    digest: `sha256:${'ab'.repeat(32)}`,
    offset: 0,
    index: 0,
    chunkSize: 16384,
    payload: randomBytes(1000),
  });
  const lyingFrame = Buffer.from(junkFrame);
  lyingFrame.writeUInt32BE(0xffffffff, 48); // payload length far beyond the frame
  return [
    { name: 'deep arrays 100,000', payload: b(deepArrays(100_000)) },
    { name: 'deep objects 1,500', payload: b(deepObjects(1_500)) },
    { name: 'deep objects 100,000', payload: b(deepObjects(100_000)) },
    { name: 'deep command body', payload: b(command(deepObjects(1_500))) },
    {
      name: 'deep reply',
      payload: b(`{"v":1,"kind":"error","reqId":"x","code":"x","message":${deepArrays(1_500)}}`),
    },
    {
      name: 'deep status',
      payload: b(`{"v":1,"deviceId":"${deviceId}","state":"online","at":"x","groups":${deepArrays(1_500)}}`),
    },
    {
      name: 'deep request',
      payload: b(`{"v":1,"kind":"chunks","reqId":"x","indexes":${deepArrays(1_500)}}`),
    },
    {
      name: 'huge array under the target cap',
      payload: b(
        `[${Array((MAX_TARGET_BYTES - 16) / 2)
          .fill('0')
          .join(',')}]`,
      ),
    },
    {
      name: 'huge array over the target cap (2 MiB)',
      payload: b(`[${Array(MAX_TARGET_BYTES).fill('0').join(',')}]`),
    },
    { name: 'long string', payload: b(`{"v":1,"s":"${'x'.repeat(900_000)}"}`) },
    { name: 'huge numbers', payload: b(envelopeTarget(deviceId, '[1e400,-1e400]', '1e400')) },
    {
      name: 'long number',
      payload: b(`{"v":1,"kind":"resolve","reqId":"${'9'.repeat(5000)}","name":${'9'.repeat(400)}}`),
    },
    {
      name: 'invalid UTF-8',
      payload: Buffer.concat([b('{"v":1,"deviceId":"'), Buffer.from([0xff, 0xfe, 0xc0, 0x80]), b('"}')]),
    },
    {
      name: 'truncated JSON',
      payload: b(envelopeTarget(deviceId, '{"hello":{"services":{}}}').slice(0, 150)),
    },
    { name: '__proto__', payload: b(envelopeTarget(deviceId, '{"__proto__":{"polluted":true}}')) },
    { name: 'null', payload: b('null') },
    { name: 'a string', payload: b('"target"') },
    { name: 'a number', payload: b('12') },
    { name: 'unsigned well-formed target of a huge version', payload: b(envelopeTarget(deviceId, '{}')) },
    { name: 'unsigned command', payload: b(command('{"kind":"report"}')) },
    { name: 'binary garbage', payload: randomBytes(4096) },
    { name: 'a chunk frame for no transfer', payload: junkFrame },
    { name: 'a frame whose length lies', payload: lyingFrame },
    {
      name: 'issue 15: 1,500 nested arrays as apps, unsigned',
      payload: b(envelopeTarget(deviceId, deepArrays(1_500))),
    },
  ];
}

async function publishAll(client: MqttClient, topics: string[], payloads: Array<{ payload: Buffer }>) {
  for (const retain of [false, true])
    for (const topic of topics)
      for (const { payload } of payloads) await client.publishAsync(topic, payload, { qos: 1, retain });
}

// ---- the run ------------------------------------------------------------------------------------------

const appFile = async (dir: string, tag: string): Promise<string> => {
  const file = path.join(dir, `deploy-${tag}.json`);
  await fsp.writeFile(
    file,
    JSON.stringify({
      apps: {
        hello: { services: { web: { image: `sample:${tag}`, networkMode: 'none', stopTimeoutMs: 500 } } },
      },
      images: [`sample:${tag}`],
    }),
  );
  return file;
};

async function convergedTo(t: ExecutionContext, dev: Device, tag: string, pid: number | undefined) {
  await waitFor(
    () => {
      if (pid !== undefined && dev.agent.pid !== pid)
        throw new Error(`the agent died:\n${dev.agent.logTail()}`);
      const cs = dev.db.containers();
      return cs.length === 1 && dev.db.running(`sample:${tag}`) !== undefined;
    },
    90_000,
    `sample:${tag} running`,
  ).catch((err) => {
    t.log(dev.agent.logTail(60));
    throw err;
  });
}

async function fuzzRun(t: ExecutionContext, broker: 'aedes' | 'mosquitto') {
  if (!needPrivileges(t)) return;
  const { layouts } = await sampleImages();
  const work = await fsp.mkdtemp(path.join(tmpdir(), `berth-fuzz-${broker}-`));
  t.teardown(() => fsp.rm(work, { recursive: true, force: true }));
  const fleetDir = path.join(work, 'fleet');
  await fsp.mkdir(fleetDir);
  await cli(fleetDir, ['fleet', 'keygen']);
  for (const [tag, layout] of Object.entries(layouts))
    await cli(fleetDir, ['fleet', 'push', layout, '--tag', `sample:${tag}`]);

  const fleet = new FleetProcess(fleetDir);
  t.teardown(() => fleet.stop());
  // the embedded broker as a lab broker: the attacker below is any client with full access, the strongest case
  let serveArgs = ['--listen', '127.0.0.1:0', '--allow-anonymous'];
  if (broker === 'mosquitto') {
    const m = await Mosquitto.start();
    t.teardown(() => m.stop());
    serveArgs = ['--broker', m.url, '--mqtt-version', '4'];
  }
  const url = await fleet.start(serveArgs);
  const fleetPid = fleet.pid;

  const group = `fuzz-g-${process.pid}`;
  const dev = await makeDevice(t, {
    name: `fuzz-${broker}`,
    fleetKeyFile: path.join(fleetDir, 'fleet-key.pub.pem'),
    groups: [group],
  });
  await dev.agent.start(url);
  const agentPid = dev.agent.pid;
  const deploy = async (tag: string) =>
    cli(fleetDir, ['fleet', 'deploy', await appFile(work, tag), '--device', dev.id, '--allow-unknown']);
  await deploy('v1');
  await convergedTo(t, dev, 'v1', agentPid);

  // The attacker: any broker client, no key.
  const attacker = await connectAsync(url, {
    protocolVersion: 4,
    clientId: `fuzz-${randomBytes(4).toString('hex')}`,
  });
  t.teardown(() => attacker.endAsync(true));
  const deviceTopics = (id: string) =>
    (
      [
        'target',
        'command',
        'reply',
        'chunks',
        'status',
        'req',
        'state',
        'info',
        'event',
        'metrics',
        'result',
      ] as const
    ).map((c) => deviceTopic(FLEET, id, c));
  const topics = [
    ...deviceTopics(dev.id),
    ...deviceTopics(`other-${process.pid}`),
    groupTargetTopic(FLEET, group),
    fanoutTopic(FLEET, `sha256:${'cd'.repeat(32)}`),
  ];
  const payloads = corpus(dev.id);
  await publishAll(attacker, topics, payloads);

  // The next valid target arrives after all of it (deploy publishes once the attacker's PUBACKs are in).
  await deploy('v2');
  await convergedTo(t, dev, 'v2', agentPid);
  t.is(dev.agent.pid, agentPid, 'the agent is the same process');
  t.is(fleet.pid, fleetPid, 'the fleet server is the same process');

  const agentLog = dev.agent.logLines() as LogLine[];
  const rejected = (what: string, re: RegExp) =>
    agentLog.filter((l) => l.msg === `rejected ${what}` && re.test(String(l.reason)));
  t.true(rejected('target', /nested deeper than 32 levels/).length >= 2, 'deep targets rejected and logged');
  t.true(rejected('target', /not finite/).length >= 1, 'huge numbers rejected');
  t.true(rejected('target', /UTF-8/).length >= 1, 'bad UTF-8 rejected');
  t.true(rejected('target', /signature|signed with key/).length >= 1, 'unsigned target rejected');
  t.true(rejected('command', /nested deeper than 32 levels/).length >= 1, 'deep command rejected');
  t.true(rejected('reply', /nested deeper than 32 levels/).length >= 1, 'deep reply rejected');
  const fleetLog = logLines(fleet.logFile);
  t.true(
    fleetLog.some((l) => l.msg === 'rejected status' && /nested deeper/.test(String(l.reason))),
    'fleet: deep status rejected',
  );
  t.true(
    fleetLog.some((l) => l.msg === 'rejected blob request' && /nested deeper/.test(String(l.reason))),
    'fleet: deep request rejected',
  );
  // The last-resort guards were never needed: every handler refused its input itself.
  const guard = /message handler failed|blob message handling failed|blob request failed/;
  t.deepEqual(
    agentLog.filter((l) => guard.test(l.msg)),
    [],
  );
  t.deepEqual(
    fleetLog.filter((l) => guard.test(l.msg)),
    [],
  );
  t.is(({} as Record<string, unknown>).polluted, undefined);

  // Restart with the poison still retained on the group target (and the command, reply … topics).
  const before = rejected('target', /nested deeper/).length;
  await dev.agent.stop();
  await dev.agent.start(url);
  const agentPid2 = dev.agent.pid;
  await waitFor(
    () => {
      if (dev.agent.pid !== agentPid2) throw new Error(`the agent died on restart:\n${dev.agent.logTail()}`);
      return (
        (dev.agent.logLines() as LogLine[]).filter(
          (l) => l.msg === 'rejected target' && /nested deeper/.test(String(l.reason)),
        ).length > before
      );
    },
    30_000,
    'the retained poison rejected again',
  );
  if (broker === 'mosquitto') {
    // the fleet server too meets the retained poison (status of another device) when it subscribes again
    const seen = logLines(fleet.logFile).filter((l) => l.msg === 'rejected status').length;
    await fleet.stop();
    await fleet.start(serveArgs);
    await waitFor(
      () => {
        if (fleet.pid === undefined) throw new Error(`fleet serve died on restart:\n${fleet.tail()}`);
        return logLines(fleet.logFile).filter((l) => l.msg === 'rejected status').length > seen;
      },
      30_000,
      'the fleet rejecting retained poison again',
    );
  }
  await deploy('v1');
  await convergedTo(t, dev, 'v1', agentPid2);
  t.is(dev.agent.pid, agentPid2);
  t.truthy(fleet.pid);
  t.deepEqual(
    (dev.agent.logLines() as LogLine[]).filter((l) => guard.test(l.msg)),
    [],
  );
}

test.serial(
  'fuzz through aedes: the agent and the fleet server survive every payload on every topic, retained or not',
  (t) => fuzzRun(t, 'aedes'),
);

test.serial(
  'fuzz through Mosquitto: the agent and the fleet server survive every payload on every topic, retained or not',
  (t) => fuzzRun(t, 'mosquitto'),
);
