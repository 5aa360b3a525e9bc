/**
 * The agent updates itself, with the real packaged x64 executables (test/helpers/agent-builds.ts: cached
 * builds of 0.1.0 and 0.2.0, 0.3.0 that exits at start, 0.4.0 that never connects and adds a database
 * migration), a real Mosquitto, the fleet server, and a real app container (berth-runtime + monitor):
 *
 *   no supervisor:       0.1.0 → 0.2.0 committed (exec: the same pid now runs 0.2.0; the container is
 *                        untouched) → 0.3.0 exits at start: rolled back to 0.2.0, reported, refused when
 *                        deployed again → 0.4.0 never connects: rolled back at the deadline, the database
 *                        restored to the schema 0.2.0 reads
 *   like Restart=always: the launcher is killed -9 during 0.2.0's trial; the supervisor starts the installed
 *                        0.1.0 again, whose launcher ends the orphan trial run and runs the trial again:
 *                        committed
 *
 * Also: a release build carries none of the fault code. Figures (t.log): download, switch + trial, bytes
 * the fleet sent for the update against the executable's size.
 */
import { promises as fsp, readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { connectAgent } from '../../src/agent/api-client.js';
import type { UpdateStatus } from '../../src/core/self-update.js';
import { openDatabase } from '../../src/db/database.js';
import { MIGRATIONS } from '../../src/db/migrations.js';
import { type AgentBuild, agentBuild } from '../helpers/agent-builds.js';
import { AgentExe } from '../helpers/agent-exe.js';
import {
  type Device,
  type FleetStack,
  type FleetView,
  makeDevice,
  processAlive,
  startFleetStack,
  watchDevice,
} from '../helpers/agent-process.js';
import { buildSampleImages } from '../helpers/agent-stack.js';
import { FLEET, waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';

/**
 * Short of the 120 s default so the never-connects case does not wait two minutes, but long enough for a
 * good version to start and connect on a loaded shared machine: at 20 s a good 0.2.0 once missed it (its
 * broker CONNACK took longer) and was rightly rolled back.
 */
const TRIAL_DEADLINE_MS = 60_000;

const builds = () =>
  Promise.all([
    agentBuild('0.1.0'),
    agentBuild('0.2.0'),
    agentBuild('0.3.0', ['exit-at-start']),
    agentBuild('0.4.0', ['never-connect', 'migrate']),
  ]);
let built: ReturnType<typeof builds> | undefined;

let images: Promise<{ dir: string; layouts: Record<string, string> }> | undefined;
function sampleImages() {
  images ??= (async () => {
    const dir = await fsp.mkdtemp(path.join(tmpdir(), 'berth-su-img-'));
    return { dir, layouts: await buildSampleImages(dir, ['v1']) };
  })();
  return images;
}
test.after.always(async () => {
  if (images) await fsp.rm((await images).dir, { recursive: true, force: true });
});

/** `berth fleet release push <build dir> --version <v>`, through the fleet's release service. */
async function pushRelease(stack: FleetStack, b: AgentBuild): Promise<string> {
  await stack.fleet.server.services.releases.push(b.dir, b.version);
  return b.version;
}

/** The device's target: the sample app at `tag`, and the agent release `agent` if given (deploy --agent). */
async function deploy(stack: FleetStack, deviceId: string, tag: string, agent?: string): Promise<void> {
  await stack.fleet.deploy(
    { kind: 'device', id: deviceId },
    {
      apps: {
        hello: { services: { web: { image: `sample:${tag}`, networkMode: 'none', stopTimeoutMs: 500 } } },
      },
      images: [`sample:${tag}`],
      ...(agent ? { agent: { version: agent } } : {}),
    },
  );
}

interface AgentView {
  agent?: { version: string; update?: UpdateStatus };
  target?: { version: number | null; status: string | null };
}

interface Setup {
  stack: FleetStack;
  dev: Device;
  view: FleetView;
  agent: AgentExe;
  b: Awaited<ReturnType<typeof builds>>;
}

async function setup(t: ExecutionContext, name: string, restartAlways: boolean): Promise<Setup> {
  t.timeout(20 * 60_000, 'packaged builds (cold cache: four, two at a time) and the updates');
  built ??= builds();
  const b = await built;
  const { layouts } = await sampleImages();
  const stack = await startFleetStack(t, { layouts });
  const dev = await makeDevice(t, { name, fleetKeyFile: stack.fleet.publicKeyFile });
  const view = await watchDevice(t, stack.mosquitto.url, dev.id);
  const work = path.dirname(dev.stateDir);
  const config = path.join(work, 'config.yaml');
  await fsp.writeFile(
    config,
    `agent:\n  trialDeadlineMs: ${TRIAL_DEADLINE_MS}\n  healthWindowMs: 2000\n  idleIntervalMs: 1000\n  retryMaxMs: 5000\n`,
  );
  const agent = new AgentExe({
    exe: b[0].exe,
    stateDir: dev.stateDir,
    deviceId: dev.id,
    fleet: FLEET,
    broker: stack.mosquitto.url,
    fleetKeyFile: stack.fleet.publicKeyFile,
    config,
    log: path.join(work, 'agent.log'),
    restartAlways,
  });
  t.teardown(async () => {
    if (process.env.BERTH_TEST_AGENT_LOG) t.log(agent.logTail(300));
    await agent.stop();
  });
  agent.start();
  await waitFor(async () => (await connectAgent(dev.stateDir, 500)) !== undefined, 60_000, 'the agent API');
  await deploy(stack, dev.id, 'v1');
  await waitFor(
    () => (view.state() as AgentView | undefined)?.target?.status === 'healthy',
    90_000,
    'app v1 healthy',
  );
  return { stack, dev, view, agent, b };
}

const agentOf = (s: Setup) => (s.view.state() as AgentView | undefined)?.agent;

async function updateReaches(s: Setup, version: string, phase: string, running: string, ms = 180_000) {
  await waitFor(
    () => {
      const a = agentOf(s);
      return a?.version === running && a.update?.version === version && a.update.phase === phase;
    },
    ms,
    `agent ${version} ${phase} (running ${running})`,
  ).catch((err) => {
    throw new Error(`${(err as Error).message}; last: ${JSON.stringify(agentOf(s))}\n${s.agent.logTail()}`);
  });
}

/** The app's one container: id, pid, start time — an agent update must not change them. */
function container(s: Setup) {
  const running = s.dev.db.running('sample:v1');
  if (!running) throw new Error('the app container is not running');
  return { id: running.id, pid: running.pid, startedAt: running.startedAt };
}

const exeOf = (pid: number) => readlinkSync(`/proc/${pid}/exe`);

test('self-update without a supervisor: commit, exit at start, never connects', async (t) => {
  if (!needPrivileges(t)) return;
  const s = await setup(t, 'su-plain', false);
  const [, b2, b3, b4] = s.b;
  const pid = s.agent.pid!;
  const app = container(s);

  // 0.1.0 → 0.2.0
  const egress0 = s.stack.fleet.server.blobs!.egressBytes;
  const r2 = await pushRelease(s.stack, b2);
  const t0 = Date.now();
  await deploy(s.stack, s.dev.id, 'v1', r2);
  await updateReaches(s, '0.2.0', 'committed', '0.2.0');
  const t1 = Date.now();
  const sent = s.stack.fleet.server.blobs!.egressBytes - egress0;
  t.is(s.agent.pid, pid, 'one process throughout: exec, not a new one');
  t.true(processAlive(pid));
  t.is(exeOf(pid), path.join(s.dev.stateDir, 'agent', '0.2.0', 'berth'), 'the pid now runs 0.2.0');
  await waitFor(
    () => s.stack.fleet.stores.devices.get(s.dev.id)?.agentUpdate?.phase === 'committed',
    30_000,
    'the fleet sees the commit',
  );
  t.like(s.stack.fleet.stores.devices.get(s.dev.id), {
    agentVersion: '0.2.0',
    agentUpdate: { version: '0.2.0', phase: 'committed' },
  });
  const api = await connectAgent(s.dev.stateDir, 5000);
  t.like(await api!.state(), {
    agent: { version: '0.2.0', update: { version: '0.2.0', phase: 'committed' } },
  });
  t.deepEqual(container(s), app, 'the container is untouched (same id, pid, start time)');
  // events come from three processes' outboxes (0.1.0, the trial, 0.2.0), each drained once online
  const phases = () => [
    ...new Set(
      s.view.events.filter((e) => e.type === 'agent-update' && e.version === '0.2.0').map((e) => e.phase),
    ),
  ];
  await waitFor(() => phases().includes('committed'), 60_000, 'the committed event').catch(() => undefined);
  t.deepEqual(phases(), ['downloading', 'staged', 'trial', 'committed']);
  const at = (phase: string) =>
    Number(
      s.view.events.find((e) => e.type === 'agent-update' && e.version === '0.2.0' && e.phase === phase)?.at,
    );
  t.log(
    `0.1.0 → 0.2.0: ${((t1 - t0) / 1000).toFixed(1)} s from deploy to committed; download ${((at('staged') - at('downloading')) / 1000).toFixed(1)} s, ` +
      `switch + trial + commit ${((at('committed') - at('staged')) / 1000).toFixed(1)} s; fleet sent ${sent} B for a ${b2.record.size} B executable ` +
      `(${(sent / b2.record.size).toFixed(3)}×)`,
  );
  t.true(sent < b2.record.size * 1.1, 'about one executable sent');

  // 0.2.0 → 0.3.0, which exits at start: rolled back to 0.2.0
  const r3 = await pushRelease(s.stack, b3);
  const t2 = Date.now();
  await deploy(s.stack, s.dev.id, 'v1', r3);
  await updateReaches(s, '0.3.0', 'rolled-back', '0.2.0');
  t.log(`0.2.0 → 0.3.0 (exits at start): rolled back in ${((Date.now() - t2) / 1000).toFixed(1)} s`);
  t.regex(agentOf(s)?.update?.reason ?? '', /exited with code 1 during its trial/);
  t.is(exeOf(pid), path.join(s.dev.stateDir, 'agent', '0.2.0', 'berth'));
  t.deepEqual(container(s), app);
  // deployed again: never retried
  await deploy(s.stack, s.dev.id, 'v1', r3);
  await updateReaches(s, '0.3.0', 'refused', '0.2.0');
  t.regex(agentOf(s)?.update?.reason ?? '', /Conflict: agent 0.3.0 failed its trial on this device/);

  // 0.2.0 → 0.4.0, which never connects (and migrates the database): rolled back at the deadline
  const r4 = await pushRelease(s.stack, b4);
  const t4 = Date.now();
  await deploy(s.stack, s.dev.id, 'v1', r4);
  await updateReaches(s, '0.4.0', 'rolled-back', '0.2.0');
  t.regex(
    agentOf(s)?.update?.reason ?? '',
    new RegExp(
      `did not connect to the fleet within ${TRIAL_DEADLINE_MS / 1000} s \\(reached: state(, reconciled)?\\)`,
    ),
  );
  t.true(Date.now() - t4 >= TRIAL_DEADLINE_MS, 'at the deadline, not before');
  t.log(
    `0.2.0 → 0.4.0 (never connects): rolled back ${((Date.now() - t4) / 1000).toFixed(1)} s after the deploy`,
  );
  const db = openDatabase(path.join(s.dev.stateDir, 'berth.db'), { readonly: true, integrityCheck: false });
  try {
    t.is(db.pragma('user_version', { simple: true }), MIGRATIONS.length, 'the copy taken at the switch');
    t.falsy(db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'fault_probe'").get());
  } finally {
    db.close();
  }
  t.is(exeOf(pid), path.join(s.dev.stateDir, 'agent', '0.2.0', 'berth'));
  t.deepEqual(container(s), app);
  t.is(s.agent.starts, 1, 'never restarted from outside');
});

test('self-update under a supervisor that restarts like Restart=always: the launcher killed mid-trial', async (t) => {
  if (!needPrivileges(t)) return;
  const s = await setup(t, 'su-always', true);
  const [, b2] = s.b;
  const app = container(s);
  const first = s.agent.pid!;
  const r2 = await pushRelease(s.stack, b2);
  await deploy(s.stack, s.dev.id, 'v1', r2);
  // the trial is running: the journal names its child
  const journal = path.join(s.dev.stateDir, 'agent', 'trial.json');
  let child = 0;
  await waitFor(
    async () => {
      const j = JSON.parse(await fsp.readFile(journal, 'utf8').catch(() => '{}')) as {
        child?: { pid: number };
      };
      child = j.child?.pid ?? 0;
      return child > 0;
    },
    180_000,
    'the trial run',
  );
  process.kill(first, 'SIGKILL');
  await updateReaches(s, '0.2.0', 'committed', '0.2.0');
  t.true(s.agent.starts >= 2, 'the supervisor started the installed executable again');
  t.false(processAlive(child), 'the first trial run is gone');
  const pid = s.agent.pid!;
  t.is(exeOf(pid), path.join(s.dev.stateDir, 'agent', '0.2.0', 'berth'));
  t.deepEqual(container(s), app);
  const agents = (await fsp.readdir('/proc'))
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(s.dev.id);
      } catch {
        return false;
      }
    });
  t.deepEqual(agents, [String(pid)], 'exactly one agent process for the device');
});

test('a release build carries no fault code; a fault build does', async (t) => {
  built ??= builds();
  const [b1, , b3] = await built;
  const release = await fsp.readFile(b1.bundle, 'utf8');
  const faulty = await fsp.readFile(b3.bundle, 'utf8');
  for (const marker of ['fault build', 'fault_probe']) t.false(release.includes(marker), marker);
  t.true(faulty.includes('fault build: exiting at start'));
});
