/**
 * One device: who it is, what it should run and what it reports (with the reconcile retry it has pending),
 * metrics, events, live logs, actions. Actions are the signed remote commands of the API (restart, logs,
 * report, purgeVolume, retry) and revoke.
 */
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type {
  Page as ApiPage,
  CommandAnswer,
  DeviceDetail,
  DeviceEvent,
  Metrics,
} from '../../../api/schemas.js';
import { call, seg } from '../api.js';
import { Chart, type ChartSeries } from '../chart.js';
import { ReleaseHistory, type Scope } from '../history.js';
import { href } from '../router.js';
import { clip, mergeTail, retryText, seriesLabel } from '../text.js';
import {
  act,
  bytes,
  ConfirmButton,
  can,
  Empty,
  ErrorBox,
  OnlineDot,
  Page,
  Show,
  StatusBadge,
  Table,
  useLive,
  useNow,
  useResource,
  useSession,
  When,
} from '../ui.js';

/** How much of a retry's last error the page shows (the device may send 4 KiB; the API has it all). */
const RETRY_ERROR_CHARS = 300;

function command(id: string, body: Record<string, unknown>): Promise<CommandAnswer> {
  return call<CommandAnswer>('POST', `/devices/${seg(id)}/commands`, { body }).then((a) => {
    if (!a.ok) throw new Error(`${a.error?.code ?? 'Failed'}: ${a.error?.message ?? 'the device refused'}`);
    return a;
  });
}

export function DevicePage({ id }: { id: string }) {
  const session = useSession();
  const device = useResource((signal) => call<DeviceDetail>('GET', `/devices/${seg(id)}`, { signal }), [id]);
  useLive((e) => e.deviceId === id && e.type !== 'device.event', device.reload, 1000);
  const [logsOf, setLogsOf] = useState<{ app: string; service: string } | undefined>();
  const operator = can(session, 'operator');

  return (
    <Page
      title={
        <>
          Device <span class="devid">{id}</span>
        </>
      }
      actions={
        operator &&
        device.data &&
        !device.data.revokedAt && (
          <>
            <button
              type="button"
              onClick={() => act(`${id} asked to report again`, () => command(id, { kind: 'report' }))}
            >
              Re-report
            </button>
            <ConfirmButton
              label="Revoke device"
              question={`Revoke ${id}? Its broker credentials are removed for good.`}
              danger
              onConfirm={() =>
                act(`${id} revoked`, () => call('POST', `/devices/${seg(id)}/revoke`)).then(device.reload)
              }
            />
          </>
        )
      }
    >
      <p>
        <a href={href(['devices'])}>← All devices</a>
      </p>
      <Show r={device} what="the device">
        {(d) => (
          <>
            <div class="grid2">
              <Identity d={d} />
              <Target d={d} operator={operator} onChanged={device.reload} />
            </div>
            <ReleaseHistory scope={historyScope(d)} operator={operator && !d.revokedAt} />
            <Services
              d={d}
              operator={operator}
              onLogs={(app, service) => setLogsOf({ app, service })}
              onChanged={device.reload}
            />
            {logsOf && (
              <Logs
                key={`${logsOf.app}/${logsOf.service}`}
                id={id}
                app={logsOf.app}
                service={logsOf.service}
                onClose={() => setLogsOf(undefined)}
              />
            )}
            <MetricsCharts id={id} />
            <Events id={id} />
          </>
        )}
      </Show>
    </Page>
  );
}

/**
 * Whose releases the device page lists: the scope whose target applies to the device (its group's, or its
 * own override) — where going back to an earlier release of what it runs is done; the device's own when
 * nothing applies yet.
 */
function historyScope(d: DeviceDetail): Scope {
  const e = d.expected;
  return e && e.kind !== 'local' ? { kind: e.kind, id: e.id } : { kind: 'device', id: d.id };
}

function Identity({ d }: { d: DeviceDetail }) {
  return (
    <section class="card" aria-labelledby="dev-identity">
      <h2 id="dev-identity">Identity</h2>
      <dl class="kv">
        <dt>Presence</dt>
        <dd>
          <OnlineDot online={d.online} /> {d.revokedAt && <StatusBadge status="revoked" />}
        </dd>
        <dt>Status</dt>
        <dd>
          <StatusBadge status={d.status} />
        </dd>
        <dt>Platform</dt>
        <dd>{d.platform ?? '—'}</dd>
        <dt>Agent version</dt>
        <dd>{d.agentVersion ?? '—'}</dd>
        <dt>Fleet key</dt>
        <dd>{d.keyId ?? '—'}</dd>
        <dt>Groups</dt>
        <dd>
          {d.groups.length
            ? d.groups.map((g) => (
                <a class="label" key={g} href={href(['devices'], { group: g })}>
                  {g}
                </a>
              ))
            : '—'}
        </dd>
        <dt>Labels</dt>
        <dd>
          {Object.keys(d.labels).length
            ? Object.entries(d.labels).map(([k, v]) => (
                <span class="label" key={k}>
                  {k}={v}
                </span>
              ))
            : '—'}
        </dd>
        <dt>Last seen</dt>
        <dd>
          <When at={d.lastSeen} />
        </dd>
        <dt>First seen</dt>
        <dd>
          <When at={d.firstSeen} />
        </dd>
        {d.enrolledAt && (
          <>
            <dt>Enrolled</dt>
            <dd>
              <When at={d.enrolledAt} />
            </dd>
          </>
        )}
        {d.revokedAt && (
          <>
            <dt>Revoked</dt>
            <dd>
              <When at={d.revokedAt} />
            </dd>
          </>
        )}
      </dl>
    </section>
  );
}

