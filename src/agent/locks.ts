/**
 * Update locks on the host: one directory per app (<root>/<app>, default /run/berth/locks/<app>), bind-mounted
 * into each of the app's containers at /tmp/berth-lock. The app holds the lock by creating `updates.lock`
 * there (and removes it when it may be interrupted again); while it exists the agent does not stop or kill
 * the app's running containers for an update, unless the target sets update.overrideLock.
 *
 * Limitation: presence of the file is the lock (balena's lockfile convention); an flock(2) on it is not
 * checked, since node has no flock — an app that crashes while holding the lock leaves the file behind,
 * which the override flag (or removing the file) resolves.
 */
import { mkdir, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { assertSafeName } from '../lib/ids.js';
import { HANDOVER_FILE, UPDATE_LOCK_FILE, type UpdateLocks } from './ports.js';

export class HostUpdateLocks implements UpdateLocks {
  constructor(private readonly root = '/run/berth/locks') {}

  async dir(app: string): Promise<string> {
    const d = path.join(this.root, assertSafeName('app name', app));
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
