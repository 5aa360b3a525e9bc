import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { berth, berthStart, berthStop, tempDir } from '../../helpers/cli.js';
import { waitFor } from '../../helpers/fleet-harness.js';
import { buildBusyboxImage } from '../../helpers/images.js';
import { freePort } from '../../helpers/mosquitto.js';
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

test('berth pull --unpack: pulled from the fleet and unpacked into committed snapshots by one process', async (t) => {
  if (!needPrivileges(t, { root: true, paths: ['/usr/bin/umoci'] })) return;
  const work = tempDir('storage-cli-pull');
  t.teardown(() => fsp.rm(work, { recursive: true, force: true }));
  const img = buildBusyboxImage(path.join(work, 'build'));
  const fleet = path.join(work, 'fleet');
  t.is(berth(['--state-dir', fleet, 'fleet', 'keygen']).code, 0);
  const push = berth(['--state-dir', fleet, 'fleet', 'push', img.layout, '--tag', 'busybox:pull']);
  t.is(push.code, 0, push.stderr);
  const port = await freePort();
  // a lab broker (anonymous clients): enrollment has its own tests
  const serve = berthStart([
    ...['--state-dir', fleet, 'fleet', 'serve', '--listen', `127.0.0.1:${port}`],
    ...['--allow-anonymous', '--http', 'off'],
  ]);
  t.teardown(() => berthStop(serve.p));
  await waitFor(() => serve.out().includes('serving on'), 15_000, 'fleet serve');
  const broker = `mqtt://127.0.0.1:${port}`;
  const target = path.join(work, 'target.json');
  await fsp.writeFile(target, JSON.stringify({ apps: {}, images: ['busybox:pull'] }));
  const dep = berth([
    ...['--state-dir', fleet, 'fleet', 'deploy', target, '--device', 'dev1', '--allow-unknown'],
    ...['--broker', broker],
  ]);
  t.is(dep.code, 0, dep.stderr);
  const env = { BERTH_STATE_DIR: path.join(work, 'state') };
  const pull = berth(
    [
      ...['--storage-driver', 'overlay', 'pull', 'busybox:pull', '--unpack', '--broker', broker],
      ...['--device-id', 'dev1', '--fleet-key', path.join(fleet, 'fleet-key.pub.pem')],
    ],
    { env },
  );
  t.is(pull.code, 0, pull.stderr);
  const lines = pull.stdout.trim().split('\n');
  t.regex(lines[0]!, /^busybox:pull sha256:[0-9a-f]{64} /);
  t.deepEqual(
    lines.slice(1, 3).map((l) => l.split(' ')[0]),
    ['unpacked', 'unpacked'],
  );
  const chain = /^busybox:pull: (sha256:[0-9a-f]{64}) \(overlay, \d+ ms\)$/.exec(lines[3] ?? '');
  t.truthy(chain, pull.stdout);
  const rows = JSON.parse(berth(['storage', 'ls', '--json'], { env }).stdout) as Array<{
    name: string;
    kind: string;
  }>;
  t.deepEqual(
    rows.map((x) => x.kind),
    ['committed', 'committed'],
  );
  t.is(rows[1]!.name, chain?.[1] ?? '');
  // the same as `image unpack` would have done: a second unpack reuses both layers
  const again = berth(['--storage-driver', 'overlay', 'image', 'unpack', 'busybox:pull', '--json'], { env });
  t.is(again.code, 0, again.stderr);
  t.true((JSON.parse(again.stdout) as { layers: Array<{ reused: boolean }> }).layers.every((l) => l.reused));
});
