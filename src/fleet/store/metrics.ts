/**
 * Device metrics as time series, downsampled at ingest: each sample is folded into one bucket per
 * resolution (count, sum, min, max, last), so storage per device and series is bounded by
 * keep / width buckets whatever the sample rate, and no raw samples are kept. Default resolutions:
 * 1-minute buckets for 2 days, 1-hour buckets for 90 days. `prune()` drops buckets past their keep.
 */
import { type Db, tx } from '../../db/database.js';
import { invalidInput } from '../../lib/errors.js';
import { SqlStore } from './sql.js';

export interface Resolution {
  widthMs: number;
  keepMs: number;
}

export const DEFAULT_RESOLUTIONS: readonly Resolution[] = [
  { widthMs: 60_000, keepMs: 2 * 24 * 3600_000 },
  { widthMs: 3600_000, keepMs: 90 * 24 * 3600_000 },
];

/** At most this many series per sample (the rest is dropped), names at most 128 characters. */
export const MAX_SERIES_PER_SAMPLE = 64;
export const MAX_POINTS = 10_000;

export interface MetricSample {
  deviceId: string;
  at: number;
  values: Record<string, number>;
}

export interface Point {
  t: number;
  avg: number;
  min: number;
  max: number;
  last: number;
  count: number;
}

export interface SeriesData {
  series: string;
  resolutionMs: number;
  points: Point[];
}

export interface MetricQuery {
  deviceId: string;
  /** default: every series the device has in the range */
  series?: string[] | undefined;
  from: number;
  to: number;
  /** bucket width; default: the finest resolution that still covers `from` */
  resolutionMs?: number | undefined;
}

/**
 * The numeric series of a metrics sample (pure): nested numbers flattened to dotted names; container
 * figures named after the service they belong to (`service.<app>.<service>.cpuPercent`) when the device's
 * reported state says which, so a series survives an update that replaces the container.
 */
export function metricSeries(
  sample: Record<string, unknown>,
  serviceOf: (containerId: string) => string | undefined = () => undefined,
): Record<string, number> {
  const out: Record<string, number> = {};
  let n = 0;
  const walk = (v: unknown, name: string, depth: number) => {
    if (n >= MAX_SERIES_PER_SAMPLE || depth > 4) return;
    if (typeof v === 'number') {
      if (Number.isFinite(v) && name.length <= 128) {
        out[name] = v;
        n++;
      }
      return;
    }
    if (!v || typeof v !== 'object' || Array.isArray(v)) return;
    for (const [k, x] of Object.entries(v as Record<string, unknown>))
      walk(x, name ? `${name}.${k}` : k, depth + 1);
  };
  for (const [k, v] of Object.entries(sample)) {
    if (k === 'at' || k === 'seq') continue;
    if (k === 'containers' && v && typeof v === 'object' && !Array.isArray(v)) {
      for (const [id, c] of Object.entries(v as Record<string, unknown>)) {
        const svc = serviceOf(id);
        walk(c, svc ? `service.${svc}` : `container.${id.slice(0, 12)}`, 1);
      }
    } else walk(v, k, 0);
  }
  return out;
}

export class MetricStore extends SqlStore {
  constructor(
    db: Db,
    readonly resolutions: readonly Resolution[] = DEFAULT_RESOLUTIONS,
    private readonly now: () => number = Date.now,
  ) {
    super(db);
  }

  /** Fold many samples into their buckets, one transaction. */
  record(batch: readonly MetricSample[]): void {
    if (batch.length === 0) return;
    tx(this.db, () => {
      const up = this.stmt(
        `INSERT INTO metrics (device_id, series, resolution, bucket, count, sum, min, max, last)
         VALUES (@d, @s, @r, @b, 1, @v, @v, @v, @v)
         ON CONFLICT(device_id, series, resolution, bucket) DO UPDATE SET
           count = count + 1, sum = sum + @v, min = MIN(min, @v), max = MAX(max, @v), last = @v`,
      );
      for (const s of batch)
        for (const [series, v] of Object.entries(s.values))
          for (const r of this.resolutions)
            up.run({ d: s.deviceId, s: series, r: r.widthMs, b: s.at - (s.at % r.widthMs), v });
    });
  }

  query(q: MetricQuery): SeriesData[] {
    if (!(q.to > q.from)) throw invalidInput('metrics: "to" must be after "from"');
    const res =
      q.resolutionMs !== undefined
        ? this.resolutions.find((r) => r.widthMs === q.resolutionMs)
        : (this.resolutions.find((r) => q.from >= this.now() - r.keepMs) ??
          this.resolutions[this.resolutions.length - 1]);
    if (!res)
      throw invalidInput(
        `metrics: resolution ${q.resolutionMs} ms: expected one of ${this.resolutions.map((r) => r.widthMs).join(', ')}`,
      );
    if ((q.to - q.from) / res.widthMs > MAX_POINTS)
      throw invalidInput(
        `metrics: more than ${MAX_POINTS} points; ask for a coarser resolution or a shorter range`,
      );
    const series =
      q.series ??
      (
        this.stmt(
          'SELECT DISTINCT series FROM metrics WHERE device_id = ? AND resolution = ? AND bucket >= ? AND bucket < ? ORDER BY series',
        ).all(q.deviceId, res.widthMs, q.from - (q.from % res.widthMs), q.to) as Array<{ series: string }>
      ).map((r) => r.series);
    const sel = this.stmt(
      `SELECT bucket, count, sum, min, max, last FROM metrics
       WHERE device_id = ? AND series = ? AND resolution = ? AND bucket >= ? AND bucket < ? ORDER BY bucket`,
    );
    return series.map((s) => ({
      series: s,
      resolutionMs: res.widthMs,
      points: (
        sel.all(q.deviceId, s, res.widthMs, q.from - (q.from % res.widthMs), q.to) as Array<{
          bucket: number;
          count: number;
          sum: number;
          min: number;
          max: number;
          last: number;
        }>
      ).map((p) => ({
        t: p.bucket,
        avg: p.sum / p.count,
        min: p.min,
        max: p.max,
        last: p.last,
        count: p.count,
      })),
    }));
  }

  /** The series a device has at the finest resolution. */
  seriesOf(deviceId: string): string[] {
    const r = this.resolutions[0];
    if (!r) return [];
    return (
      this.stmt(
        'SELECT DISTINCT series FROM metrics WHERE device_id = ? AND resolution = ? ORDER BY series',
      ).all(deviceId, r.widthMs) as Array<{ series: string }>
    ).map((x) => x.series);
  }

  prune(now: number): number {
    return tx(this.db, () => {
      let n = 0;
      const del = this.stmt('DELETE FROM metrics WHERE resolution = ? AND bucket < ?');
      for (const r of this.resolutions) n += del.run(r.widthMs, now - r.keepMs).changes;
      return n;
    });
  }
}
