/**
 * The local event log behind `berth events`: what happened to containers and images on this state dir,
 * as docker's events are — create, start, die (exit code), oom, kill (signal), stop, restart, destroy;
 * image import and delete. Written by whoever does the thing (the CLI on the state dir, or the agent), so
 * the log is the same with or without an agent. Capped: the oldest go past MAX_EVENTS or MAX_AGE_MS.
 */
import type { Statement } from 'better-sqlite3';
import type { Db } from '../db/database.js';

export type EventType = 'container' | 'image';

export interface BerthEvent {
  seq: number;
  /** ms since the epoch */
  time: number;
  type: EventType;
  action: string;
  id: string;
  name: string;
  attributes: Record<string, string | number | boolean>;
}

/** `berth events`: the stored events in [since, until] (ms), then, with `follow`, new ones as they come. */
export interface EventStreamOptions {
  since?: number | undefined;
  until?: number | undefined;
  follow: boolean;
  signal?: AbortSignal;
}

export const MAX_EVENTS = 10_000;
export const MAX_AGE_MS = 7 * 24 * 3600_000;
const PRUNE_EVERY = 100;

interface Row {
  seq: number;
  at: number;
  type: EventType;
  action: string;
  actor_id: string;
  actor_name: string;
  attributes: string;
}

const toEvent = (r: Row): BerthEvent => ({
  seq: r.seq,
  time: r.at,
  type: r.type,
  action: r.action,
  id: r.actor_id,
  name: r.actor_name,
  attributes: JSON.parse(r.attributes) as BerthEvent['attributes'],
});

export class EventLog {
  private insert: Statement | undefined;
  private sinceInsert = 0;

  constructor(
    private readonly db: Db,
    private readonly now: () => number = Date.now,
  ) {}

  record(
    type: EventType,
    action: string,
    actor: { id: string; name: string },
    attributes: BerthEvent['attributes'] = {},
    at = this.now(),
  ): void {
    this.insert ??= this.db.prepare(
      'INSERT INTO local_events (at, type, action, actor_id, actor_name, attributes) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.insert.run(at, type, action, actor.id, actor.name, JSON.stringify(attributes));
    if (++this.sinceInsert >= PRUNE_EVERY) {
      this.sinceInsert = 0;
      this.prune();
    }
  }

  /** Drop events older than MAX_AGE_MS and all but the newest MAX_EVENTS. */
  prune(): void {
    this.db.prepare('DELETE FROM local_events WHERE at < ?').run(this.now() - MAX_AGE_MS);
    this.db
      .prepare('DELETE FROM local_events WHERE seq <= (SELECT MAX(seq) FROM local_events) - ?')
      .run(MAX_EVENTS);
  }

  /** Events in order: after `afterSeq`, with time in [since, until]. */
  list(opts: { afterSeq?: number; since?: number; until?: number; limit?: number } = {}): BerthEvent[] {
    const rows = this.db
      .prepare(`SELECT * FROM local_events WHERE seq > ? AND at >= ? AND at <= ? ORDER BY seq LIMIT ?`)
      .all(
        opts.afterSeq ?? 0,
        opts.since ?? 0,
        opts.until ?? Number.MAX_SAFE_INTEGER,
        opts.limit ?? MAX_EVENTS,
      ) as Row[];
    return rows.map(toEvent);
  }

  /** The newest sequence number (0 when empty): where a live stream starts. */
  lastSeq(): number {
    const r = this.db.prepare('SELECT MAX(seq) AS s FROM local_events').get() as { s: number | null };
    return r.s ?? 0;
  }
}
