import { promises as fsp } from 'node:fs';
import test from 'ava';
import type { Snapshotter } from '../../../src/snapshots/snapshotter.js';
import { unpackSafetySuite } from '../../conformance/unpack-safety-suite.js';
import { needPrivileges } from '../../helpers/privileged.js';
import { freshSnapshotter } from '../../helpers/storage-fixture.js';

/**
 * The tar-slip corpus (test/conformance/unpack-safety-suite.ts) against overlay and btrfs, each with the
 * native extractor and with the Node fallback. devmapper runs the same suite inside the test VM
 * (test/integration/devmapper-vm/guest.ts).
 */
for (const driver of ['overlay', 'btrfs'] as const) {
  for (const unpacker of ['native', 'node'] as const) {
    unpackSafetySuite(test, driver, unpacker, async () => {
      const fx = await freshSnapshotter(driver);
      return { sn: fx.sn, cleanup: fx.cleanup };
    });
  }
}

async function snapshots(sn: Snapshotter): Promise<string[]> {
  const out: string[] = [];
  await sn.walk((i) => {
    out.push(`${i.kind}:${i.name}`);
  });
  return out;
}

test('an unpack that died leaves an extract snapshot that the next unpack removes', async (t) => {
  if (!needPrivileges(t, { root: true })) return;
  const fx = await freshSnapshotter('overlay');
  t.teardown(() => fx.cleanup());
  const sn = fx.sn;
  const { removeStaleExtracts } = await import('../../../src/snapshots/unpack.js');
  // a dead unpacker (pid that cannot exist) and a live one (this process)
  await sn.prepare('extract-dead', undefined, { 'berth.unpack': 'x', 'berth.unpack.pid': '999999999' });
  const boot = (await fsp.readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  await sn.prepare('extract-live', undefined, {
    'berth.unpack': 'y',
    'berth.unpack.pid': String(process.pid),
    'berth.unpack.boot': boot,
  });
  await sn.prepare('container-1');
  t.deepEqual(await removeStaleExtracts(sn), ['extract-dead']);
  t.deepEqual((await snapshots(sn)).sort(), ['active:container-1', 'active:extract-live']);
});
