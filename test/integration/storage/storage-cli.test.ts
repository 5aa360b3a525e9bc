import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { berth, tempDir } from '../../helpers/cli.js';
import { buildBusyboxImage } from '../../helpers/images.js';
import { needPrivileges } from '../../helpers/privileged.js';
import { makeLoopFs } from '../../helpers/storage-loop.js';

test('berth image unpack, storage ls --json and storage info on overlay (explicit driver)', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/usr/bin/umoci'] })) return;
  const work = tempDir('storage-cli');
  t.teardown(() => fsp.rm(work, { recursive: true, force: true }));
  const img = buildBusyboxImage(path.join(work, 'build'));
  const env = { BERTH_STATE_DIR: path.join(work, 'state') };
  t.is(berth(['image', 'import', img.layout, '--tag', 'busybox:cli'], { env }).code, 0);
  const r = berth(['--storage-driver', 'overlay', 'image', 'unpack', 'busybox:cli', '--json'], { env });
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { driver: string; chainId: string; layers: Array<{ reused: boolean }> };
  t.is(out.driver, 'overlay');
  t.is(out.layers.length, 2);
  const ls = berth(['storage', 'ls', '--json'], { env });
  t.is(ls.code, 0, ls.stderr);
  const rows = JSON.parse(ls.stdout) as Array<{
    name: string;
    kind: string;
    parent?: string;
    usage: { size: number };
  }>;
  t.deepEqual(
    rows.map((x) => x.kind),
    ['committed', 'committed'],
  );
  t.is(rows[1]!.name, out.chainId);
  t.is(rows[1]!.parent, rows[0]!.name);
  t.true(rows[0]!.usage.size > 1_000_000, 'busybox is in the first layer');
  const info = JSON.parse(berth(['storage', 'info', '--json'], { env }).stdout) as {
    driver: string;
    capacityBytes: number;
  };
  t.is(info.driver, 'overlay');
  t.true(info.capacityBytes > 0);
  const again = JSON.parse(berth(['image', 'unpack', 'busybox:cli', '--json'], { env }).stdout) as typeof out;
  t.true(again.layers.every((l) => l.reused));
  const rm = berth(['storage', 'rm', rows[0]!.name], { env });
  t.is(rm.code, 1);
  t.regex(rm.stderr, /Conflict: .*child/);
});

test('auto detection picks btrfs when the state dir is on btrfs; btrfs elsewhere is Unsupported', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/dev/loop-control'] })) return;
  const loop = await makeLoopFs({ fs: 'btrfs', sizeMiB: 160 });
  const plain = tempDir('storage-cli-plain');
  t.teardown(async () => {
    await loop.cleanup();
    await fsp.rm(plain, { recursive: true, force: true });
  });
  const info = berth(['storage', 'info', '--json'], {
    env: { BERTH_STATE_DIR: path.join(loop.mountpoint, 'state') },
  });
  t.is(info.code, 0, info.stderr);
  t.is((JSON.parse(info.stdout) as { driver: string }).driver, 'btrfs');
  const r = berth(['--storage-driver', 'btrfs', 'storage', 'info'], { env: { BERTH_STATE_DIR: plain } });
  t.is(r.code, 1);
  t.regex(r.stderr, /Unsupported: .*not on btrfs/);
  const human = berth(['storage', 'info'], { env: { BERTH_STATE_DIR: plain } });
  t.regex(human.stdout, /backend: +overlay/);
});
