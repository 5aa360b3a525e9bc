/**
 * Devices: one server-side page at a time (filter, sort and keyset paging are the API's), so it stays as
 * fast at 10,000 devices as at 10. Filters live in the URL fragment; each load is timed in the page
 * (performance measure `devices-load`: from the user's action — filter, sort, page — to the new rows in the
 * DOM; the first load from the request).
 */
import type { ComponentChildren } from 'preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { FleetSummary } from '../../../api/routes/summary.js';
import type { Page as ApiPage, Device } from '../../../api/schemas.js';
import { call, seg } from '../api.js';
import { go, href } from '../router.js';
import { searchQuery } from '../text.js';
import {
  act,
  can,
  OnlineDot,
  Page,
  Show,
  StatusBadge,
  Table,
  useLive,
  useResource,
  useSession,
  When,
} from '../ui.js';

const STATUSES = ['converged', 'applying', 'waiting', 'failed', 'rolled-back', 'rejected', 'unknown'];
const SORTS: Array<[string, string]> = [
  ['id', 'Device'],
  ['online', 'Online'],
  ['status', 'Status'],
  ['targetVersion', 'Runs'],
  ['platform', 'Platform'],
  ['agentVersion', 'Agent'],
  ['lastSeen', 'Last seen'],
];
/** What each sortable column shows of a device (by the sort key). */
const CELLS: Record<string, (d: Device) => ComponentChildren> = {
  id: (d) => (
    <a href={href(['devices', d.id])} class="devid">
      {d.id}
    </a>
  ),
  online: (d) => <OnlineDot online={d.online} />,
  status: (d) => <StatusBadge status={d.status} />,
  targetVersion: (d) => d.applied?.text ?? '—',
  platform: (d) => d.platform ?? '—',
  agentVersion: (d) => d.agentVersion ?? '—',
  lastSeen: (d) => <When at={d.lastSeen} />,
};
const PAGE_SIZE = 50;

interface Filters {
  q: string;
  status: string;
  group: string;
  platform: string;
  online: string;
  image: string;
  sort: string;
  order: string;
}

function filtersOf(query: URLSearchParams): Filters {
  return {
    q: query.get('q') ?? '',
    status: query.get('status') ?? '',
    group: query.get('group') ?? '',
    platform: query.get('platform') ?? '',
    online: query.get('online') ?? '',
    image: query.get('image') ?? '',
    sort: query.get('sort') ?? 'id',
    order: query.get('order') ?? 'asc',
  };
}

