/**
 * A time-series chart (uPlot, canvas). Loaded on demand (dynamic import): the first page does not pay for
 * it. Styles go through uPlot's stylesheet (bundled) and the CSSOM, never inline attributes, so the strict
 * CSP holds.
 */
import { useEffect, useRef } from 'preact/hooks';

export interface ChartSeries {
  label: string;
  /** one value per x (null: no sample) */
  values: Array<number | null>;
}

const COLORS = ['#1d4f91', '#c2410c', '#15803d', '#7c3aed', '#b91c1c', '#0e7490', '#a16207', '#4b5563'];

export function Chart({
  title,
  x,
  series,
  format,
  range,
  floor,
}: {
  title: string;
  /** the time range shown (seconds since the epoch) */
  range: [number, number];
  /** seconds since the epoch */
  x: number[];
  series: ChartSeries[];
  format: (v: number) => string;
  /** the y axis reaches at least this (100 for a percentage) */
  floor?: number;
}) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    let plot: { destroy(): void; setSize(s: { width: number; height: number }): void } | undefined;
    let gone = false;
    const el = box.current;
    if (!el) return;
    import('uplot').then(({ default: UPlot }) => {
      if (gone) return;
      const width = Math.max(280, el.clientWidth);
      plot = new UPlot(
        {
          title,
          width,
          height: 180,
          series: [
            {},
            ...series.map((s, i) => ({
              label: s.label,
              stroke: COLORS[i % COLORS.length]!,
              width: 1.5,
              // series are sampled at their own times: join a series' points across the others' times
              spanGaps: true,
              points: { show: true, size: 4 },
              value: (_u: unknown, v: number | null) => (v === null ? '—' : format(v)),
            })),
          ],
          axes: [{}, { values: (_u: unknown, ticks: number[]) => ticks.map(format), size: 70 }],
          // labels only: live values read "--" until the pointer is over the chart
          legend: { live: false },
          scales: {
            x: { time: true, range: () => range },
            // from zero (a lone sample is not a flat line in the middle of nowhere), at least `floor` high
            y: {
              range: (_u: unknown, _min: number, max: number) => [0, Math.max(floor ?? 0, max * 1.1, 1)],
            },
          },
        },
        [x, ...series.map((s) => s.values)] as unknown as [number[], ...number[][]],
        el,
      );
    });
    const ro = new ResizeObserver(() => plot?.setSize({ width: Math.max(280, el.clientWidth), height: 180 }));
    ro.observe(el);
    return () => {
      gone = true;
      ro.disconnect();
      plot?.destroy();
    };
  }, [title, x, series, format, range, floor]);
  return <div class="chart" ref={box} role="img" aria-label={`${title} chart`} />;
}
