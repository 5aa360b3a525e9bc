/**
 * Resolve an image/app `User` ("1000", "app", "app:staff", "1000:50") against the rootfs' /etc/passwd and
 * /etc/group the way docker does: names must exist, numbers need not; the primary gid comes from passwd
 * unless a group is given; supplementary groups are those that list the user as a member.
 * `resolveUserFromFiles` is pure; `resolveUserInRootfs` reads the files without following symlinks out of
 * the rootfs.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { invalidInput } from '../lib/errors.js';
import type { ResolvedUser } from './bundle.js';

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}
interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

function parsePasswd(text: string): PasswdEntry[] {
  return text
    .split('\n')
    .map((l) => l.split(':'))
    .filter((f) => f.length >= 7 && /^\d+$/.test(f[2]!) && /^\d+$/.test(f[3]!))
    .map((f) => ({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! }));
}

function parseGroup(text: string): GroupEntry[] {
  return text
    .split('\n')
    .map((l) => l.split(':'))
    .filter((f) => f.length >= 4 && /^\d+$/.test(f[2]!))
    .map((f) => ({ name: f[0]!, gid: Number(f[2]), members: f[3]!.split(',').filter(Boolean) }));
}

const MAX_ID = 2 ** 32 - 2;

function numeric(s: string): number | undefined {
  if (!/^\d+$/.test(s)) return undefined;
  const n = Number(s);
  if (n > MAX_ID) throw invalidInput(`user/group id ${s} out of range`);
  return n;
}

export function resolveUserFromFiles(spec: string, passwdText: string, groupText: string): ResolvedUser {
  const [userPart = '', groupPart] = spec.trim().split(':', 2);
  const passwd = parsePasswd(passwdText);
  const groups = parseGroup(groupText);
  let entry: PasswdEntry | undefined;
  let uid: number;
  if (userPart === '') {
    uid = 0;
    entry = passwd.find((p) => p.uid === 0);
  } else {
    const n = numeric(userPart);
    entry = n !== undefined ? passwd.find((p) => p.uid === n) : passwd.find((p) => p.name === userPart);
    if (n === undefined && !entry)
      throw invalidInput(`unable to find user ${userPart}: no matching entries in passwd file`);
    uid = n ?? entry!.uid;
  }
  let gid = entry?.gid ?? 0;
  if (groupPart !== undefined && groupPart !== '') {
    const n = numeric(groupPart);
    if (n !== undefined) gid = n;
    else {
      const g = groups.find((x) => x.name === groupPart);
      if (!g) throw invalidInput(`unable to find group ${groupPart}: no matching entries in group file`);
      gid = g.gid;
    }
  }
  const additionalGids =
    groupPart === undefined && entry
      ? [...new Set(groups.filter((g) => g.members.includes(entry!.name) && g.gid !== gid).map((g) => g.gid))]
      : [];
  return { uid, gid, additionalGids, ...(entry?.home ? { home: entry.home } : { home: '/' }) };
}

/** Resolve `rel` inside `root`, following symlinks as if `root` were `/` (never escaping it). */
export async function resolveInRoot(root: string, rel: string): Promise<string> {
  const parts = rel.split('/').filter((p) => p && p !== '.');
  const done: string[] = [];
  let hops = 0;
  while (parts.length) {
    const part = parts.shift()!;
    if (part === '..') {
      done.pop();
      continue;
    }
    const candidate = path.join(root, ...done, part);
    let st: import('node:fs').Stats;
    try {
      st = await fsp.lstat(candidate);
    } catch {
      done.push(part, ...parts);
      return path.join(root, ...done);
    }
    if (st.isSymbolicLink()) {
      if (++hops > 40) throw invalidInput(`too many symlinks resolving ${rel} in ${root}`);
      const target = await fsp.readlink(candidate);
      if (target.startsWith('/')) done.length = 0;
      parts.unshift(...target.split('/').filter((p) => p && p !== '.'));
      continue;
    }
    done.push(part);
  }
  return path.join(root, ...done);
}

async function readInRoot(root: string, rel: string): Promise<string> {
  try {
    return await fsp.readFile(await resolveInRoot(root, rel), 'utf8');
  } catch {
    return '';
  }
}

export async function resolveUserInRootfs(rootfs: string, spec: string | undefined): Promise<ResolvedUser> {
  const [passwd, group] = await Promise.all([
    readInRoot(rootfs, '/etc/passwd'),
    readInRoot(rootfs, '/etc/group'),
  ]);
  return resolveUserFromFiles(spec ?? '', passwd, group);
}
