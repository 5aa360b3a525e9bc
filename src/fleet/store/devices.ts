/**
 * Devices: identity, platform, agent version, groups (in priority order), labels, presence, enrollment and
 * revocation, and the summary of what each reports (applied target, status, last error), denormalised
 * into indexed columns so a filtered, sorted page is one indexed query at 10,000+ devices.
 *
 * Writes come in batches from the ingest (one transaction per batch, see src/fleet/ingest.ts); reads are
 * pages (keyset cursor: the sort value and id of the last row), never whole tables.
 */
import { tx } from '../../db/database.js';
import { conflict, invalidInput, notFound } from '../../lib/errors.js';
import type { TargetRef, WireReportedState } from '../../transport/reports.js';
import { type DeviceStatus, deviceStatus, lastErrorOf, type Rejection } from '../view.js';
import { type Page, pageLimit, SqlStore } from './sql.js';

export interface DeviceRow {
  id: string;
  online: boolean;
  firstSeen: number | null;
  lastSeen: number | null;
  platform: string | null;
  agentVersion: string | null;
  /** the latest self-update the device reported (docs/self-update.md) */
  agentUpdate: AgentUpdateSummary | null;
  keyId: string | null;
  groups: string[];
  labels: Record<string, string>;
  enrolledAt: number | null;
  revokedAt: number | null;
  /** what the device reports it applies (operator versions) */
  applied: TargetRef | null;
  previous: TargetRef | null;
  targetStatus: string | null;
  /** the agent's reason for its target status (a rollback names the version it left) */
  targetReason: string | null;
  /** why the update does not progress, while it waits */
  waiting: string[];
  status: DeviceStatus;
  lastError: string | null;
  lastErrorAt: number | null;
  rejection: Rejection | null;
  stateAt: number | null;
}

export interface ServiceRow {
  app: string;
  service: string;
  image: string;
  state: string;
  health: string;
  restarts: number;
  containerId: string | null;
  exitCode: number | null;
  lastError: string | null;
  appStatus: string;
}

export interface DeviceDetail extends DeviceRow {
  services: ServiceRow[];
  state: WireReportedState | null;
  info: Record<string, unknown> | null;
}

/** From a device's status message (presence + identity). */
export interface StatusUpdate {
  deviceId: string;
  online: boolean;
  at: number;
  platform?: string | undefined;
  agentVersion?: string | undefined;
  agentUpdate?: AgentUpdateSummary | undefined;
  groups?: string[] | undefined;
  keyId?: string | undefined;
}

/** As the status message carries it. */
export interface AgentUpdateSummary {
  version: string;
  phase: string;
  reason?: string | undefined;
}

export interface StateUpdate {
  deviceId: string;
  state: WireReportedState;
  at: number;
}

export interface InfoUpdate {
  deviceId: string;
  /** the payload as received (already size-checked and parsed once) */
  json: string;
  at: number;
}

export interface RejectionUpdate {
  deviceId: string;
  kind: 'device' | 'group';
  id: string;
  version: number | null;
  reason: string;
  at: number;
}

export const DEVICE_SORTS = [
  'id',
  'lastSeen',
  'status',
  'platform',
  'agentVersion',
  'targetVersion',
  'online',
] as const;
export type DeviceSort = (typeof DEVICE_SORTS)[number];

const SORT_COLUMN: Record<DeviceSort, string> = {
  id: 'd.id',
  lastSeen: 'd.last_seen',
  status: 'd.status',
  platform: 'd.platform',
  agentVersion: 'd.agent_version',
  targetVersion: 'd.target_version',
  online: 'd.online',
};

export interface DeviceQuery {
  online?: boolean | undefined;
  status?: DeviceStatus | undefined;
  group?: string | undefined;
  /** every pair must match */
  labels?: Record<string, string> | undefined;
  /** devices that have the label key, any value */
  labelKeys?: string[] | undefined;
  platform?: string | undefined;
  /** id prefix */
  idPrefix?: string | undefined;
  /** devices whose reported state runs this image */
  image?: string | undefined;
  revoked?: boolean | undefined;
  sort?: DeviceSort | undefined;
  order?: 'asc' | 'desc' | undefined;
  /** 1..500, default 50 */
  limit?: number | undefined;
  /** opaque, from the previous page's nextCursor */
  cursor?: string | undefined;
}

