import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { type Db, openDatabase } from '../../src/db/database.js';
import type { Digest } from '../../src/oci/digest.js';
import { sha256Digest } from '../../src/oci/digest.js';
import type { Unpacker } from '../../src/snapshots/apply.js';
import { BtrfsSnapshotter } from '../../src/snapshots/btrfs.js';
import { OverlaySnapshotter } from '../../src/snapshots/overlay.js';
import type { Snapshotter } from '../../src/snapshots/snapshotter.js';
import { unpackLayer } from '../../src/snapshots/unpack.js';
import { makeLoopFs } from './storage-loop.js';

/** A fresh snapshotter of one backend on a fresh root: overlay in a temp dir, btrfs on a loop image. */
export async function freshSnapshotter(
  driver: 'overlay' | 'btrfs',
  opts: { sizeMiB?: number; fs?: 'ext4'; dbElsewhere?: boolean } = {},
): Promise<{ sn: Snapshotter; root: string; db: Db; cleanup: () => Promise<void> }> {
  let base: string;
  let release: () => Promise<void>;
  if (driver === 'btrfs' || opts.fs === 'ext4') {
    const loop = await makeLoopFs({
      fs: driver === 'btrfs' ? 'btrfs' : 'ext4',
      sizeMiB: opts.sizeMiB ?? 256,
    });
    base = loop.mountpoint;
    release = loop.cleanup;
  } else {
    base = mkdtempSync(path.join(tmpdir(), 'berth-sn-'));
    release = () => rm(base, { recursive: true, force: true });
  }
  let dbDir = base;
  if (opts.dbElsewhere) {
    dbDir = mkdtempSync(path.join(tmpdir(), 'berth-sn-db-'));
    const inner = release;
    release = async () => {
      await inner();
      await rm(dbDir, { recursive: true, force: true });
    };
  }
  const db = openDatabase(path.join(dbDir, 'berth.db'));
  const sn =
    driver === 'btrfs'
      ? new BtrfsSnapshotter(db, path.join(base, 'btrfs'))
      : new OverlaySnapshotter(db, path.join(base, 'overlay'));
  try {
    await sn.recover();
  } catch (err) {
    db.close();
    await release();
    throw err;
  }
  return {
    sn,
    root: base,
    db,
    cleanup: async () => {
      db.close();
      await release();
    },
  };
}

/** Unpack an in-memory uncompressed tar as the next layer; returns its ChainID. */
export async function unpackTar(
  sn: Snapshotter,
  tarBytes: Buffer,
  parent?: Digest,
  unpacker?: Unpacker,
): Promise<Digest> {
  const diffId = sha256Digest(tarBytes);
  const chainId = parent === undefined ? diffId : sha256Digest(`${parent} ${diffId}`);
  await unpackLayer({
    snapshotter: sn,
    chainId,
    parent,
    diffId,
    open: async () => Readable.from([tarBytes]),
    compression: 'none',
    unpacker,
  });
  return chainId;
}
