/**
 * Small shared pieces: loading / empty / error states, a data hook with live reloads, status badges,
 * times, an inline confirmation. All text goes through preact's text nodes (escaped); nothing here sets
 * HTML from data.
 */
import type { ComponentChildren } from 'preact';
import { createContext } from 'preact';
import { useCallback, useContext, useEffect, useRef, useState } from 'preact/hooks';
import type { Role } from '../../identity/roles.js';
import { ApiError, type LiveEvent, live, type SessionInfo } from './api.js';

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export function can(session: SessionInfo | null, need: Role): boolean {
  return !!session && RANK[session.role] >= RANK[need];
}

export const SessionContext = createContext<SessionInfo | null>(null);
export const useSession = () => useContext(SessionContext);

// ---- notices (an aria-live area the shell renders) ---------------------------------------------------

export interface Notice {
  id: number;
  kind: 'ok' | 'error';
  text: string;
}
let noticeSeq = 0;
const noticeFns = new Set<(n: Notice[]) => void>();
let notices: Notice[] = [];
export function notify(kind: Notice['kind'], text: string): void {
  const n = { id: ++noticeSeq, kind, text };
  notices = [...notices.slice(-3), n];
  for (const fn of noticeFns) fn(notices);
  setTimeout(() => {
    notices = notices.filter((x) => x.id !== n.id);
    for (const fn of noticeFns) fn(notices);
  }, 8000);
}
export function Notices() {
  const [list, setList] = useState<Notice[]>(notices);
  useEffect(() => {
    noticeFns.add(setList);
    return () => void noticeFns.delete(setList);
  }, []);
  return (
    <div class="notices" role="status" aria-live="polite">
      {list.map((n) => (
        <p key={n.id} class={`notice notice-${n.kind}`}>
          {n.text}
        </p>
      ))}
    </div>
  );
}

export function errorText(err: unknown): string {
  if (err instanceof ApiError) return `${err.code}: ${err.message}`;
  return (err as Error)?.message ?? String(err);
}

// ---- data ------------------------------------------------------------------------------------------

export interface Resource<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload(): void;
}

/**
 * Load `fetcher` when `deps` change; `reload()` fetches again keeping what is shown (no flash of the loading
 * state on live updates). A newer load cancels an older one.
 */