export const MAX_LABELS = 64;
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$/;
const LABEL_VALUE = /^[A-Za-z0-9_.:/@+-]{0,128}$/;

/** Label keys and values are shown, filtered on and put in URLs: a small alphabet, bounded. */
export function checkLabel(key: string, value?: string): void {
  if (!LABEL_KEY.test(key))
    throw invalidInput(
      `label key ${JSON.stringify(key)}: use 1-63 of [A-Za-z0-9_./-], starting with a letter or digit`,
    );
  if (value !== undefined && !LABEL_VALUE.test(value))
    throw invalidInput(`label ${key}: value ${JSON.stringify(value)}: use up to 128 of [A-Za-z0-9_.:/@+-]`);
}

interface Row {
  id: string;
  platform: string | null;
  agent_version: string | null;
  agent_update_json: string | null;
  key_id: string | null;
  online: number;
  first_seen: number | null;
  last_seen: number | null;
  enrolled_at: number | null;
  revoked_at: number | null;
  target_kind: TargetRef['kind'] | null;
  target_id: string | null;
  target_version: number | null;
  target_status: string | null;
  target_reason: string | null;
  waiting_json: string | null;
  previous_kind: TargetRef['kind'] | null;
  previous_id: string | null;
  previous_version: number | null;
  status: DeviceStatus;
  last_error: string | null;
  last_error_at: number | null;
  rejected_kind: 'device' | 'group' | null;
  rejected_id: string | null;
  rejected_version: number | null;
  rejected_at: number | null;
  state_at: number | null;
}

function ref(kind: TargetRef['kind'] | null, id: string | null, version: number | null): TargetRef | null {
  return kind && id !== null && version !== null ? { kind, id, version } : null;
}

/** `summary()`: how many devices have each value, biggest first (key null: not reported). */
export interface DeviceSummaryCounts {
  total: number;
  online: number;
  revoked: number;
  byStatus: Array<{ key: string | null; count: number }>;
  byPlatform: Array<{ key: string | null; count: number }>;
  byAgentVersion: Array<{ key: string | null; count: number }>;
}

export class DeviceStore extends SqlStore {
  // ---- writes from the ingest (batched) ------------------------------------------------------------

  /** Presence and identity of many devices in one transaction. Revoked devices are ignored. */
  applyStatus(batch: readonly StatusUpdate[]): void {
    if (batch.length === 0) return;
    tx(this.db, () => {
      const up = this.stmt(
        `INSERT INTO devices (id, online, first_seen, last_seen, platform, agent_version, agent_update_json, key_id)
         VALUES (@id, @online, @at, @at, @platform, @agentVersion, @agentUpdate, @keyId)
         ON CONFLICT(id) DO UPDATE SET online = @online, last_seen = MAX(COALESCE(last_seen, 0), @at),
           first_seen = COALESCE(first_seen, @at),
           platform = COALESCE(@platform, platform), agent_version = COALESCE(@agentVersion, agent_version),
           agent_update_json = COALESCE(@agentUpdate, agent_update_json),
           key_id = COALESCE(@keyId, key_id)
         WHERE revoked_at IS NULL`,
      );
      for (const s of batch) {
        const r = up.run({
          id: s.deviceId,
          online: s.online ? 1 : 0,
          at: s.at,
          platform: s.platform ?? null,
          agentVersion: s.agentVersion ?? null,
          agentUpdate: s.agentUpdate ? JSON.stringify(s.agentUpdate) : null,
          keyId: s.keyId ?? null,
        });
        if (r.changes > 0 && s.groups) this.writeGroups(s.deviceId, s.groups);
      }
    });
  }

  private writeGroups(deviceId: string, groups: readonly string[]): void {
    const current = (
      this.stmt('SELECT grp FROM device_groups WHERE device_id = ? ORDER BY position').all(
        deviceId,
      ) as Array<{
        grp: string;
      }>
    ).map((r) => r.grp);
    if (current.length === groups.length && current.every((g, i) => g === groups[i])) return;
    this.stmt('DELETE FROM device_groups WHERE device_id = ?').run(deviceId);
    const ins = this.stmt('INSERT OR IGNORE INTO device_groups (device_id, grp, position) VALUES (?, ?, ?)');
    for (const [i, g] of groups.entries()) ins.run(deviceId, g, i);
  }

