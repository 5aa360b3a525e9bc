/**
 * Update locks on the host: one directory per app (<root>/<app>), bind-mounted into each of the app's
 * containers at /tmp/berth-lock. The root is on a tmpfs (lockRootFor: /run/berth/locks for the default
 * state dir, /run/berth/<state-dir key>/locks for others, so two agents never share an app's lock), as
 * balena keeps its locks under /tmp/balena-supervisor on the host's tmpfs: a lock is held by a running
 * process, so a reboot must not leave one behind that blocks every update until someone deletes it.
 * The directory is made again whenever a container of the app starts (RuntimeEngine.start). The app holds the lock by creating `updates.lock`
 * there (and removes it when it may be interrupted again); while it exists the agent does not stop or kill
 * the app's running containers for an update, unless the target sets update.overrideLock.
 *
 * Limitation: presence of the file is the lock (balena's lockfile convention); an flock(2) on it is not
 * checked, since node has no flock — an app that crashes while holding the lock leaves the file behind,
 * which the override flag (or removing the file) resolves.
 */
import { chmod, mkdir, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { assertSafeName } from '../lib/ids.js';
import { DEFAULT_STATE_DIR, stateDirKey } from '../runtime/network/resolve.js';
import { HANDOVER_FILE, UPDATE_LOCK_FILE, type UpdateLocks } from './ports.js';

/** Where an agent with this state dir keeps its apps' lock dirs (see the file comment). */
export function lockRootFor(runDir: string, stateDir: string): string {
  return path.resolve(stateDir) === DEFAULT_STATE_DIR
    ? path.join(runDir, 'locks')
    : path.join(runDir, stateDirKey(stateDir), 'locks');
}

export class HostUpdateLocks implements UpdateLocks {
  constructor(private readonly root = '/run/berth/locks') {}

  async dir(app: string): Promise<string> {
    const d = path.join(this.root, assertSafeName('app name', app));
    // only root walks to the lock dirs (a container could make a device node in its own): as the state dir
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    await chmod(this.root, 0o700);
    await mkdir(d, { recursive: true, mode: 0o755 });
    return d;
  }

  async handoverSignalAt(app: string): Promise<number | undefined> {
    const f = path.join(this.root, assertSafeName('app name', app), HANDOVER_FILE);
    return stat(f).then(
      (st) => st.mtimeMs,
      () => undefined,
    );
  }

  async held(app: string): Promise<boolean> {
    const f = path.join(this.root, assertSafeName('app name', app), UPDATE_LOCK_FILE);
    return stat(f).then(
      () => true,
      () => false,
    );
  }
}
