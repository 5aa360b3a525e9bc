/**
 * Device events: a bounded history. Appended in batches by the ingest; pruned by age (`maxAgeMs`) and by
 * count per device (`maxPerDevice`, the newest kept) in `prune()`, which the server runs on a timer, so
 * a chatty device cannot push the others' history out and the table never grows without bound.
 * Read newest first, a page at a time (cursor = the last id seen).
 */
import { type Db, tx } from '../../db/database.js';
import { idCursor, type Page, pageLimit, SqlStore } from './sql.js';

export interface EventInput {
  deviceId: string;
  type: string;
  /** the device's time (ms), when it gave one */
  at?: number | undefined;
  receivedAt: number;
  /** the event as received (bounded JSON text) */
  json: string;
}

export interface EventRow {
  id: number;
  deviceId: string;
  type: string;
  at: number;
  receivedAt: number;
  event: Record<string, unknown>;
}

export interface EventQuery {
  deviceId?: string | undefined;
  type?: string | undefined;
  /** only events received at or after this time (ms) */
  since?: number | undefined;
  limit?: number | undefined;
  /** the last id of the previous page */
  cursor?: string | undefined;
}

export interface EventRetention {
  maxAgeMs: number;
  maxPerDevice: number;
}

export const DEFAULT_EVENT_RETENTION: EventRetention = { maxAgeMs: 30 * 24 * 3600_000, maxPerDevice: 1000 };

export class EventStore extends SqlStore {
  /** devices that got events since the last prune: only they can be over their cap */
  private touched = new Set<string>();

  constructor(
    db: Db,
    readonly retention: EventRetention = DEFAULT_EVENT_RETENTION,
  ) {
    super(db);
  }

  /** Append many events in one transaction; returns their ids in order. */
  append(batch: readonly EventInput[]): number[] {
    if (batch.length === 0) return [];
    return tx(this.db, () => {
      const ins = this.stmt(
        'INSERT INTO events (device_id, type, at, received_at, body) VALUES (?, ?, ?, ?, ?)',
      );
      const ids: number[] = [];
      for (const e of batch) {
        ids.push(
          Number(ins.run(e.deviceId, e.type, e.at ?? e.receivedAt, e.receivedAt, e.json).lastInsertRowid),
        );
        this.touched.add(e.deviceId);
      }
      return ids;
    });
  }

  list(q: EventQuery = {}): Page<EventRow> {
    const limit = pageLimit(q.limit);
    const where: string[] = [];
    const params: Record<string, unknown> = {};
    if (q.deviceId !== undefined) {
      where.push('device_id = @device');
      params.device = q.deviceId;
    }
    if (q.type !== undefined) {
      where.push('type = @type');
      params.type = q.type;
    }
    if (q.since !== undefined) {
      where.push('received_at >= @since');
      params.since = q.since;
    }
    const filter = where.length ? `WHERE ${where.join(' AND ')}` : '';
    // counted only per device (at most maxPerDevice rows, indexed): a count of the whole history is not cheap
    const total =
      q.deviceId !== undefined
        ? (this.db.prepare(`SELECT COUNT(*) AS n FROM events ${filter}`).get(params) as { n: number }).n
        : undefined;
    if (q.cursor !== undefined) {
      where.push('id < @cursor');
      params.cursor = idCursor(q.cursor);
    }
    const rows = this.db
      .prepare(
        `SELECT * FROM events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT @limit`,
      )
      .all({ ...params, limit: limit + 1 }) as Array<{
      id: number;
      device_id: string;
      type: string;
      at: number;
      received_at: number;
      body: string;
    }>;
    const more = rows.length > limit;
    const items = rows.slice(0, limit).map((r) => ({
      id: r.id,
      deviceId: r.device_id,
      type: r.type,
      at: r.at,
      receivedAt: r.received_at,
      event: JSON.parse(r.body) as Record<string, unknown>,
    }));
    const last = items[items.length - 1];
    return {
      items,
      ...(total !== undefined ? { total } : {}),
      ...(more && last ? { nextCursor: String(last.id) } : {}),
    };
  }

  /** Drop what is past the retention. Returns how many rows went. */
  prune(now: number): number {
    const touched = [...this.touched];
    this.touched.clear();
    return tx(this.db, () => {
      let n = this.stmt('DELETE FROM events WHERE received_at < ?').run(
        now - this.retention.maxAgeMs,
      ).changes;
      const cap = this.stmt(
        `DELETE FROM events WHERE device_id = @d AND id <= (
           SELECT id FROM events WHERE device_id = @d ORDER BY id DESC LIMIT 1 OFFSET @keep)`,
      );
      for (const d of touched) n += cap.run({ d, keep: this.retention.maxPerDevice }).changes;
      return n;
    });
  }

  /** How many events are kept (of one device, or in all). */
  count(deviceId?: string): number {
    return deviceId === undefined
      ? (this.stmt('SELECT COUNT(*) AS n FROM events').get() as { n: number }).n
      : (this.stmt('SELECT COUNT(*) AS n FROM events WHERE device_id = ?').get(deviceId) as { n: number }).n;
  }
}