function Target({ d, operator, onChanged }: { d: DeviceDetail; operator: boolean; onChanged: () => void }) {
  const behind = d.expected && (!d.applied || d.applied.text !== d.expected.text);
  return (
    <section class="card" aria-labelledby="dev-target">
      <h2 id="dev-target">Target</h2>
      <dl class="kv">
        <dt>Should run</dt>
        <dd>{d.expected?.text ?? 'nothing deployed'}</dd>
        <dt>Reports</dt>
        <dd>
          {d.applied?.text ?? 'nothing applied'}{' '}
          {d.targetStatus && <span class="muted">({d.targetStatus})</span>}
          {behind && <span class="badge badge-applying">not there yet</span>}
        </dd>
        <dt>Previous</dt>
        <dd>{d.previous?.text ?? '—'}</dd>
        {d.retry && (
          <PendingRetry
            id={d.id}
            retry={d.retry}
            online={d.online}
            operator={operator && !d.revokedAt}
            onChanged={onChanged}
          />
        )}
        {d.lastError && (
          <>
            <dt>Last error</dt>
            <dd class="reason">
              {d.lastError} <When at={d.lastErrorAt} />
            </dd>
          </>
        )}
        {d.rejection && (
          <>
            <dt>Refused</dt>
            <dd class="reason">
              {d.rejection.kind} {d.rejection.id} {d.rejection.version ?? ''} <When at={d.rejection.at} />
            </dd>
          </>
        )}
      </dl>
    </section>
  );
}

/**
 * The reconcile retry the device reports pending: when (counting down) and which attempt, its last error
 * (bounded), and for operators "Retry now" — the `retry` command, answered by the device. An offline
 * device's retry is its last report, and a command would find nobody to answer it.
 */
function PendingRetry({
  id,
  retry,
  online,
  operator,
  onChanged,
}: {
  id: string;
  retry: NonNullable<DeviceDetail['retry']>;
  online: boolean;
  operator: boolean;
  onChanged: () => void;
}) {
  const now = useNow(1000);
  const [busy, setBusy] = useState(false);
  const error = retry.lastError ? clip(retry.lastError, RETRY_ERROR_CHARS) : undefined;
  return (
    <>
      <dt>Retry</dt>
      <dd data-testid="retry">
        <time dateTime={retry.at} title={new Date(retry.at).toLocaleString()}>
          {retryText(retry.at, retry.attempt, now)}
        </time>
        {!online && <span class="muted"> (offline: as last reported)</span>}{' '}
        {operator && (
          <button
            type="button"
            disabled={busy || !online}
            onClick={async () => {
              setBusy(true);
              try {
                if (await act(`${id} is retrying now`, () => command(id, { kind: 'retry' }))) onChanged();
              } finally {
                setBusy(false);
              }
            }}
          >
            {busy ? 'Retrying…' : 'Retry now'}
          </button>
        )}
      </dd>
      {error && (
        <>
          <dt>Retry error</dt>
          <dd class="reason" data-testid="retry-error" data-cut={error.cut ? 'true' : undefined}>
            {error.text}
          </dd>
        </>
      )}
    </>
  );
}

