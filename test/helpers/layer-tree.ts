import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { exec } from '../../src/lib/exec.js';

/**
 * Trees to compare an unpacked snapshot with a reference: every entry's type, mode, owner, size, content
 * hash, symlink target, mtime (not of directories: whiteouts touch them), device number, xattrs, and
 * the groups of hardlinked paths. The reference is GNU tar plus the OCI whiteout rules, layer by layer.
 */
export type Node = {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  sha?: string;
  link?: string;
  mtime?: number;
  rdev?: number;
};

export async function snapshotTree(dir: string): Promise<{ nodes: Record<string, Node>; links: string[][] }> {
  const nodes: Record<string, Node> = {};
  const byIno = new Map<bigint, string[]>();
  const visit = async (rel: string) => {
    for (const name of (await fsp.readdir(path.join(dir, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      if (r === 'lost+found') continue;
      const p = path.join(dir, r);
      const st = await fsp.lstat(p, { bigint: true });
      const n: Node = {
        type: '?',
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
      };
      if (st.isDirectory()) n.type = 'dir';
      else if (st.isSymbolicLink()) {
        n.type = 'symlink';
        n.link = await fsp.readlink(p);
        n.mtime = Number(st.mtimeMs / 1000n);
      } else if (st.isFile()) {
        n.type = 'file';
        n.size = Number(st.size);
        n.sha = createHash('sha256')
          .update(await fsp.readFile(p))
          .digest('hex');
        n.mtime = Number(st.mtimeMs / 1000n);
        if (st.nlink > 1n) byIno.set(st.ino, [...(byIno.get(st.ino) ?? []), r]);
      } else {
        n.type = st.isCharacterDevice()
          ? 'char'
          : st.isBlockDevice()
            ? 'block'
            : st.isFIFO()
              ? 'fifo'
              : 'other';
        n.rdev = Number(st.rdev);
      }
      nodes[r] = n;
      if (st.isDirectory()) await visit(r);
    }
  };
  await visit('');
  const links = [...byIno.values()].filter((g) => g.length > 1).map((g) => g.sort());
  return { nodes, links: links.sort((a, b) => a[0]!.localeCompare(b[0]!)) };
}

/** GNU tar + OCI whiteout rules: per layer, apply its whiteouts to what is there, then extract the rest. */
export async function referenceExtract(blobs: string[], dir: string): Promise<void> {
  for (const blob of blobs) {
    const list = (await exec('tar', ['-tzf', blob])).stdout.split('\n').filter(Boolean);
    for (const entry of list) {
      const clean = entry.replace(/^\.\//, '').replace(/\/$/, '');
      const base = path.basename(clean);
      const parent = path.dirname(clean);
      if (base === '.wh..wh..opq') {
        for (const n of await fsp.readdir(path.join(dir, parent)).catch(() => [])) {
          await fsp.rm(path.join(dir, parent, n), { recursive: true, force: true });
        }
      } else if (base.startsWith('.wh.')) {
        await fsp.rm(path.join(dir, parent, base.slice(4)), { recursive: true, force: true });
      }
    }
    await exec('tar', [
      '-xzf',
      blob,
      '-C',
      dir,
      '--numeric-owner',
      '-p',
      '--xattrs',
      '--xattrs-include=*',
      '--exclude=.wh.*',
    ]);
  }
}

/** Every xattr under dir (not following symlinks): path → name → value as hex; trusted.overlay.* left out. */
export async function xattrTree(dir: string): Promise<Record<string, Record<string, string>>> {
  const r = await exec('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '.'], {
    cwd: dir,
    allowFailure: true,
    maxBuffer: 64 * 1024 * 1024,
  });
  const out: Record<string, Record<string, string>> = {};
  let file = '';
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      file = line.slice('# file: '.length).replace(/^\.\//, '');
      continue;
    }
    const eq = line.indexOf('=');
    if (!file || eq < 0) continue;
    const name = line.slice(0, eq);
    if (name.startsWith('trusted.overlay.') || file === 'lost+found' || file.startsWith('lost+found/'))
      continue;
    out[file] ??= {};
    out[file]![name] = line.slice(eq + 1);
  }
  return out;
}
