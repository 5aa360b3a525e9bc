/**
 * The runtime contract over every OCI runtime on this machine (runc; crun; berth-runtime as soon as
 * native/build/<arch>/berth-runtime exists): the same lifecycle and the same view from inside.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { buildBundleConfig } from '../../src/runtime/bundle.js';
import { OciCliRuntime } from '../../src/runtime/runtime.js';
import { resolveUserInRootfs } from '../../src/runtime/users.js';
import { needPrivileges } from '../helpers/privileged.js';
import {
  availableRuntimes,
  removeSharedBusyboxRootfs,
  sharedBusyboxRootfs,
  tempDir,
  uniqueId,
} from '../helpers/runtime-rootfs.js';

test.after.always(removeSharedBusyboxRootfs);

async function waitFor<T>(fn: () => Promise<T | undefined>, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

for (const rt of availableRuntimes()) {
  test(`${rt.name}: create → start → kill → delete, state at each step`, async (t) => {
    if (!needPrivileges(t)) return;
    const dir = await tempDir(t);
    const rootfs = await sharedBusyboxRootfs();
    const runtime = new OciCliRuntime(rt.name, rt.binary, path.join(dir, 'root'));
    const id = uniqueId('oci');
    const bundle = path.join(dir, 'bundle');
    await fsp.mkdir(bundle);
    const { spec } = buildBundleConfig({
      id,
      image: { Cmd: ['/bin/sleep', '30'] },
      arch: 'amd64',
      app: { readOnlyRootfs: true },
      user: await resolveUserInRootfs(rootfs, undefined),
      rootfs,
      volumesDir: path.join(dir, 'volumes'),
    });
    await fsp.writeFile(path.join(bundle, 'config.json'), JSON.stringify(spec));
    t.teardown(() => runtime.delete(id, { force: true }).catch(() => undefined));

    t.is(await runtime.state(id), undefined);
    await runtime.create(id, bundle, { pidFile: path.join(dir, 'pid') });
    const created = await runtime.state(id);
    t.is(created?.status, 'created');
    t.true((created?.pid ?? 0) > 0);
    t.is(Number(await fsp.readFile(path.join(dir, 'pid'), 'utf8')), created?.pid ?? -1);
    t.true((await fsp.stat(`/sys/fs/cgroup/memory/berth/${id}`)).isDirectory());
    await runtime.start(id);
    t.is((await runtime.state(id))?.status, 'running');
    await runtime.kill(id, 'SIGKILL');
    await waitFor(async () => ((await runtime.state(id))?.status === 'stopped' ? true : undefined));
    await t.throwsAsync(runtime.kill(id, 'SIGTERM'));
    await runtime.delete(id);
    t.is(await runtime.state(id), undefined);
    await t.throwsAsync(fsp.stat(`/sys/fs/cgroup/memory/berth/${id}`));
    await t.throwsAsync(runtime.start(id), { message: /does not exist|not exist|not found/i });
  });

  test(`${rt.name}: a bad config.json is a clear error and leaves nothing behind`, async (t) => {
    if (!needPrivileges(t)) return;
    const dir = await tempDir(t);
    const runtime = new OciCliRuntime(rt.name, rt.binary, path.join(dir, 'root'));
    const id = uniqueId('bad');
    const bundle = path.join(dir, 'bundle');
    await fsp.mkdir(bundle);
    await fsp.writeFile(path.join(bundle, 'config.json'), '{"ociVersion":"1.0.2","process":');
    t.teardown(() => runtime.delete(id, { force: true }).catch(() => undefined));
    const err = await t.throwsAsync(runtime.create(id, bundle));
    t.regex(err!.message, new RegExp(`${rt.name} create ${id}`));
    t.is(await runtime.state(id), undefined);
  });
}

test('at least one OCI runtime is available', (t) => {
  t.true(availableRuntimes().length > 0);
});
