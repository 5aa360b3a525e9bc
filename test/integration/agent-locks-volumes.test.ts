/** Host update locks and host volumes on a real filesystem (temp dirs). */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { HostUpdateLocks } from '../../src/agent/locks.js';
import { UPDATE_LOCK_FILE } from '../../src/agent/ports.js';
import { HostVolumes } from '../../src/agent/volumes.js';

test('update lock: held while updates.lock exists in the app lock dir', async (t) => {
  const root = mkdtempSync(path.join(tmpdir(), 'berth-locks-'));
  const locks = new HostUpdateLocks(root);
  const dir = await locks.dir('shop');
  t.is(dir, path.join(root, 'shop'));
  t.false(await locks.held('shop'));
  writeFileSync(path.join(dir, UPDATE_LOCK_FILE), '');
  t.true(await locks.held('shop'));
  rmSync(path.join(dir, UPDATE_LOCK_FILE));
  t.false(await locks.held('shop'));
  await t.throwsAsync(locks.dir('../etc'), { message: /invalid app name/ });
});

test('host volumes: create, list, remove (data goes), names checked', async (t) => {
  const root = mkdtempSync(path.join(tmpdir(), 'berth-vols-'));
  const v = new HostVolumes(root);
  t.deepEqual(await v.list(), []);
  await v.create('shop', 'data');
  await v.create('shop', 'cache');
  writeFileSync(path.join(v.hostPath('shop', 'data'), 'f'), 'x');
  t.deepEqual(
    (await v.list()).sort((a, b) => a.name.localeCompare(b.name)),
    [
      { app: 'shop', name: 'cache' },
      { app: 'shop', name: 'data' },
    ],
  );
  await v.remove('shop', 'data');
  t.false(existsSync(v.hostPath('shop', 'data')));
  t.deepEqual(await v.list(), [{ app: 'shop', name: 'cache' }]);
  t.throws(() => v.hostPath('shop', '../x'), { message: /invalid volume name/ });
});
