/**
 * App networks. The runtime has one bridge (config network.bridge) with its own IPAM and firewall, so an
 * app network is a record here (a directory per app/network under <state-dir>/networks) and every
 * bridge-mode service joins the one bridge. Isolation between app networks is not enforced yet; the
 * records keep the planner's view (create/remove steps converge) honest until the runtime has several.
 */
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import type { AppResource } from '../../core/state.js';
import { assertSafeName } from '../../lib/ids.js';
import type { NetworkService } from '../ports.js';

export class RecordedNetworks implements NetworkService {
  constructor(private readonly root: string) {}

  private dir(app: string, name: string): string {
    return path.join(this.root, assertSafeName('app name', app), assertSafeName('network name', name));
  }

  async list(): Promise<AppResource[]> {
    const out: AppResource[] = [];
    for (const a of await readdir(this.root, { withFileTypes: true }).catch(() => [])) {
      if (!a.isDirectory()) continue;
      for (const n of await readdir(path.join(this.root, a.name), { withFileTypes: true }))
        if (n.isDirectory()) out.push({ app: a.name, name: n.name });
    }
    return out;
  }

  async create(
    app: string,
    name: string,
    opts: { internal: boolean; labels: Record<string, string> },
  ): Promise<void> {
    const d = this.dir(app, name);
    await mkdir(d, { recursive: true });
    await writeFile(path.join(d, 'network.json'), JSON.stringify(opts));
  }

  async remove(app: string, name: string): Promise<void> {
    await rm(this.dir(app, name), { recursive: true, force: true });
  }
}
