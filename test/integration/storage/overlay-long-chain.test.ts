import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import type { Digest } from '../../../src/oci/digest.js';
import { MOUNT_DATA_LIMIT, withTempMount } from '../../../src/snapshots/mount.js';
import { makeTar } from '../../helpers/layer-tar.js';
import { needPrivileges } from '../../helpers/privileged.js';
import { freshSnapshotter, unpackTar } from '../../helpers/storage-fixture.js';

// More layers than fit in one mount option string with absolute paths (the page-size limit on mount
// data): mount.ts mounts with paths relative to the snapshots dir instead.
test('overlay: 150 layers mount (relative lowerdirs from the snapshots dir) as view and as container', async (t) => {
  if (!needPrivileges(t, { root: true })) return;
  const fx = await freshSnapshotter('overlay');
  t.teardown(() => fx.cleanup());
  let parent: Digest | undefined;
  for (let i = 0; i < 150; i++) {
    parent = await unpackTar(
      fx.sn,
      await makeTar([
        { name: `layers/${i}`, content: String(i) },
        { name: 'top', content: `layer ${i}` },
        ...(i > 0 ? [{ name: `layers/.wh.${i - 1}`, content: '' }] : []),
        { name: `keep/${i}`, content: 'k' },
      ]),
      parent,
    );
  }
  await fx.sn.prepare('container', parent);
  const mounts = await fx.sn.mounts('container');
  t.is(mounts[0]!.type, 'overlay');
  t.true(mounts[0]!.options.join(',').length > MOUNT_DATA_LIMIT, 'absolute options would not fit');
  await withTempMount(mounts, async (dir) => {
    t.is(await fsp.readFile(path.join(dir, 'top'), 'utf8'), 'layer 149');
    t.deepEqual(await fsp.readdir(path.join(dir, 'layers')), ['149']);
    t.is((await fsp.readdir(path.join(dir, 'keep'))).length, 150);
    await fsp.writeFile(path.join(dir, 'written'), 'by the container');
  });
  await fx.sn.view('v', parent!);
  await withTempMount(await fx.sn.mounts('v'), async (dir) => {
    t.is(await fsp.readFile(path.join(dir, 'top'), 'utf8'), 'layer 149');
    await t.throwsAsync(fsp.writeFile(path.join(dir, 'x'), 'x'), { code: 'EROFS' });
  });
});
