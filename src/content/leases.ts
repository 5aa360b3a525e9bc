import type { Db } from '../db/database.js';
import { processAlive } from '../lib/process.js';
import type { Digest } from '../oci/digest.js';

/**
 * Leases are GC roots for work in flight (an import, a pull): blobs a live lease names are never
 * collected, even before an image record reaches them. A lease that its owner never released (the
 * process was killed) stops protecting anything once that process is gone or the lease expires.
 */
export class Leases {
  constructor(
    private readonly db: Db,
    private readonly now: () => number = Date.now,
  ) {}

  create(id: string, ttlMs = 6 * 3600_000): { id: string; add(d: Digest): void; release(): void } {
    const expires = this.now() + ttlMs;
    const ins = this.db.prepare(
      'INSERT OR IGNORE INTO leases (id, digest, owner_pid, expires_at) VALUES (?, ?, ?, ?)',
    );
    return {
      id,
      add: (d) => {
        ins.run(id, d, process.pid, expires);
      },
      release: () => {
        this.db.prepare('DELETE FROM leases WHERE id = ?').run(id);
      },
    };
  }

  /** Digests held by live leases other than `except`. */
  heldDigests(except?: string): Set<Digest> {
    const rows = this.db
      .prepare('SELECT DISTINCT digest FROM leases WHERE expires_at > ? AND id != ?')
      .all(this.now(), except ?? '') as Array<{ digest: Digest }>;
    return new Set(rows.map((r) => r.digest));
  }

  /** Forget expired leases and those whose owning process has died. */
  prune(): number {
    let n = this.db.prepare('DELETE FROM leases WHERE expires_at <= ?').run(this.now()).changes;
    const owners = this.db
      .prepare('SELECT DISTINCT owner_pid FROM leases WHERE owner_pid IS NOT NULL')
      .all() as Array<{
      owner_pid: number;
    }>;
    for (const { owner_pid } of owners) {
      if (!processAlive(owner_pid)) {
        n += this.db.prepare('DELETE FROM leases WHERE owner_pid = ?').run(owner_pid).changes;
      }
    }
    return n;
  }
}
