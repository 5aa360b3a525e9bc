import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import type { Digest } from '../../../src/oci/digest.js';
import { unpackLayer } from '../../../src/snapshots/unpack.js';
import { makeTar } from '../../helpers/layer-tar.js';
import { needPrivileges } from '../../helpers/privileged.js';
import { freshSnapshotter, unpackTar } from '../../helpers/storage-fixture.js';

/** An uncompressed layer of `files` incompressible files of `fileMiB` each, written to `file`. */
async function bigLayer(file: string, files: number, fileMiB: number): Promise<Digest> {
  const entries = [];
  for (let i = 0; i < files; i++) {
    entries.push({ name: `data/f${i}.bin`, content: randomBytes(fileMiB * 1024 * 1024) });
  }
  const tar = await makeTar([{ name: 'data/', type: 'directory' }, ...entries]);
  await fsp.writeFile(file, tar);
  return `sha256:${createHash('sha256').update(tar).digest('hex')}` as Digest;
}

// Disk full, for real: a layer larger than a small loop filesystem (which also holds the database, as
// on a device). The unpack must fail with NoSpace, commit nothing, and remove its partial snapshot so
// the space comes back.
//
// btrfs keeps the database on another filesystem: SQLite's WAL index (-shm) is mmapped, and on a full
// copy-on-write filesystem a write to that mapping cannot get a new block and the process dies of
// SIGBUS (seen here). On devices with btrfs, the state dir's database wants space reserved (or its own
// subvolume with a quota) — noted in the report.
for (const [driver, sizeMiB, files, dbElsewhere] of [
  ['overlay', 32, 12, false],
  ['btrfs', 128, 40, true],
] as const) {
  test(`${driver}: a layer that does not fit fails with NoSpace, commits nothing and leaves no partial snapshot`, async (t) => {
    if (!needPrivileges(t, { root: true, paths: ['/dev/loop-control'] })) return;
    const fx = await freshSnapshotter(driver, { fs: 'ext4', sizeMiB, dbElsewhere });
    const work = mkdtempSync(path.join(tmpdir(), 'berth-nospace-'));
    t.teardown(async () => {
      await fx.cleanup();
      await fsp.rm(work, { recursive: true, force: true });
    });
    const base = await unpackTar(fx.sn, await makeTar([{ name: 'etc/hostname', content: 'small\n' }]));
    const layer = path.join(work, 'big.tar');
    const diffId = await bigLayer(layer, files, 4);
    const err = await t.throwsAsync(
      unpackLayer({
        snapshotter: fx.sn,
        chainId: `sha256:${'b'.repeat(64)}`,
        parent: base,
        diffId,
        open: async () => createReadStream(layer),
        compression: 'none',
      }),
    );
    t.is((err as { code?: string }).code, 'NoSpace', err?.message);
    t.regex(err!.message, /no space left/);
    const names: string[] = [];
    await fx.sn.walk((i) => {
      names.push(`${i.kind}:${i.name}`);
    });
    t.deepEqual(names, [`committed:${base}`]);
    const dir = path.join(fx.root, driver, 'snapshots');
    t.is((await fsp.readdir(dir)).length, 1, 'only the base layer is left on disk');
    // and the space is usable again: a small layer still unpacks
    const again = await unpackTar(fx.sn, await makeTar([{ name: 'ok', content: 'fits' }]), base);
    t.is((await fx.sn.stat(again)).kind, 'committed');
  });
}