function Services({
  d,
  operator,
  onLogs,
  onChanged,
}: {
  d: DeviceDetail;
  operator: boolean;
  onLogs: (app: string, service: string) => void;
  onChanged: () => void;
}) {
  const apps = useMemo(() => {
    const m = new Map<string, DeviceDetail['services']>();
    for (const s of d.services) m.set(s.app, [...(m.get(s.app) ?? []), s]);
    return [...m.entries()];
  }, [d.services]);
  return (
    <section class="card" aria-labelledby="dev-apps">
      <h2 id="dev-apps">Apps and services</h2>
      {apps.length === 0 ? (
        <Empty>The device reports no app.</Empty>
      ) : (
        apps.map(([app, services]) => (
          <div class="app" key={app}>
            <h3>
              {app} <StatusBadge status={services[0]?.appStatus ?? 'unknown'} />
              {operator && (
                <span class="inline-actions">
                  <button
                    type="button"
                    onClick={() =>
                      act(`restart of ${app} asked`, () => command(d.id, { kind: 'restart', app })).then(
                        onChanged,
                      )
                    }
                  >
                    Restart app
                  </button>
                  <PurgeVolume id={d.id} app={app} />
                </span>
              )}
            </h3>
            <Table
              class="services"
              rows={services}
              rowKey={(s) => s.service}
              columns={[
                { header: 'Service', cell: (s) => s.service },
                { header: 'Image', cell: (s) => <code>{s.image}</code> },
                { header: 'State', cell: (s) => <StatusBadge status={s.state} /> },
                { header: 'Health', cell: (s) => s.health },
                { header: 'Restarts', class: 'num', cell: (s) => s.restarts },
                { header: 'Last error', cellClass: () => 'reason', cell: (s) => s.lastError ?? '' },
                {
                  header: 'Actions',
                  hiddenHeader: true,
                  cell: (s) =>
                    operator && (
                      <span class="inline-actions">
                        <button type="button" onClick={() => onLogs(app, s.service)}>
                          Logs
                        </button>
                        <button
                          type="button"
                          onClick={() =>
                            act(`restart of ${app}/${s.service} asked`, () =>
                              command(d.id, { kind: 'restart', app, service: s.service }),
                            ).then(onChanged)
                          }
                        >
                          Restart
                        </button>
                      </span>
                    ),
                },
              ]}
            />
          </div>
        ))
      )}
    </section>
  );
}

function PurgeVolume({ id, app }: { id: string; app: string }) {
  const [volume, setVolume] = useState('');
  const [open, setOpen] = useState(false);
  if (!open)
    return (
      <button type="button" onClick={() => setOpen(true)}>
        Purge volume…
      </button>
    );
  return (
    <span class="confirm">
      <label>
        Volume of {app}
        <input value={volume} size={12} onInput={(e) => setVolume((e.target as HTMLInputElement).value)} />
      </label>
      <ConfirmButton
        label="Purge"
        question={`Delete every file in volume ${volume || '?'} of ${app}?`}
        danger
        disabled={!volume}
        onConfirm={() =>
          act(`volume ${volume} of ${app} purged`, () =>
            command(id, { kind: 'purgeVolume', app, volume }),
          ).then(() => setOpen(false))
        }
      />
      <button type="button" onClick={() => setOpen(false)}>
        Close
      </button>
    </span>
  );
}

const MAX_LOG_LINES = 2000;

/** Live logs: the logs command asked again every few seconds while following; new lines appended. */
function Logs({
  id,
  app,
  service,
  onClose,
}: {
  id: string;
  app: string;
  service: string;
  onClose: () => void;
}) {
  const [lines, setLines] = useState<string[] | undefined>();
  const [error, setError] = useState<unknown>();
  const [follow, setFollow] = useState(true);
  const pre = useRef<HTMLPreElement>(null);
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const fetchOnce = async () => {
      try {
        const a = await command(id, { kind: 'logs', app, service, tail: 200, timeoutMs: 15_000 });
        const got = ((a.result as { lines?: unknown })?.lines ?? []) as unknown[];
        const text = got.map((l) => (typeof l === 'string' ? l : JSON.stringify(l)));
        if (!stop) {
          setLines((have) => mergeTail(have ?? [], text).slice(-MAX_LOG_LINES));
          setError(undefined);
        }
      } catch (err) {
        if (!stop) setError(err);
      }
      if (!stop && follow) timer = setTimeout(fetchOnce, 3000);
    };
    void fetchOnce();
    return () => {
      stop = true;
      if (timer) clearTimeout(timer);
    };
  }, [id, app, service, follow]);
  useEffect(() => {
    if (follow && pre.current) pre.current.scrollTop = pre.current.scrollHeight;
  }, [lines, follow]);
  return (
    <section class="card" aria-labelledby="dev-logs">
      <h2 id="dev-logs">
        Logs of {app}/{service}{' '}
        <span class="inline-actions">
          <label class="inline">
            <input type="checkbox" checked={follow} onChange={() => setFollow(!follow)} /> follow
          </label>
          <button type="button" onClick={onClose}>
            Close
          </button>
        </span>
      </h2>
      {error !== undefined && <ErrorBox error={error} />}
      {lines === undefined && error === undefined ? (
        <p class="state" role="status">
          Asking the device…
        </p>
      ) : lines && lines.length === 0 ? (
        <Empty>No log lines yet.</Empty>
      ) : (
        <pre
          class="logs"
          ref={pre}
          role="log"
          // biome-ignore lint/a11y/noNoninteractiveTabindex: a scrolling region must be reachable by keyboard
          tabIndex={0}
          aria-label={`logs of ${app}/${service}`}
          data-testid="logs"
        >
          {(lines ?? []).join('\n')}
        </pre>
      )}
    </section>
  );
}

