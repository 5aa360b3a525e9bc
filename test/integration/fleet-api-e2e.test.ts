/**
 * The operator's path end to end over the fleet API, all real: `berth fleet serve` (embedded broker with
 * authentication, HTTP API on a free port), an operator on "another machine" (own config dir, an empty
 * state dir it never touches) using the remote CLI, and `berth agent --enroll` on a device:
 *
 *   first admin on the server's state dir → `fleet login` over HTTP → push an image by upload → enrollment
 *   token → the agent enrolls over HTTP and connects with its own credentials → `fleet deploy --wait`
 *   returns once the device converged → the service is killed on the device and the fleet's state shows
 *   it stopped (time measured) → a signed command answered → `fleet device revoke` → the device is
 *   disconnected and its credentials refused by the broker.
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { connectAsync } from 'mqtt';
import { DeviceDb } from '../helpers/agent-process.js';
import { runBerth, sampleArchive, startEnrolledAgent, startFleetServer } from '../helpers/enrolled-agent.js';
import { tempDir, waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';

const PASSWORD = 'e2e-admin-password';

test('enroll → deploy --wait over the API → converged → service stopped shows in state → revoke cuts the device off', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(300_000);
  const work = await tempDir(t, 'api-e2e');
  const fleetDir = path.join(work, 'fleet');
  const deviceDir = path.join(work, 'device');
  const operatorHome = path.join(work, 'operator');
  const operatorState = path.join(work, 'operator-state');
  await fsp.mkdir(operatorState, { recursive: true });
  const deviceId = `api-e2e-${process.pid}`;

  // the operator's machine: its own config dir, never the server's state dir
  const opEnv = { XDG_CONFIG_HOME: operatorHome, BERTH_FLEET_SERVER: '', BERTH_FLEET_TOKEN: '' };
  const op = (args: string[], o: { input?: string; allowFailure?: boolean } = {}) =>
    runBerth(['--state-dir', operatorState, 'fleet', ...args], { ...o, env: opEnv });

  // the server: key, first admin (on its state dir), then serve
  const server = await startFleetServer(t, { fleetDir, fleet: 'e2e', password: PASSWORD });
  const api = server.url;
  t.false(server.output().includes('setup'), 'no setup token once an admin exists');

  // the operator logs in over HTTP; the token lands in their config dir, 0600
  const login = await op(['login', '--server', api, '--user', 'admin', '--password-stdin'], {
    input: `${PASSWORD}\n`,
  });
  t.regex(login.stdout, /logged in .* as admin's token cli .* \(admin\)/);
  const saved = path.join(operatorHome, 'berth', 'fleet.json');
  t.is((await fsp.stat(saved)).mode & 0o777, 0o600);

  // push by upload (an oci-archive made from the sample image)
  const archive = await sampleArchive(work);
  const push = await op(['push', archive, '--tag', 'sample:v1']);
  t.regex(push.stdout, /^sample:v1 sha256:[0-9a-f]{64} linux\/amd64/);

  // enrollment token, then the device enrolls over HTTP and runs from its enrollment alone
  const enroll = await op([
    'enroll',
    'create',
    '--group',
    'lab',
    '--labels',
    'site=e2e',
    '--expires',
    '10m',
    '--uses',
    '1',
  ]);
  const token = enroll.stdout.trim();
  t.regex(token, /^bet_/);
  const agent = await startEnrolledAgent(t, {
    work,
    deviceDir,
    deviceId,
    url: api,
    token,
    config: 'agent:\n  healthWindowMs: 2000\n  retryMinMs: 100\n  retryMaxMs: 2000\n  idleIntervalMs: 500\n',
  });
  const db = new DeviceDb(deviceDir);
  t.teardown(() => db.close());
  const enrollment = JSON.parse(await fsp.readFile(path.join(deviceDir, 'enrollment.json'), 'utf8'));
  t.is((await fsp.stat(path.join(deviceDir, 'enrollment.json'))).mode & 0o777, 0o600);
  t.is(enrollment.deviceId, deviceId);
  t.truthy(enrollment.username);
  await waitFor(
    async () => (await op(['devices', '--online', '--json'])).stdout.includes(deviceId),
    30_000,
    'the device online in the fleet',
  );

  // deploy to the group with --wait from the remote CLI: returns once the device converged
  const compose = path.join(work, 'compose.yml');
  await fsp.writeFile(
    compose,
    'name: hello\nservices:\n  web:\n    image: sample:v1\n    network_mode: none\n    restart: "no"\n    stop_grace_period: 1s\n',
  );
  const deploy = await op(['deploy', compose, '--group', 'lab', '--wait', '--timeout', '3m'], {
    allowFailure: true,
  });
  t.is(deploy.code, 0, `${deploy.stdout}\n${deploy.stderr}\n${agent.tail()}`);
  t.regex(deploy.stdout, /deployed group lab version 1/);
  t.regex(deploy.stderr, new RegExp(`${deviceId}: converged`));
  t.regex(deploy.stderr, /1\/1 converged/);
  const listed = JSON.parse((await op(['devices', '--json'])).stdout) as {
    items: Array<{ id: string; status: string; applied: { text: string }; labels: Record<string, string> }>;
  };
  const me = listed.items.find((d) => d.id === deviceId)!;
  t.is(me.status, 'converged');
  t.is(me.applied.text, 'group lab 1');
  t.deepEqual(me.labels, { site: 'e2e' });

  // stop the service on the device (its process killed, restart "no"): the fleet's state shows it
  const web = db.containers().find((c) => c.state === 'running');
  t.truthy(web, 'a running container on the device');
  const killedAt = Date.now();
  process.kill(web!.pid!, 'SIGKILL');
  let seenAfter = -1;
  await waitFor(
    async () => {
      const st = JSON.parse((await op(['state', deviceId])).stdout) as {
        apps: Record<string, { services: Record<string, { state: string }> }>;
      };
      if (st.apps.hello?.services.web?.state !== 'running') {
        seenAfter = Date.now() - killedAt;
        return true;
      }
      return false;
    },
    15_000,
    'the stopped service in the fleet state',
  );
  t.log(`fleet state showed the stopped service ${seenAfter} ms after the kill (aim: within 5 s)`);

  // a signed command over the API, answered by the device
  const report = await op(['command', deviceId, 'report', '--timeout', '60000'], { allowFailure: true });
  t.is(report.code, 0, report.stderr);

  // revoke: disconnected, and its own credentials are refused by the broker from now on
  const revoke = await op(['device', 'revoke', deviceId]);
  t.regex(revoke.stdout, /revoked device/);
  await waitFor(
    async () => {
      const page = JSON.parse((await op(['devices', '--json'])).stdout) as {
        items: Array<{ id: string; online: boolean; revokedAt: string | null }>;
      };
      const d = page.items.find((x) => x.id === deviceId)!;
      return d.revokedAt !== null && !d.online;
    },
    20_000,
    'the device offline and revoked',
  );
  const refused = await connectAsync(enrollment.broker, {
    username: enrollment.username,
    password: enrollment.password,
    clientId: `${deviceId}-probe`,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
  }).then(
    async (c) => {
      await c.endAsync();
      return false;
    },
    () => true,
  );
  t.true(refused, 'the broker refuses the revoked device’s credentials');
  t.false(existsSync(path.join(operatorState, 'fleet.db')), 'the remote operator never opened a state dir');
  const audit = await op(['audit', '--json', '--limit', '100']);
  const actions = (
    JSON.parse(audit.stdout) as { items: Array<{ action: string; result: string }> }
  ).items.map((a) => `${a.action} ${a.result}`);
  for (const a of [
    'image.push ok',
    'enrollment.create ok',
    'device.enroll ok',
    'deployment.create ok',
    'device.command ok',
    'device.revoke ok',
  ])
    t.true(actions.includes(a), `${a} in the audit log`);
});