export function DevicesPage({ query }: { query: URLSearchParams }) {
  const session = useSession();
  const f = filtersOf(query);
  // keyset paging: the cursor of this page and of the pages before it, for this filter only
  const [paging, setPaging] = useState<{ key: string; stack: string[]; cursor: string | undefined }>({
    key: '',
    stack: [],
    cursor: undefined,
  });
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [search, setSearch] = useState(f.q);
  const [groupText, setGroupText] = useState(f.group);
  const started = useRef(0);
  const filterKey = JSON.stringify(f);
  const here = paging.key === filterKey ? paging : { key: filterKey, stack: [], cursor: undefined };
  const cursors = here.stack;
  const cursor = here.cursor;
  // a new filter starts again at the first page, with nothing selected
  useEffect(() => {
    setSelected(new Set());
    setSearch(f.q);
    setGroupText(f.group);
  }, [filterKey]);

  const page = useResource(
    (signal) => {
      started.current ||= performance.now();
      return call<ApiPage<Device>>('GET', '/devices', {
        query: {
          ...searchQuery(f.q),
          status: f.status,
          group: f.group,
          platform: f.platform,
          online: f.online,
          image: f.image,
          sort: f.sort,
          order: f.order,
          limit: PAGE_SIZE,
          cursor,
        },
        signal,
      });
    },
    [filterKey, cursor],
  );
  const summary = useResource((signal) => call<FleetSummary>('GET', '/summary', { signal }), []);
  useLive((e) => e.type.startsWith('device.'), page.reload, 2000);

  // rows on screen: close the measure the tests and the bench read
  useLayoutEffect(() => {
    if (!page.data || page.loading || !started.current) return;
    performance.measure('devices-load', { start: started.current, end: performance.now() });
    started.current = 0;
  }, [page.data, page.loading]);

  /** a user action: the measure runs from here to the rows on screen */
  const begin = () => {
    started.current = performance.now();
  };
  const set = (patch: Partial<Filters>) => {
    begin();
    const next = { ...f, ...patch };
    go(
      ['devices'],
      Object.fromEntries(
        Object.entries(next).filter(
          ([k, v]) => v !== '' && !(k === 'sort' && v === 'id') && !(k === 'order' && v === 'asc'),
        ),
      ),
    );
  };
  const sortBy = (s: string) => set({ sort: s, order: f.sort === s && f.order === 'asc' ? 'desc' : 'asc' });
  const items = page.data?.items ?? [];
  const allOnPage = items.length > 0 && items.every((d) => selected.has(d.id));
  const first = cursors.length * PAGE_SIZE + 1;

  return (
    <Page title="Devices">
      <form
        class="filters"
        aria-label="Filter devices"
        onSubmit={(e) => {
          e.preventDefault();
          set({ q: search.trim(), group: groupText.trim() });
        }}
      >
        <label>
          Search
          <input
            type="search"
            name="q"
            placeholder="id prefix, or label key=value"
            value={search}
            onInput={(e) => setSearch((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Status
          <select value={f.status} onChange={(e) => set({ status: (e.target as HTMLSelectElement).value })}>
            <option value="">any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Online
          <select value={f.online} onChange={(e) => set({ online: (e.target as HTMLSelectElement).value })}>
            <option value="">any</option>
            <option value="true">online</option>
            <option value="false">offline</option>
          </select>
        </label>
        <label>
          Platform
          <select
            value={f.platform}
            onChange={(e) => set({ platform: (e.target as HTMLSelectElement).value })}
          >
            <option value="">any</option>
            {(summary.data?.byPlatform ?? [])
              .filter((p) => p.key !== null)
              .map((p) => (
                <option key={p.key} value={p.key!}>
                  {p.key}
                </option>
              ))}
            {f.platform && !summary.data?.byPlatform.some((p) => p.key === f.platform) && (
              <option value={f.platform}>{f.platform}</option>
            )}
          </select>
        </label>
        <label>
          Group
          <input
            name="group"
            value={groupText}
            placeholder="any"
            size={10}
            onInput={(e) => setGroupText((e.target as HTMLInputElement).value)}
            onChange={(e) => set({ group: (e.target as HTMLInputElement).value.trim(), q: search.trim() })}
          />
        </label>
        <button type="submit">Search</button>
        {(f.q || f.status || f.online || f.platform || f.group || f.image) && (
          <button type="button" onClick={() => go(['devices'])}>
            Clear filters
          </button>
        )}
      </form>
      {f.image && (
        <p class="state">
          Devices running image <code>{f.image}</code>
        </p>
      )}
      {can(session, 'operator') && selected.size > 0 && (
        <BulkBar
          ids={[...selected]}
          onDone={() => {
            setSelected(new Set());
            page.reload();
          }}
        />
      )}
      <Show
        r={page}
        what="devices"
        isEmpty={(p) => p.items.length === 0}
        empty={cursors.length ? 'No more devices.' : 'No device matches these filters.'}
      >
        {(p) => (
          <>
            <Table
              class="devices"
              describedBy="devices-count"
              testId="devices-table"
              rows={p.items}
              rowKey={(d) => d.id}
              columns={[
                can(session, 'operator') && {
                  class: 'check',
                  header: (
                    <input
                      type="checkbox"
                      aria-label="Select every device on this page"
                      checked={allOnPage}
                      onChange={() => {
                        const next = new Set(selected);
                        for (const d of items) allOnPage ? next.delete(d.id) : next.add(d.id);
                        setSelected(next);
                      }}
                    />
                  ),
                  cell: (d) => (
                    <input
                      type="checkbox"
                      aria-label={`Select ${d.id}`}
                      checked={selected.has(d.id)}
                      onChange={() => {
                        const next = new Set(selected);
                        next.has(d.id) ? next.delete(d.id) : next.add(d.id);
                        setSelected(next);
                      }}
                    />
                  ),
                },
                ...SORTS.map(([key, label]) => ({
                  header: (
                    <button type="button" class="sort" onClick={() => sortBy(key)}>
                      {label}
                      {f.sort === key ? (f.order === 'asc' ? ' ▲' : ' ▼') : ''}
                    </button>
                  ),
                  sort:
                    f.sort === key
                      ? f.order === 'asc'
                        ? ('ascending' as const)
                        : ('descending' as const)
                      : undefined,
                  cell: CELLS[key]!,
                })),
                {
                  header: 'Labels',
                  class: 'labels',
                  cell: (d) =>
                    Object.entries(d.labels).map(([k, v]) => (
                      <span class="label" key={k}>
                        {k}={v}
                      </span>
                    )),
                },
              ]}
            />
            <nav class="pager" aria-label="Pages">
              <span id="devices-count">
                {first.toLocaleString()}–{(first + p.items.length - 1).toLocaleString()}
                {p.total !== null ? ` of ${p.total.toLocaleString()}` : ''}
              </span>
              <button
                type="button"
                disabled={cursors.length === 0}
                onClick={() => {
                  begin();
                  setPaging({
                    key: filterKey,
                    stack: cursors.slice(0, -1),
                    cursor: cursors[cursors.length - 1] || undefined,
                  });
                }}
              >
                Previous
              </button>
              <button
                type="button"
                disabled={!p.next}
                onClick={() => {
                  begin();
                  setPaging({
                    key: filterKey,
                    stack: [...cursors, cursor ?? ''],
                    cursor: p.next ?? undefined,
                  });
                }}
              >
                Next
              </button>
            </nav>
          </>
        )}
      </Show>
    </Page>
  );
}

/** Bulk actions on the selected devices: set or remove a label; deploy to them. */
function BulkBar({ ids, onDone }: { ids: string[]; onDone: () => void }) {
  const [label, setLabel] = useState('');
  const labelChange = (): { set: Record<string, string>; remove: string[] } | undefined => {
    const m = /^([^=\s]+)=(.*)$/.exec(label.trim());
    if (m) return { set: { [m[1]!]: m[2]! }, remove: [] };
    const r = /^-([^=\s]+)$/.exec(label.trim());
    if (r) return { set: {}, remove: [r[1]!] };
    return undefined;
  };
  return (
    <section class="bulk" aria-label="Selected devices">
      <strong>{ids.length} selected</strong>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          const change = labelChange();
          if (!change) return;
          let failed = 0;
          for (const id of ids) {
            const ok = await call('PATCH', `/devices/${seg(id)}/labels`, { body: change }).then(
              () => true,
              () => false,
            );
            if (!ok) failed++;
          }
          await act(`label ${label.trim()} on ${ids.length - failed} of ${ids.length} devices`, async () => {
            if (failed) throw new Error(`${failed} refused`);
          });
          setLabel('');
          onDone();
        }}
      >
        <label>
          Label
          <input
            value={label}
            placeholder="key=value, or -key to remove"
            onInput={(e) => setLabel((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit" disabled={!labelChange()}>
          Apply label
        </button>
      </form>
      <a class="button" href={href(['deploy'], { devices: ids.join(',') })}>
        Deploy to these…
      </a>
    </section>
  );
}
