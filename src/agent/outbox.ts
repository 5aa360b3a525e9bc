/**
 * The outbox: events and metrics wait here (SQLite) until the broker is reachable, then go out in order.
 *
 * - Flash: enqueue() only appends to memory; rows reach SQLite in one transaction per `batchSize` entries
 *   or `batchMs`, whichever comes first (and on close). The price: a power cut loses at most one batch
 *   window of events. Set batchSize 1 for strict durability.
 * - Cap: at most `maxBytes` of payload and nothing older than `maxAgeMs`; beyond that the OLDEST entries
 *   are dropped (and counted in stats.dropped). Below the cap nothing is lost.
 * - Order: drain() publishes in sequence order and deletes what the transport acknowledged; it stops at the
 *   first failure, so a later entry never overtakes an earlier one.
 */
import type { Statement } from 'better-sqlite3';
import type { Db } from '../db/database.js';
import { tx } from '../db/database.js';
import type { Channel, Clock, TimerHandle, Transport } from './ports.js';

export interface OutboxOptions {
  db: Db;
  clock: Clock;
  maxBytes?: number;
  maxAgeMs?: number;
  batchSize?: number;
  batchMs?: number;
}

export interface OutboxEntry {
  seq: number;
  channel: Channel;
  payload: unknown;
  createdAt: number;
}

export class Outbox {
  private buffer: Array<{ channel: Channel; json: string; at: number }> = [];
  private timer: TimerHandle | undefined;
  private totalBytes: number;
  private draining: Promise<number> | undefined;
  readonly stats = { writes: 0, dropped: 0, sent: 0 };
  private readonly maxBytes: number;
  private readonly maxAgeMs: number;
  private readonly batchSize: number;
  private readonly batchMs: number;

  private stmts = new Map<string, Statement>();

  private stmt(sql: string): Statement {
    let st = this.stmts.get(sql);
    if (!st) {
      st = this.o.db.prepare(sql);
      this.stmts.set(sql, st);
    }
    return st;
  }

  constructor(private readonly o: OutboxOptions) {
    this.maxBytes = o.maxBytes ?? 8 * 1024 * 1024;
    this.maxAgeMs = o.maxAgeMs ?? 7 * 24 * 3600_000;
    this.batchSize = o.batchSize ?? 64;
    this.batchMs = o.batchMs ?? 2000;
    this.totalBytes = (this.stmt('SELECT COALESCE(SUM(bytes), 0) AS n FROM outbox').get() as { n: number }).n;
  }

  enqueue(channel: Channel, payload: Record<string, unknown>): void {
    this.buffer.push({ channel, json: JSON.stringify(payload), at: this.o.clock.now() });
    if (this.buffer.length >= this.batchSize) this.persist();
    else if (!this.timer) this.timer = this.o.clock.setTimeout(() => this.persist(), this.batchMs);
  }

  /** Write the buffer in one transaction and enforce the cap. */
  persist(): void {
    if (this.timer) this.o.clock.clearTimeout(this.timer);
    this.timer = undefined;
    const rows = this.buffer;
    this.buffer = [];
    const now = this.o.clock.now();
    const { db } = this.o;
    tx(db, () => {
      if (rows.length > 0) {
        const ins = this.stmt('INSERT INTO outbox (channel, payload, bytes, created_at) VALUES (?, ?, ?, ?)');
        for (const r of rows) {
          const bytes = Buffer.byteLength(r.json);
          ins.run(r.channel, r.json, bytes, r.at);
          this.totalBytes += bytes;
        }
      }
      this.enforceCap(now);
    });
    if (rows.length > 0) this.stats.writes++;
  }

  private enforceCap(now: number) {
    const old = this.stmt(
      'SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM outbox WHERE created_at < ?',
    ).get(now - this.maxAgeMs) as { n: number; b: number };
    if (old.n > 0) {
      this.stmt('DELETE FROM outbox WHERE created_at < ?').run(now - this.maxAgeMs);
      this.totalBytes -= old.b;
      this.stats.dropped += old.n;
    }
    if (this.totalBytes <= this.maxBytes) return;
    const page = this.stmt('SELECT seq, bytes FROM outbox WHERE seq > ? ORDER BY seq LIMIT 256');
    let excess = this.totalBytes - this.maxBytes;
    let lastSeq = -1;
    let n = 0;
    let freed = 0;
    while (excess > 0) {
      const rows = page.all(lastSeq) as Array<{ seq: number; bytes: number }>;
      if (rows.length === 0) break;
      for (const r of rows) {
        if (excess <= 0) break;
        lastSeq = r.seq;
        excess -= r.bytes;
        freed += r.bytes;
        n++;
      }
    }
    this.stmt('DELETE FROM outbox WHERE seq <= ?').run(lastSeq);
    this.totalBytes -= freed;
    this.stats.dropped += n;
  }

  /** Entries waiting (persisted and buffered). */
  size(): { count: number; bytes: number } {
    const c = (this.stmt('SELECT COUNT(*) AS n FROM outbox').get() as { n: number }).n;
    return {
      count: c + this.buffer.length,
      bytes: this.totalBytes + this.buffer.reduce((n, r) => n + r.json.length, 0),
    };
  }

  peek(limit = 100): OutboxEntry[] {
    return (
      this.stmt('SELECT seq, channel, payload, created_at FROM outbox ORDER BY seq LIMIT ?').all(
        limit,
      ) as Array<{
        seq: number;
        channel: Channel;
        payload: string;
        created_at: number;
      }>
    ).map((r) => ({
      seq: r.seq,
      channel: r.channel,
      payload: JSON.parse(r.payload),
      createdAt: r.created_at,
    }));
  }

  /**
   * Publish everything in order while the transport takes it. Acknowledged entries are deleted a page at
   * a time (one transaction per page). Single-flight. Returns how many were sent.
   */
  drain(transport: Transport, pageSize = 100): Promise<number> {
    if (this.draining) return this.draining;
    this.draining = this.drainInner(transport, pageSize).finally(() => {
      this.draining = undefined;
    });
    return this.draining;
  }

  private async drainInner(transport: Transport, pageSize: number): Promise<number> {
    this.persist();
    const { db } = this.o;
    let sent = 0;
    for (;;) {
      if (!transport.online) return sent;
      const rows = this.peek(pageSize);
      if (rows.length === 0) return sent;
      let acked = -1;
      let failure: unknown;
      for (const r of rows) {
        try {
          await transport.publish(r.channel, { ...(r.payload as object), seq: r.seq }, { retain: false });
          acked = r.seq;
        } catch (err) {
          failure = err;
          break;
        }
      }
      if (acked >= 0) {
        tx(db, () => {
          const b = this.stmt(
            'SELECT COALESCE(SUM(bytes), 0) AS b, COUNT(*) AS n FROM outbox WHERE seq <= ?',
          ).get(acked) as {
            b: number;
            n: number;
          };
          this.stmt('DELETE FROM outbox WHERE seq <= ?').run(acked);
          this.totalBytes -= b.b;
          sent += b.n;
          this.stats.sent += b.n;
        });
      }
      if (failure !== undefined) return sent;
    }
  }

  close(): void {
    this.persist();
  }
}
