/**
 * `berth fleet command <device> retry` from the built CLI, all real: Mosquitto, `berth fleet serve` with
 * its HTTP API, a `berth agent` whose pull fails (the fleet lost a layer blob of the image it deployed) and
 * backs off for minutes. The command, on the server's state dir (signed with its key, over the broker) and
 * remotely (--server/--token, through the API, audited), makes the agent reconcile at once: the device
 * answers, its log says why, and it reports a new try failed long before the backoff would have run one.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { berth, berthAsync, berthStart, berthStop } from '../helpers/cli.js';
import { tempDir, waitFor } from '../helpers/fleet-harness.js';
import { blobPath, buildBusyboxImage, manifestOf } from '../helpers/images.js';
import { Mosquitto } from '../helpers/mosquitto.js';

interface Retry {
  at: string;
  attempt: number;
  lastError: string | null;
}

test('fleet command retry: locally and with --server the agent backing off reconciles now; help and bad use', async (t) => {
  t.timeout(240_000);
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  const work = await tempDir(t, 'cmd-retry');
  const fdir = path.join(work, 'fleet');
  const adir = path.join(work, 'agent');
  const opdir = path.join(work, 'operator');
  await fsp.mkdir(opdir);
  const fleet = `retry${process.pid}`;
  const deviceId = `retry-dev-${process.pid}`;
  const ok = (r: { code: number; stdout: string; stderr: string }) => {
    t.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
    return r;
  };

  // the image the fleet deploys, one of whose layers the fleet then loses
  const img = buildBusyboxImage(path.join(work, 'img'));
  ok(berth(['--state-dir', fdir, 'fleet', 'keygen']));
  ok(berth(['--state-dir', fdir, 'fleet', 'push', `${img.layout}:${img.tag}`, '--tag', 'app:1']));
  const manifest = JSON.parse(
    await fsp.readFile(blobPath(img.layout, manifestOf(img.layout, img.tag).digest), 'utf8'),
  ) as { layers: Array<{ digest: string }> };
  const lost = manifest.layers[0]!.digest;
  await fsp.rm(blobPath(path.join(fdir, 'content'), lost));
  const token = ok(
    berth(['--state-dir', fdir, 'fleet', 'token', 'create', '--name', 'ops', '--role', 'operator']),
  ).stdout.match(/berth_\S+/)![0];
  const admin = ok(
    berth(['--state-dir', fdir, 'fleet', 'token', 'create', '--name', 'audit', '--role', 'admin']),
  ).stdout.match(/berth_\S+/)![0];

  const serve = berthStart([
    ...['--state-dir', fdir, 'fleet', 'serve', '--broker', m.url, '--fleet', fleet],
    ...['--http', '127.0.0.1:0'],
  ]);
  t.teardown(() => berthStop(serve.p));
  await waitFor(() => /API on http:\/\/\S+\/api\/v1/.test(serve.out()), 30_000, 'fleet serve');
  const api = /API on (http:\/\/\S+)\/api\/v1/.exec(serve.out())![1]!;
  const get = async <T>(p: string, tok = token) =>
    (await (await fetch(`${api}/api/v1${p}`, { headers: { authorization: `Bearer ${tok}` } })).json()) as T;
  const retryOf = async () => (await get<{ retry: Retry | null }>(`/devices/${deviceId}`)).retry;

  // the agent backs off 2.5 to 5 minutes after a failure: any try within the test is one someone asked for
  const config = path.join(work, 'agent.yml');
  await fsp.writeFile(config, 'agent:\n  retryMinMs: 300000\n  retryMaxMs: 300000\n');
  const agent = berthStart([
    ...['--state-dir', adir, '--config', config, 'agent', '--broker', m.url, '--fleet', fleet],
    ...['--device-id', deviceId, '--fleet-key', path.join(fdir, 'fleet-key.pub.pem')],
  ]);
  t.teardown(() => berthStop(agent.p));
  await waitFor(
    async () => (await get<{ online?: boolean }>(`/devices/${deviceId}`)).online === true,
    60_000,
    'the device online',
  );
  const target = path.join(work, 'target.json');
  await fsp.writeFile(
    target,
    JSON.stringify({ apps: { web: { services: { main: { image: 'app:1' } } } }, images: ['app:1'] }),
  );
  ok(
    berth([
      '--state-dir',
      fdir,
      'fleet',
      'deploy',
      target,
      '--device',
      deviceId,
      '--broker',
      m.url,
      '--fleet',
      fleet,
    ]),
  );
  // the retry the device reports, once it satisfies `ok`
  const reported = async (what: string, ok: (r: Retry) => boolean) => {
    let r: Retry | null = null;
    await waitFor(
      async () => {
        r = await retryOf();
        return r !== null && ok(r);
      },
      60_000,
      what,
    );
    t.log(what, JSON.stringify(r));
    return r! as Retry;
  };
  const first: Retry = await reported('the failed pull backing off', () => true);
  t.is(first.attempt, 1);
  t.regex(first.lastError ?? '', /^NotFound: /, 'the failure is reported');
  t.true(Date.parse(first.at) - Date.now() > 60_000, `backing off until ${first.at}`);

  // the next try is reported once the device ran it (it fails again: the blob is still lost), and the
  // backoff was reset: a first retry again
  const anotherTry = async (after: Retry) => {
    const next = await reported('a new try', (r) => r.at !== after.at);
    t.is(next.attempt, 1, 'the backoff was reset');
    return next;
  };

  // on the server's state dir: signed with its key, straight over the broker
  const local = ok(
    await berthAsync([
      ...['--state-dir', fdir, 'fleet', 'command', deviceId, 'retry'],
      ...['--broker', m.url, '--fleet', fleet],
    ]),
  );
  t.deepEqual(JSON.parse(local.stdout), { retrying: true }, "the device's answer");
  const second = await anotherTry(first);
  // the agent says why it tried (a JSON log line: {why: "an operator asked to retry", msg: "retrying now…"})
  const asked = () =>
    agent.out().match(/"why":"an operator asked to retry".*"msg":"retrying now; backoff reset"/g)?.length ??
    0;
  t.is(asked(), 1, agent.out().slice(-3000));

  // from the operator's machine, through the API: an empty state dir, the server and a token
  const remote = ok(
    await berthAsync([
      ...['--state-dir', opdir, 'fleet', 'command', deviceId, 'retry', '--json'],
      ...['--server', api, '--token', token],
    ]),
  );
  t.like(JSON.parse(remote.stdout), { deviceId, kind: 'retry', ok: true, result: { retrying: true } });
  await anotherTry(second);
  t.is(asked(), 2, 'the agent ran a try for each command');
  const audit = await get<{ items: Array<{ action: string; target: string; result: string }> }>(
    '/audit?action=device.command',
    admin,
  );
  t.like(audit.items[0], { action: 'device.command', target: `${deviceId} retry`, result: 'ok' });

  // bad use is refused before anything reaches the device (the agent's own command schema, on the server);
  // the help names the kind
  const extra = berth([
    ...['--state-dir', opdir, 'fleet', 'command', deviceId, 'retry', '--app', 'web'],
    ...['--server', api, '--token', token],
  ]);
  t.is(extra.code, 2, extra.stderr);
  t.regex(extra.stderr, /InvalidInput: command: .*app/);
  const unknown = berth([
    ...['--state-dir', opdir, 'fleet', 'command', deviceId, 'retri'],
    ...['--server', api, '--token', token],
  ]);
  t.is(unknown.code, 2, unknown.stderr);
  t.regex(unknown.stderr, /unknown command retri: use restart \| logs \| report \| purge-volume \| retry/);
  t.regex(berth(['fleet', 'command', '--help']).stdout, /purge-volume \| retry/);
});
