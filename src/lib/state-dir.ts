import { chmodSync, lstatSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from './logger.js';

/**
 * Who may reach what under the state dir (issue 15, item 3). Image layers may hold device nodes, a
 * container with CAP_MKNOD can make more in its rootfs, and container rootfs mount points are listed in
 * /proc/mounts for anyone to read: a host user who can walk to such a node opens the host device it
 * names (the device cgroup binds the container, not them). So, like docker's root (0710 since
 * CVE-2021-41091) and containerd's (0700 since CVE-2021-41103):
 *
 *   <state>            0710  only root, and the state dir's group may pass through (to reach berth.sock,
 *                            the local API, 0660): no listing, nothing else beneath is open to the group
 *   every dir berth    0700  content, snapshots, containers, volumes, networks, locks, runtime, native
 *   makes in it
 *   berth.db* , keys,  0600
 *   serve file
 *   berth.sock         0660  (root and the state dir's group: the CLI without root)
 *
 * What lies deeper keeps the modes its contents need (an image's root dir, a volume's root), reached only
 * through these. Nothing else needs a path in here: berth's containers run without a user namespace, so
 * the runtime (root) mounts each rootfs and bind mount before the container's user takes over, and no
 * container process ever resolves a host path under the state dir; berth-monitor and the runtime run as
 * root. (User-namespaced containers would need traversal for their remapped root: docker makes that
 * root:<remapped gid> 0710 — the place to do it is here, should berth ever remap.)
 *
 * `secureStateDir` runs whenever a process opens the state dir (CLI context, agent start): it creates the
 * dirs above with their modes, and only ever removes permission bits from what exists, so a state dir an
 * older berth made 0755/0711 is locked down on the next start. It touches berth's own names only, never
 * other files someone keeps in a directory given as --state-dir.
 */
export const STATE_DIR_MODE = 0o710;

/** Directories berth creates directly in the state dir. */
export const STATE_SUBDIRS = [
  'content',
  'snapshots',
  'containers',
  'volumes',
  'networks',
  'locks',
  'runtime',
  'native',
] as const;

/** Files berth keeps directly in the state dir (the socket is separate: it stays group-writable). */
const STATE_FILES = [
  'berth.db',
  'berth.db-wal',
  'berth.db-shm',
  'berth.db-journal',
  'fleet-key.pem',
  'fleet-key.pub.pem',
  'fleet-serve.json',
];
const SOCKET = 'berth.sock';

/** Pure: the mode an entry should have given its current one — only ever fewer bits. */
export function tightenedMode(mode: number, allowed: number): number {
  return mode & 0o7777 & allowed;
}

/** Create and lock down the state dir (see the file comment). Returns the entries whose mode changed. */
export function secureStateDir(stateDir: string, log?: Logger): string[] {
  const changed: string[] = [];
  mkdirSync(stateDir, { recursive: true, mode: STATE_DIR_MODE });
  const restrict = (p: string, allowed: number, create: 'dir' | false) => {
    let st: ReturnType<typeof lstatSync> | undefined;
    try {
      st = lstatSync(p);
    } catch {
      if (create === 'dir') mkdirSync(p, { mode: allowed & 0o700 });
      return;
    }
    if (st.isSymbolicLink()) return; // never chmod through a link someone planted
    const want = tightenedMode(st.mode, allowed);
    if (want !== (st.mode & 0o7777)) {
      chmodSync(p, want);
      changed.push(path.relative(stateDir, p) || '.');
    }
  };
  restrict(stateDir, STATE_DIR_MODE, false);
  for (const d of STATE_SUBDIRS) restrict(path.join(stateDir, d), 0o700, 'dir');
  for (const f of STATE_FILES) restrict(path.join(stateDir, f), 0o600, false);
  restrict(path.join(stateDir, SOCKET), 0o660, false);
  if (changed.length > 0) log?.warn({ stateDir, tightened: changed }, 'state dir permissions tightened');
  return changed;
}
