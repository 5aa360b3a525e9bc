/** Named volumes as host directories: <root>/<app>/<name>. Removing a volume deletes its data. */
import { mkdir, readdir, rm } from 'node:fs/promises';
import * as path from 'node:path';
import type { AppResource } from '../core/state.js';
import { assertSafeName } from '../lib/ids.js';
import type { VolumeService } from './ports.js';

export class HostVolumes implements VolumeService {
  constructor(private readonly root: string) {}

  hostPath(app: string, name: string): string {
    return path.join(this.root, assertSafeName('app name', app), assertSafeName('volume name', name));
  }

  async list(): Promise<AppResource[]> {
    const out: AppResource[] = [];
    const apps = await readdir(this.root, { withFileTypes: true }).catch(() => []);
    for (const a of apps) {
      if (!a.isDirectory()) continue;
      for (const v of await readdir(path.join(this.root, a.name), { withFileTypes: true }))
        if (v.isDirectory() && !v.name.startsWith('.')) out.push({ app: a.name, name: v.name });
    }
    return out;
  }

  async create(app: string, name: string): Promise<void> {
    await mkdir(this.hostPath(app, name), { recursive: true, mode: 0o755 });
  }

  async remove(app: string, name: string): Promise<void> {
    await rm(this.hostPath(app, name), { recursive: true, force: true });
  }
}
