/**
 * What the listing commands print: an aligned table (what `docker ps` users expect), JSON, or a docker
 * style Go-template-like format (`--format '{{.Name}}'`, `--format 'table {{.ID}}\t{{.Status}}'`,
 * `--format json`, `--format '{{json .}}'`). Pure: rows in, text out.
 */
import { invalidInput } from '../lib/errors.js';

export type Row = Record<string, unknown>;

export function renderTable(
  rows: ReadonlyArray<Row>,
  columns: readonly string[],
  headers?: string[],
): string {
  const cell = (r: Row, c: string) => String(r[c] ?? '');
  const widths = columns.map((c, i) =>
    Math.max((headers?.[i] ?? c).length, ...rows.map((r) => cell(r, c).length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd();
  let out = `${line(headers ?? columns.map((c) => c.toUpperCase()))}\n`;
  for (const r of rows) out += `${line(columns.map((c) => cell(r, c)))}\n`;
  return out;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function humanSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/**
 * A duration as docker prints it (go-units HumanDuration): "Less than a second", "1 second", "3 minutes",
 * "About an hour", "5 days"; each unit truncated, as docker does (119 s is "About a minute").
 */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(Math.max(0, ms) / 1000);
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.floor(seconds / 60);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.floor(minutes / 60);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  return `${Math.floor(hours / 24 / 365)} years`;
}

/** One column of a listing: the key in the row, its header, and the names a template may use for it. */
export interface Column {
  key: string;
  header: string;
}

/** Columns whose headers are their keys in capitals. */
export function columnsOf(...keys: string[]): Column[] {
  return keys.map((key) => ({ key, header: key.toUpperCase() }));
}

/** The help text of every listing's `--format`. */
export const FORMAT_HELP = "table (default) | json | a template, e.g. '{{.Name}}'";

/** Look a template field up the way docker users write it: `.ID`, `.Id`, `.id`, `.Names`/`.Name`… */
function field(row: Row, name: string): unknown {
  if (name in row) return row[name];
  const lower = name.toLowerCase();
  for (const [k, v] of Object.entries(row)) if (k.toLowerCase() === lower) return v;
  // docker's plural/singular habits: .Names for a container's name, .Repository/.Tag for an image
  const alias: Record<string, string> = { names: 'name', repository: 'name', containerid: 'id' };
  const a = alias[lower];
  if (a) return field(row, a);
  throw invalidInput(
    `--format: no field .${name} (fields: ${Object.keys(row)
      .map((k) => `.${k}`)
      .join(' ')})`,
  );
}

const show = (v: unknown): string =>
  v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);

/** `.State.Status`: each step looked up as `field` does */
function fieldPath(row: Row, dotted: string): unknown {
  let v: unknown = row;
  for (const part of dotted.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = field(v as Row, part);
  }
  return v;
}

/**
 * Expand `{{.Field}}`, `{{.A.B}}`, `{{json .}}`, `{{json .Field}}`, `{{upper .F}}`, `{{lower .F}}`;
 * \t and \n unescaped.
 */
export function renderTemplate(template: string, row: Row): string {
  const text = template.replace(/\\t/g, '\t').replace(/\\n/g, '\n');
  return text.replace(/\{\{\s*(?:(json|upper|lower)\s+)?\.([A-Za-z0-9_.]*)\s*\}\}/g, (_m, fn, name) => {
    const v = name === '' ? row : fieldPath(row, name);
    if (fn === 'json') return JSON.stringify(v);
    if (fn === 'upper') return show(v).toUpperCase();
    if (fn === 'lower') return show(v).toLowerCase();
    return show(v);
  });
}

/**
 * Render a listing per `--format`: undefined or "table" → the table of `columns`; "json" → the rows
 * (`full`, when given, is what JSON shows: every field, not only the table's); "table <template>" → a
 * table whose columns come from the template; any other text → the template once per row.
 */
export function renderListing(
  rows: ReadonlyArray<Row>,
  columns: readonly Column[],
  format: string | undefined,
  full?: ReadonlyArray<unknown>,
): string {
  const f = format?.trim();
  if (!f || f === 'table')
    return renderTable(
      rows,
      columns.map((c) => c.key),
      columns.map((c) => c.header),
    );
  if (f === 'json') return `${JSON.stringify(full ?? rows, null, 2)}\n`;
  if (f.startsWith('table ')) {
    const cells = f.slice(6).replace(/\\t/g, '\t').split('\t');
    const headers = cells.map((c) =>
      c.replace(/\{\{\s*(?:\w+\s+)?\.([A-Za-z0-9_]*)\s*\}\}/g, (_m, n: string) => {
        const col = columns.find((x) => x.key.toLowerCase() === n.toLowerCase());
        return col?.header ?? n.toUpperCase();
      }),
    );
    const rendered = rows.map((r) => Object.fromEntries(cells.map((c, i) => [i, renderTemplate(c, r)])));
    return renderTable(
      rendered,
      cells.map((_c, i) => String(i)),
      headers,
    );
  }
  return rows.map((r) => `${renderTemplate(f, r)}\n`).join('');
}

/** `--format` from the flags, `--json` being the same as `--format json`. */
export function formatOf(o: { format?: string; json?: boolean }): string | undefined {
  return o.json ? 'json' : o.format;
}

export function printListing(
  rows: ReadonlyArray<Row>,
  columns: readonly Column[],
  o: { format?: string; json?: boolean },
  full?: ReadonlyArray<unknown>,
): void {
  process.stdout.write(renderListing(rows, columns, formatOf(o), full));
}

/** A plain table of `columns` (keys, headed in capitals), for listings without `--format`. */
export function printTable(rows: ReadonlyArray<Row>, columns: readonly string[]): void {
  printListing(rows, columnsOf(...columns), {});
}

/**
 * `deploy --wait`'s device lines: `d1: converged`, `d2: pending (applying) [offline]` — written to `out`
 * only when a device's line changed since the last call.
 */
export function deviceLines(
  out: NodeJS.WritableStream,
): (d: { deviceId: string; state: string; detail?: string | null; online: boolean }) => void {
  const told = new Map<string, string>();
  return (d) => {
    const line = `${d.deviceId}: ${d.state}${d.detail ? ` (${d.detail})` : ''}${d.online ? '' : ' [offline]'}`;
    if (told.get(d.deviceId) === line) return;
    told.set(d.deviceId, line);
    out.write(`${line}\n`);
  };
}
