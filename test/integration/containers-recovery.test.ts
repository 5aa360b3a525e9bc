/**
 * ContainerManager recovery and reconciliation, driven directly (runc + berth-monitor): an interrupted
 * create is undone, an interrupted remove finished, a dead monitor is noticed (container still running →
 * flagged; container gone → exited with unknown status), restart of an exited container, devices.
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { openDatabase } from '../../src/db/database.js';
import { ContainerManager, ociArch, statDevice } from '../../src/runtime/containers.js';
import { NetworkManager } from '../../src/runtime/network/network.js';
import { DefaultRootfsProvider } from '../../src/runtime/rootfs.js';
import { OciCliRuntime } from '../../src/runtime/runtime.js';
import { needPrivileges } from '../helpers/privileged.js';
import { ensureBuilt, waitUntil } from '../helpers/runtime-cli.js';
import { removeSharedBusyboxRootfs, sharedBusyboxRootfs, tempDir } from '../helpers/runtime-rootfs.js';

test.after.always(removeSharedBusyboxRootfs);

async function setup(t: ExecutionContext) {
  await ensureBuilt();
  const dir = await tempDir(t, 'berth-rec-');
  const stateDir = path.join(dir, 'state');
  const db = openDatabase(path.join(stateDir, 'berth.db'));
  const runtime = new OciCliRuntime('runc', '/usr/sbin/runc', path.join(stateDir, 'runtime', 'runc'));
  const mgr = new ContainerManager({
    db,
    stateDir,
    runtime,
    monitorPath: path.resolve('native/build/x64/berth-monitor'),
    network: new NetworkManager(db, {
      bridge: 'brec-unused',
      subnet: '172.31.198.0/24',
      nftTable: 'berth_rec',
      firewall: 'none',
    }),
    rootfs: new DefaultRootfsProvider(),
    arch: ociArch(),
    logMaxSize: 1 << 20,
    logMaxFiles: 2,
  });
  t.teardown(async () => {
    for (const c of await mgr.list({ all: true }))
      await mgr.remove(c.id, { force: true }).catch(() => undefined);
    db.close();
  });
  const rootfs = await sharedBusyboxRootfs();
  return { db, mgr, runtime, rootfs, stateDir };
}

test('recover: interrupted create undone, interrupted remove finished, running reconciled', async (t) => {
  if (!needPrivileges(t)) return;
  const { db, mgr, rootfs } = await setup(t);
  const app = { command: ['sleep', '60'], network: 'none' as const, readOnlyRootfs: true };
  const a = await mgr.create({ name: 'half-created', source: { kind: 'dir', path: rootfs }, app });
  const b = await mgr.create({ name: 'half-removed', source: { kind: 'dir', path: rootfs }, app });
  const c = await mgr.start(
    (await mgr.create({ name: 'runs', source: { kind: 'dir', path: rootfs }, app })).id,
  );
  db.prepare("UPDATE containers SET state = 'creating' WHERE id = ?").run(a.id);
  db.prepare("UPDATE containers SET state = 'removing' WHERE id = ?").run(b.id);
  const r = await mgr.recover();
  t.deepEqual(r, { undone: 1, removed: 1, reconciled: 1 });
  t.false(existsSync(mgr.containerDir(a.id)));
  t.false(existsSync(mgr.containerDir(b.id)));
  t.deepEqual(
    (await mgr.list({ all: true })).map((x) => [x.name, x.state]),
    [['runs', 'running']],
  );
  t.is((await mgr.inspect(c.id)).state, 'running');
});

test('a dead monitor is noticed: running container flagged, then exit status unknown', async (t) => {
  if (!needPrivileges(t)) return;
  const { mgr, runtime, rootfs } = await setup(t);
  const c = await mgr.start(
    (
      await mgr.create({
        source: { kind: 'dir', path: rootfs },
        app: { command: ['sleep', '60'], network: 'none' },
      })
    ).id,
  );
  process.kill(c.monitorPid!, 'SIGKILL');
  await waitUntil('monitor gone', async () => !mgr.monitorAlive(c.id, c.monitorPid));
  const flagged = await mgr.inspect(c.id);
  t.is(flagged.state, 'running');
  t.regex(flagged.error ?? '', /monitor lost/);
  await runtime.kill(c.id, 'SIGKILL');
  await waitUntil('stopped', async () => (await runtime.state(c.id))?.status === 'stopped');
  const gone = await mgr.inspect(c.id);
  t.is(gone.state, 'exited');
  t.is(gone.exitCode, -1);
  t.regex(gone.error ?? '', /exit status unknown/);
  t.is(await runtime.state(c.id), undefined, 'runtime state deleted');
});

test('restart an exited container (same id, log kept, restart count), devices', async (t) => {
  if (!needPrivileges(t)) return;
  const { mgr, rootfs } = await setup(t);
  const dev = await statDevice('/dev/zero', '/dev/myzero');
  t.deepEqual([dev.type, dev.major, dev.minor], ['c', 1, 5]);
  const c = await mgr.create({
    source: { kind: 'dir', path: rootfs },
    app: { command: ['sh', '-c', 'head -c 4 /dev/myzero | wc -c'], network: 'none', devices: [dev] },
  });
  await mgr.start(c.id);
  t.is((await mgr.waitExit(c.id, 10_000))?.exitCode, 0);
  t.is((await mgr.inspect(c.id)).state, 'exited');
  await mgr.start(c.id);
  await mgr.waitExit(c.id, 10_000);
  const again = await mgr.inspect(c.id);
  t.is(again.restartCount, 1);
  const log = await fsp.readFile(path.join(mgr.containerDir(c.id), 'log.json'), 'utf8');
  t.deepEqual(
    log
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).log.trim()),
    ['4', '4'],
  );
});