const FAMILIES: Array<{
  match: RegExp;
  title: string;
  format: (v: number) => string;
  floor?: number;
}> = [
  { match: /^cpu|cpuPercent$/i, title: 'CPU %', format: (v) => `${v.toFixed(0)} %`, floor: 100 },
  { match: /^mem|memoryBytes$/i, title: 'Memory', format: (v) => bytes(Math.max(0, v)) },
  { match: /^disk|storage/i, title: 'Disk', format: (v) => bytes(Math.max(0, v)) },
];

function MetricsCharts({ id }: { id: string }) {
  const metrics = useResource(
    (signal) => call<Metrics>('GET', `/devices/${seg(id)}/metrics`, { signal }),
    [id],
  );
  useLive((e) => e.deviceId === id && e.type === 'device.state', metrics.reload, 30_000);
  const charts = useMemo(() => {
    const m = metrics.data;
    if (!m) return [];
    const [from, to] = [Date.parse(m.from) / 1000, Date.parse(m.to) / 1000];
    const out: Array<{
      title: string;
      x: number[];
      series: ChartSeries[];
      format: (v: number) => string;
      range: [number, number];
      floor?: number;
    }> = [];
    for (const fam of FAMILIES) {
      const series = m.series.filter(
        (s) => fam.match.test(s.series) || fam.match.test(s.series.split('.').pop() ?? ''),
      );
      if (series.length === 0) continue;
      const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.t)))].sort((a, b) => a - b);
      // from the first sample (at least the last 5 minutes) to now: a device that just started
      // reporting is not a dot squeezed against the right edge of an empty hour
      const first = xs.length ? xs[0]! / 1000 : from;
      const range: [number, number] = [Math.max(from, Math.min(first, to - 300)), to];
      out.push({
        title: fam.title,
        x: xs.map((t) => t / 1000),
        series: series.slice(0, 8).map((s) => {
          const byT = new Map(s.points.map((p) => [p.t, p.avg]));
          return { label: seriesLabel(s.series), values: xs.map((t) => byT.get(t) ?? null) };
        }),
        format: fam.format,
        range,
        ...(fam.floor !== undefined ? { floor: fam.floor } : {}),
      });
    }
    return out;
  }, [metrics.data]);
  return (
    <section class="card" aria-labelledby="dev-metrics">
      <h2 id="dev-metrics">Metrics (last hour)</h2>
      <Show
        r={metrics}
        what="metrics"
        isEmpty={() => charts.length === 0}
        empty="No metrics reported in the last hour."
      >
        {() => (
          <div class="charts">
            {charts.map((c) => (
              <Chart
                key={c.title}
                title={c.title}
                x={c.x}
                series={c.series}
                format={c.format}
                range={c.range}
                {...(c.floor !== undefined ? { floor: c.floor } : {})}
              />
            ))}
          </div>
        )}
      </Show>
    </section>
  );
}

function Events({ id }: { id: string }) {
  const events = useResource(
    (signal) => call<ApiPage<DeviceEvent>>('GET', '/events', { query: { device: id, limit: 50 }, signal }),
    [id],
  );
  useLive((e) => e.deviceId === id && e.type === 'device.event', events.reload, 1000);
  return (
    <section class="card" aria-labelledby="dev-events">
      <h2 id="dev-events">Events</h2>
      <Show r={events} what="events" isEmpty={(p) => p.items.length === 0} empty="No event recorded.">
        {(p) => (
          <ol class="timeline" data-testid="events">
            {p.items.map((e) => (
              <li key={e.id}>
                <When at={e.at} /> <strong>{e.type}</strong> <EventText e={e} />
              </li>
            ))}
          </ol>
        )}
      </Show>
    </section>
  );
}

/** A target reference reads as the operator's version ("group g1 7"); other values as JSON. */
function eventValue(v: unknown): string {
  if (typeof v === 'string') return v;
  const r = v as { kind?: unknown; id?: unknown; version?: unknown };
  if (r && typeof r === 'object' && typeof r.kind === 'string' && typeof r.id === 'string')
    return `${r.kind} ${r.id}${r.version !== undefined && r.version !== null ? ` ${String(r.version)}` : ''}`;
  return JSON.stringify(v);
}

function EventText({ e }: { e: DeviceEvent }) {
  const { type: _t, at: _a, ...rest } = e.event as Record<string, unknown>;
  const parts = Object.entries(rest)
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `${k}: ${eventValue(v)}`);
  return <span class="event-text">{parts.join(' · ')}</span>;
}