export function useResource<T>(fetcher: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Resource<T> {
  const [state, setState] = useState<{ data: T | undefined; error: unknown; loading: boolean }>({
    data: undefined,
    error: undefined,
    loading: true,
  });
  const [tick, setTick] = useState(0);
  const fetchRef = useRef(fetcher);
  fetchRef.current = fetcher;
  const depsKey = JSON.stringify(deps);
  const lastKey = useRef<string>('');
  useEffect(() => {
    const ac = new AbortController();
    const fresh = lastKey.current !== depsKey;
    lastKey.current = depsKey;
    if (fresh) setState((s) => ({ data: s.data, error: undefined, loading: true }));
    fetchRef.current(ac.signal).then(
      (data) => !ac.signal.aborted && setState({ data, error: undefined, loading: false }),
      (error) =>
        !ac.signal.aborted &&
        (error as Error)?.name !== 'AbortError' &&
        setState((s) => ({ data: fresh ? undefined : s.data, error, loading: false })),
    );
    return () => ac.abort();
  }, [depsKey, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

/**
 * Call `onEvent` for live events that `match`, at most once per `everyMs` (trailing), and on a resync.
 */
export function useLive(match: (e: LiveEvent) => boolean, onEvent: () => void, everyMs = 750): void {
  const matchRef = useRef(match);
  matchRef.current = match;
  const fnRef = useRef(onEvent);
  fnRef.current = onEvent;
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let last = 0;
    const fire = () => {
      timer = undefined;
      last = Date.now();
      fnRef.current();
    };
    const off = live.subscribe((e) => {
      if (e.type !== 'resync' && !matchRef.current(e)) return;
      if (timer) return;
      timer = setTimeout(fire, Math.max(0, last + everyMs - Date.now()));
    });
    return () => {
      off();
      if (timer) clearTimeout(timer);
    };
  }, [everyMs]);
}

// ---- states ------------------------------------------------------------------------------------------

export function Loading({ what }: { what: string }) {
  return (
    <p class="state state-loading" role="status" aria-busy="true">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="state state-empty">{children}</p>;
}

export function ErrorBox({ error, retry }: { error: unknown; retry?: () => void }) {
  return (
    <div class="state state-error" role="alert">
      <p>{errorText(error)}</p>
      {retry && (
        <button type="button" onClick={retry}>
          Try again
        </button>
      )}
    </div>
  );
}

/** Render `r`: loading, error, empty (when `isEmpty`), else `children(data)`. */
export function Show<T>({
  r,
  what,
  isEmpty,
  empty,
  children,
}: {
  r: Resource<T>;
  what: string;
  isEmpty?: (d: T) => boolean;
  empty?: ComponentChildren;
  children: (d: T) => ComponentChildren;
}) {
  if (r.data === undefined && r.loading) return <Loading what={what} />;
  if (r.data === undefined) return <ErrorBox error={r.error} retry={r.reload} />;
  return (
    <>
      {r.error !== undefined && <ErrorBox error={r.error} retry={r.reload} />}
      {isEmpty?.(r.data) ? <Empty>{empty ?? `No ${what}.`}</Empty> : children(r.data)}
    </>
  );
}

// ---- small pieces ------------------------------------------------------------------------------------

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge badge-${status.replace(/[^a-z-]/g, '')}`}>{status}</span>;
}

export function OnlineDot({ online }: { online: boolean }) {
  return (
    <span class={online ? 'dot dot-on' : 'dot dot-off'} title={online ? 'online' : 'offline'}>
      {online ? 'online' : 'offline'}
    </span>
  );
}

export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '—';
  const s = Math.round((now - Date.parse(iso)) / 1000);
  if (!Number.isFinite(s)) return '—';
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** The time now, again every `everyMs` while the component is shown (a countdown). */
export function useNow(everyMs: number): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}

export function When({ at }: { at: string | null | undefined }) {
  if (!at) return <span>—</span>;
  return (
    <time dateTime={at} title={new Date(at).toLocaleString()}>
      {ago(at)}
    </time>
  );
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** A button that asks once more inline before it acts (no window.confirm: testable, accessible). */
export function ConfirmButton({
  label,
  question,
  onConfirm,
  danger,
  disabled,
}: {
  label: string;
  question: string;
  onConfirm: () => Promise<unknown> | unknown;
  danger?: boolean;
  disabled?: boolean;
}) {
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  if (!asking)
    return (
      <button
        type="button"
        class={danger ? 'danger' : ''}
        disabled={disabled || busy}
        onClick={() => setAsking(true)}
      >
        {busy ? `${label}…` : label}
      </button>
    );
  return (
    <span class="confirm">
      <span>{question}</span>
      <button
        type="button"
        class={danger ? 'danger' : 'primary'}
        onClick={async () => {
          setAsking(false);
          setBusy(true);
          try {
            await onConfirm();
          } finally {
            setBusy(false);
          }
        }}
      >
        Yes, {label.toLowerCase()}
      </button>
      <button type="button" onClick={() => setAsking(false)}>
        Cancel
      </button>
    </span>
  );
}

/** Run an action, report its outcome in the notices, return whether it worked. */
export async function act(what: string, fn: () => Promise<unknown>): Promise<boolean> {
  try {
    await fn();
    notify('ok', what);
    return true;
  } catch (err) {
    notify('error', `${what} failed — ${errorText(err)}`);
    return false;
  }
}

export function Page({
  title,
  actions,
  children,
}: {
  title: ComponentChildren;
  actions?: ComponentChildren;
  children: ComponentChildren;
}) {
  return (
    <section class="page">
      <header class="page-head">
        <h1>{title}</h1>
        {actions && <div class="page-actions">{actions}</div>}
      </header>
      {children}
    </section>
  );
}

export function Bar({ value, max, label }: { value: number; max: number; label: string }) {
  return (
    <span class="bar">
      <progress value={value} max={Math.max(1, max)} aria-label={label} />
      <span class="bar-text">
        {value}/{max}
      </span>
    </span>
  );
}

// ---- tables ------------------------------------------------------------------------------------------

/** One column of a `Table`: its header, and what each row shows in it. */
export interface Column<T> {
  /** the header: text, or a control (a sort button, a select-all box) */
  header: ComponentChildren;
  /** the header is for screen readers only (an actions column) */
  hiddenHeader?: boolean;
  /** class of the header and of every cell (num, check, labels…) */
  class?: string;
  /** aria-sort of a sortable column */
  sort?: 'ascending' | 'descending' | undefined;
  /** the cell names its row (`<th scope="row">`) */
  rowHeader?: boolean;
  /** the cell's class when it depends on the row (replaces `class` for cells) */
  cellClass?: (row: T) => string | undefined;
  title?: (row: T) => string | undefined;
  cell: (row: T) => ComponentChildren;
}

/**
 * The console's one table: column headers with `scope="col"` (a hidden one still named for screen
 * readers), a row per item. A column given as `false` is left out (`can(session, 'operator') && {…}`).
 */
export function Table<T>({
  rows,
  columns,
  rowKey,
  rowClass,
  class: className,
  testId,
  describedBy,
}: {
  rows: readonly T[];
  columns: ReadonlyArray<Column<T> | false>;
  rowKey: (row: T) => string | number;
  rowClass?: (row: T) => string | undefined;
  class?: string;
  testId?: string;
  describedBy?: string;
}) {
  const cols = columns.filter((c): c is Column<T> => c !== false);
  return (
    <table class={className} data-testid={testId} aria-describedby={describedBy}>
      <thead>
        <tr>
          {cols.map((c, i) => (
            <th key={i} scope="col" class={c.class} aria-sort={c.sort}>
              {c.hiddenHeader ? <span class="sr-only">{c.header}</span> : c.header}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr key={rowKey(r)} class={rowClass?.(r)}>
            {cols.map((c, i) => {
              const props = { key: i, class: c.cellClass ? c.cellClass(r) : c.class, title: c.title?.(r) };
              return c.rowHeader ? (
                <th scope="row" {...props}>
                  {c.cell(r)}
                </th>
              ) : (
                <td {...props}>{c.cell(r)}</td>
              );
            })}
          </tr>
        ))}
      </tbody>
    </table>
  );
}