  /** Anything a device sends shows it alive: last seen moves forward (known, unrevoked devices only). */
  touch(deviceIds: Iterable<string>, at: number): void {
    const up = this.stmt(
      'UPDATE devices SET last_seen = MAX(COALESCE(last_seen, 0), ?) WHERE id = ? AND revoked_at IS NULL',
    );
    tx(this.db, () => {
      for (const id of deviceIds) up.run(at, id);
    });
  }

  /** Reported states of many devices in one transaction: the JSON, the per-service rows, the summary. */
  applyState(batch: readonly StateUpdate[]): void {
    if (batch.length === 0) return;
    tx(this.db, () => {
      const known = this.stmt(
        'SELECT revoked_at, rejected_kind, rejected_id, rejected_version, rejected_at FROM devices WHERE id = ?',
      );
      const ensure = this.stmt(
        'INSERT INTO devices (id, first_seen, last_seen) VALUES (?, ?, ?) ON CONFLICT(id) DO NOTHING',
      );
      const putState = this.stmt(
        `INSERT INTO device_state (device_id, state_json, received_at) VALUES (?, ?, ?)
         ON CONFLICT(device_id) DO UPDATE SET state_json = excluded.state_json, received_at = excluded.received_at`,
      );
      const delSvc = this.stmt('DELETE FROM device_services WHERE device_id = ?');
      const insSvc = this.stmt(
        `INSERT INTO device_services (device_id, app, service, image, state, health, restarts, container_id,
           exit_code, last_error, app_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      const summary = this.stmt(
        `UPDATE devices SET target_kind = @tk, target_id = @ti, target_version = @tv, target_status = @ts,
           target_reason = @tr, waiting_json = @tw,
           previous_kind = @pk, previous_id = @pi, previous_version = @pv, status = @status,
           last_error = COALESCE(@err, CASE WHEN @clearErr THEN NULL ELSE last_error END),
           last_error_at = CASE WHEN @err IS NOT NULL THEN @at WHEN @clearErr THEN NULL ELSE last_error_at END,
           rejected_kind = CASE WHEN @clearRej THEN NULL ELSE rejected_kind END,
           rejected_id = CASE WHEN @clearRej THEN NULL ELSE rejected_id END,
           rejected_version = CASE WHEN @clearRej THEN NULL ELSE rejected_version END,
           rejected_at = CASE WHEN @clearRej THEN NULL ELSE rejected_at END,
           state_at = @at
         WHERE id = @id`,
      );
      for (const u of batch) {
        const row = known.get(u.deviceId) as
          | Pick<Row, 'revoked_at' | 'rejected_kind' | 'rejected_id' | 'rejected_version' | 'rejected_at'>
          | undefined;
        if (row?.revoked_at) continue;
        if (!row) ensure.run(u.deviceId, u.at, u.at);
        putState.run(u.deviceId, JSON.stringify(u.state), u.at);
        delSvc.run(u.deviceId);
        for (const [app, a] of Object.entries(u.state.apps))
          for (const [service, s] of Object.entries(a.services))
            insSvc.run(
              u.deviceId,
              app,
              service,
              s.image,
              s.state,
              s.health,
              s.restarts,
              s.containerId ?? null,
              s.exitCode ?? null,
              s.lastError ?? null,
              a.status,
            );
        const t = u.state.target;
        // A rejection stands until the device applies that scope at that version or later.
        const rej = row?.rejected_kind
          ? {
              kind: row.rejected_kind,
              id: row.rejected_id!,
              version: row.rejected_version,
              at: row.rejected_at!,
            }
          : undefined;
        const clearRej =
          rej !== undefined &&
          t.applied !== null &&
          t.applied.kind === rej.kind &&
          t.applied.id === rej.id &&
          t.applied.version >= (rej.version ?? 0);
        const err = lastErrorOf(u.state);
        const status = deviceStatus(u.state, clearRej ? undefined : rej);
        summary.run({
          id: u.deviceId,
          tk: t.applied?.kind ?? null,
          ti: t.applied?.id ?? null,
          tv: t.applied?.version ?? null,
          ts: t.status,
          tr: t.reason ?? null,
          tw: t.waiting?.length ? JSON.stringify(t.waiting) : null,
          pk: t.previous?.kind ?? null,
          pi: t.previous?.id ?? null,
          pv: t.previous?.version ?? null,
          status,
          err: err ?? null,
          clearErr: status === 'converged' && !err ? 1 : 0,
          clearRej: clearRej ? 1 : 0,
          at: u.at,
        });
      }
    });
  }

  applyInfo(batch: readonly InfoUpdate[]): void {
    if (batch.length === 0) return;
    tx(this.db, () => {
      const put = this.stmt(
        `INSERT INTO device_info (device_id, info_json, received_at)
         SELECT @id, @json, @at WHERE EXISTS (SELECT 1 FROM devices WHERE id = @id AND revoked_at IS NULL)
         ON CONFLICT(device_id) DO UPDATE SET info_json = excluded.info_json, received_at = excluded.received_at`,
      );
      for (const u of batch) put.run({ id: u.deviceId, json: u.json, at: u.at });
    });
  }

  /** The device refused a target (it said so in an event): shown as `rejected` until it applies that scope again. */
  applyRejections(batch: readonly RejectionUpdate[]): void {
    if (batch.length === 0) return;
    tx(this.db, () => {
      const up = this.stmt(
        `UPDATE devices SET rejected_kind = @kind, rejected_id = @sid, rejected_version = @version,
           rejected_at = @at, status = 'rejected', last_error = @reason, last_error_at = @at
         WHERE id = @id AND revoked_at IS NULL`,
      );
      for (const r of batch)
        up.run({ id: r.deviceId, kind: r.kind, sid: r.id, version: r.version, at: r.at, reason: r.reason });
    });
  }

  // ---- operator changes --------------------------------------------------------------------------

  /** A device enrolled: it exists from now on (groups and labels from its enrollment token). */
  enroll(
    deviceId: string,
    o: { groups: readonly string[]; labels: Record<string, string>; at: number },
  ): void {
    tx(this.db, () => {
      const row = this.stmt('SELECT revoked_at FROM devices WHERE id = ?').get(deviceId) as
        | { revoked_at: number | null }
        | undefined;
      if (row?.revoked_at)
        throw conflict(`device ${deviceId} was revoked; it cannot enroll again under that id`);
      this.stmt(
        `INSERT INTO devices (id, enrolled_at) VALUES (?, ?)
         ON CONFLICT(id) DO UPDATE SET enrolled_at = excluded.enrolled_at`,
      ).run(deviceId, o.at);
      if (o.groups.length > 0) this.writeGroups(deviceId, o.groups);
      const ins = this.stmt(
        'INSERT INTO device_labels (device_id, key, value) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET value = excluded.value',
      );
      for (const [k, v] of Object.entries(o.labels)) ins.run(deviceId, k, v);
    });
  }

  /** Undo `enroll` of a device that never existed before it (a failed enrollment leaves no row). */
  forget(deviceId: string): void {
    this.stmt('DELETE FROM devices WHERE id = ? AND first_seen IS NULL AND revoked_at IS NULL').run(deviceId);
  }

  setLabels(
    deviceId: string,
    set: Record<string, string>,
    remove: readonly string[] = [],
  ): Record<string, string> {
    for (const [k, v] of Object.entries(set)) checkLabel(k, v);
    for (const k of remove) checkLabel(k);
    return tx(this.db, () => {
      if (!this.stmt('SELECT 1 FROM devices WHERE id = ?').get(deviceId))
        throw notFound(`no device ${deviceId} in the fleet`);
      const del = this.stmt('DELETE FROM device_labels WHERE device_id = ? AND key = ?');
      for (const k of remove) del.run(deviceId, k);
      const ins = this.stmt(
        'INSERT INTO device_labels (device_id, key, value) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET value = excluded.value',
      );
      for (const [k, v] of Object.entries(set)) ins.run(deviceId, k, v);
      const labels = this.labelsOf(deviceId);
      if (Object.keys(labels).length > MAX_LABELS)
        throw invalidInput(`device ${deviceId}: at most ${MAX_LABELS} labels`);
      return labels;
    });
  }

  markRevoked(deviceId: string, at: number): void {
    tx(this.db, () => {
      const r = this.stmt(
        'UPDATE devices SET revoked_at = COALESCE(revoked_at, ?), online = 0 WHERE id = ?',
      ).run(at, deviceId);
      if (r.changes === 0) throw notFound(`no device ${deviceId} in the fleet`);
    });
  }

  // ---- reads ----------------------------------------------------------------------------------------

  exists(deviceId: string): boolean {
    return this.stmt('SELECT 1 FROM devices WHERE id = ?').get(deviceId) !== undefined;
  }

  get(deviceId: string): DeviceRow | undefined {
    const r = this.stmt('SELECT * FROM devices WHERE id = ?').get(deviceId) as Row | undefined;
    return r ? this.toRow(r, this.groupsOf(deviceId), this.labelsOf(deviceId)) : undefined;
  }

  detail(deviceId: string): DeviceDetail | undefined {
    const row = this.get(deviceId);
    if (!row) return undefined;
    const services = (
      this.stmt('SELECT * FROM device_services WHERE device_id = ? ORDER BY app, service').all(
        deviceId,
      ) as Array<Record<string, unknown>>
    ).map(
      (s): ServiceRow => ({
        app: s.app as string,
        service: s.service as string,
        image: s.image as string,
        state: s.state as string,
        health: s.health as string,
        restarts: s.restarts as number,
        containerId: (s.container_id as string | null) ?? null,
        exitCode: (s.exit_code as number | null) ?? null,
        lastError: (s.last_error as string | null) ?? null,
        appStatus: s.app_status as string,
      }),
    );
    const st = this.stmt('SELECT state_json FROM device_state WHERE device_id = ?').get(deviceId) as
      | { state_json: string }
      | undefined;
    const info = this.stmt('SELECT info_json FROM device_info WHERE device_id = ?').get(deviceId) as
      | { info_json: string }
      | undefined;
    return {
      ...row,
      services,
      state: st ? (JSON.parse(st.state_json) as WireReportedState) : null,
      info: info ? (JSON.parse(info.info_json) as Record<string, unknown>) : null,
    };
  }

  groupsOf(deviceId: string): string[] {
    return (
      this.stmt('SELECT grp FROM device_groups WHERE device_id = ? ORDER BY position').all(
        deviceId,
      ) as Array<{
        grp: string;
      }>
    ).map((r) => r.grp);
  }

  labelsOf(deviceId: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const r of this.stmt('SELECT key, value FROM device_labels WHERE device_id = ? ORDER BY key').all(
      deviceId,
    ) as Array<{ key: string; value: string }>)
      out[r.key] = r.value;
    return out;
  }

  /** `app.service` of a container the device reported (metrics name their series after it). */
  serviceOfContainer(deviceId: string, containerId: string): string | undefined {
    const r = this.stmt(
      'SELECT app, service FROM device_services WHERE device_id = ? AND container_id = ?',
    ).get(deviceId, containerId) as { app: string; service: string } | undefined;
    return r ? `${r.app}.${r.service}` : undefined;
  }

  /** Ids of the devices that follow `group` (any position), not revoked. */
  inGroup(group: string): string[] {
    return (
      this.stmt(
        `SELECT g.device_id FROM device_groups g JOIN devices d ON d.id = g.device_id
         WHERE g.grp = ? AND d.revoked_at IS NULL ORDER BY g.device_id`,
      ).all(group) as Array<{ device_id: string }>
    ).map((r) => r.device_id);
  }

  /** The rows of these devices (any number; read 500 at a time), in the order given, unknown ids left out. */
  rows(ids: readonly string[]): DeviceRow[] {
    const out = new Map<string, DeviceRow>();
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      const rows = this.db
        .prepare(`SELECT * FROM devices WHERE id IN (${chunk.map(() => '?').join(',')})`)
        .all(...chunk) as Row[];
      for (const r of this.withGroupsAndLabels(rows)) out.set(r.id, r);
    }
    return ids.flatMap((id) => out.get(id) ?? []);
  }

  /**
   * Counts for an overview of the fleet (revoked devices apart): by presence, status, platform and agent
   * version. One scan of the table per grouping; the biggest groups first, `top` of each at most.
   */
  summary(top = 20): DeviceSummaryCounts {
    const live = 'FROM devices WHERE revoked_at IS NULL';
    const grouped = (col: string) =>
      (
        this.stmt(`SELECT ${col} AS k, COUNT(*) AS n ${live} GROUP BY ${col} ORDER BY n DESC, k LIMIT ?`).all(
          top,
        ) as Array<{ k: string | number | null; n: number }>
      ).map((r) => ({ key: r.k === null ? null : String(r.k), count: r.n }));
    const online = grouped('online');
    const count = (k: string) => online.find((r) => r.key === k)?.count ?? 0;
    return {
      total: count('0') + count('1'),
      online: count('1'),
      revoked: (
        this.stmt('SELECT COUNT(*) AS n FROM devices WHERE revoked_at IS NOT NULL').get() as { n: number }
      ).n,
      byStatus: grouped('status'),
      byPlatform: grouped('platform'),
      byAgentVersion: grouped('agent_version'),
    };
  }

  /** One page of devices: filtered, sorted and paged in SQL (keyset cursor on the sort value + id). */
  list(q: DeviceQuery = {}): Page<DeviceRow> {
    const limit = pageLimit(q.limit);
    const sort = q.sort ?? 'id';
    if (!(DEVICE_SORTS as readonly string[]).includes(sort))
      throw invalidInput(`sort ${JSON.stringify(sort)}: expected one of ${DEVICE_SORTS.join(', ')}`);
    const desc = q.order === 'desc';
    const where: string[] = [];
    const params: Record<string, unknown> = {};
    if (q.online !== undefined) {
      where.push('d.online = @online');
      params.online = q.online ? 1 : 0;
    }
    if (q.status !== undefined) {
      where.push('d.status = @status');
      params.status = q.status;
    }
    if (q.platform !== undefined) {
      where.push('d.platform = @platform');
      params.platform = q.platform;
    }
    if (q.revoked !== undefined) where.push(q.revoked ? 'd.revoked_at IS NOT NULL' : 'd.revoked_at IS NULL');
    if (q.idPrefix) {
      // a range on the primary key, not LIKE: uses the index and needs no escaping
      where.push('d.id >= @pfx AND d.id < @pfxEnd');
      params.pfx = q.idPrefix;
      params.pfxEnd = `${q.idPrefix}\u{10FFFF}`;
    }
    if (q.group !== undefined) {
      where.push('d.id IN (SELECT device_id FROM device_groups WHERE grp = @group)');
      params.group = q.group;
    }
    if (q.image !== undefined) {
      where.push('d.id IN (SELECT device_id FROM device_services WHERE image = @image)');
      params.image = q.image;
    }
    Object.entries(q.labels ?? {}).forEach(([k, v], i) => {
      checkLabel(k, v);
      where.push(`d.id IN (SELECT device_id FROM device_labels WHERE key = @lk${i} AND value = @lv${i})`);
      params[`lk${i}`] = k;
      params[`lv${i}`] = v;
    });
    (q.labelKeys ?? []).forEach((k, i) => {
      checkLabel(k);
      where.push(`d.id IN (SELECT device_id FROM device_labels WHERE key = @lh${i})`);
      params[`lh${i}`] = k;
    });
    const filter = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const total = (
      this.db.prepare(`SELECT COUNT(*) AS n FROM devices d ${filter}`).get(params) as { n: number }
    ).n;

    const col = SORT_COLUMN[sort];
    const pageWhere = [...where];
    const dir = desc ? 'DESC' : 'ASC';
    const cmp = desc ? '<' : '>';
    if (q.cursor !== undefined) {
      const c = decodeCursor(q.cursor);
      params.cv = c.v;
      params.cid = c.id;
      // NULLs come last in either direction; (col IS NULL, col, id) is a total order the cursor seeks in
      if (sort === 'id') pageWhere.push(`d.id ${cmp} @cid`);
      else if (c.v === null) pageWhere.push(`(${col} IS NULL AND d.id ${cmp} @cid)`);
      else pageWhere.push(`(${col} IS NULL OR ${col} ${cmp} @cv OR (${col} = @cv AND d.id ${cmp} @cid))`);
    }
    const order = sort === 'id' ? `d.id ${dir}` : `${col} IS NULL, ${col} ${dir}, d.id ${dir}`;
    const rows = this.db
      .prepare(
        `SELECT d.* FROM devices d ${pageWhere.length ? `WHERE ${pageWhere.join(' AND ')}` : ''}
         ORDER BY ${order} LIMIT @limit`,
      )
      .all({ ...params, limit: limit + 1 }) as Row[];
    const more = rows.length > limit;
    const pageRows = rows.slice(0, limit);
    const items = this.withGroupsAndLabels(pageRows);
    const last = pageRows[pageRows.length - 1];
    return {
      items,
      total,
      ...(more && last ? { nextCursor: encodeCursor(sortValue(last, sort), last.id) } : {}),
    };
  }

  /** Groups and labels of a page of rows: two queries for the page, not two per row. */
  private withGroupsAndLabels(rows: Row[]): DeviceRow[] {
    if (rows.length === 0) return [];
    const ids = rows.map((r) => r.id);
    const marks = ids.map(() => '?').join(',');
    const groups = new Map<string, string[]>();
    for (const g of this.db
      .prepare(
        `SELECT device_id, grp FROM device_groups WHERE device_id IN (${marks}) ORDER BY device_id, position`,
      )
      .all(...ids) as Array<{ device_id: string; grp: string }>) {
      const list = groups.get(g.device_id) ?? [];
      list.push(g.grp);
      groups.set(g.device_id, list);
    }
    const labels = new Map<string, Record<string, string>>();
    for (const l of this.db
      .prepare(`SELECT device_id, key, value FROM device_labels WHERE device_id IN (${marks}) ORDER BY key`)
      .all(...ids) as Array<{ device_id: string; key: string; value: string }>) {
      const o = labels.get(l.device_id) ?? {};
      o[l.key] = l.value;
      labels.set(l.device_id, o);
    }
    return rows.map((r) => this.toRow(r, groups.get(r.id) ?? [], labels.get(r.id) ?? {}));
  }

  private toRow(r: Row, groups: string[], labels: Record<string, string>): DeviceRow {
    return {
      id: r.id,
      online: r.online === 1,
      firstSeen: r.first_seen,
      lastSeen: r.last_seen,
      platform: r.platform,
      agentVersion: r.agent_version,
      agentUpdate: r.agent_update_json ? (JSON.parse(r.agent_update_json) as AgentUpdateSummary) : null,
      keyId: r.key_id,
      groups,
      labels,
      enrolledAt: r.enrolled_at,
      revokedAt: r.revoked_at,
      applied: ref(r.target_kind, r.target_id, r.target_version),
      previous: ref(r.previous_kind, r.previous_id, r.previous_version),
      targetStatus: r.target_status,
      targetReason: r.target_reason,
      waiting: r.waiting_json ? (JSON.parse(r.waiting_json) as string[]) : [],
      status: r.status,
      lastError: r.last_error,
      lastErrorAt: r.last_error_at,
      rejection: r.rejected_kind
        ? { kind: r.rejected_kind, id: r.rejected_id!, version: r.rejected_version, at: r.rejected_at! }
        : null,
      stateAt: r.state_at,
    };
  }
}

function sortValue(r: Row, sort: DeviceSort): string | number | null {
  switch (sort) {
    case 'id':
      return r.id;
    case 'lastSeen':
      return r.last_seen;
    case 'status':
      return r.status;
    case 'platform':
      return r.platform;
    case 'agentVersion':
      return r.agent_version;
    case 'targetVersion':
      return r.target_version;
    case 'online':
      return r.online;
  }
}

function encodeCursor(v: string | number | null, id: string): string {
  return Buffer.from(JSON.stringify([v, id])).toString('base64url');
}

function decodeCursor(s: string): { v: string | number | null; id: string } {
  try {
    if (s.length > 1024) throw new Error('too long');
    const a = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as unknown;
    if (
      Array.isArray(a) &&
      a.length === 2 &&
      typeof a[1] === 'string' &&
      (a[0] === null || typeof a[0] === 'string' || typeof a[0] === 'number')
    )
      return { v: a[0], id: a[1] };
  } catch {
    // fall through
  }
  throw invalidInput('cursor: not a cursor this server gave out');
}
