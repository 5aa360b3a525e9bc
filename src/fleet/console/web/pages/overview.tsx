import type { FleetSummary } from '../../../api/routes/summary.js';
import type { Page as ApiPage, Device } from '../../../api/schemas.js';
import { call } from '../api.js';
import { href } from '../router.js';
import { statusTone } from '../text.js';
import { Empty, Page, Show, StatusBadge, useLive, useResource, When } from '../ui.js';
import { activeRollouts, rolloutName } from './rollouts.js';

const STATUS_ORDER = ['converged', 'applying', 'waiting', 'failed', 'rolled-back', 'rejected', 'unknown'];

export function OverviewPage() {
  const summary = useResource((signal) => call<FleetSummary>('GET', '/summary', { signal }), []);
  const failures = useResource(async (signal) => {
    const pages = await Promise.all(
      ['failed', 'rolled-back', 'rejected'].map((status) =>
        call<ApiPage<Device>>('GET', '/devices', {
          query: { status, sort: 'lastSeen', order: 'desc', limit: 10 },
          signal,
        }),
      ),
    );
    return pages
      .flatMap((p) => p.items)
      .sort((a, b) => (b.lastErrorAt ?? b.lastSeen ?? '').localeCompare(a.lastErrorAt ?? a.lastSeen ?? ''))
      .slice(0, 10);
  }, []);
  const rollouts = useResource((signal) => activeRollouts(signal), []);
  useLive(
    (e) => e.type.startsWith('device.'),
    () => {
      summary.reload();
      failures.reload();
    },
    1500,
  );
  useLive((e) => e.type.startsWith('rollout'), rollouts.reload, 1500);

  return (
    <Page title="Fleet overview">
      <Show
        r={summary}
        what="the fleet summary"
        isEmpty={(s) => s.total === 0 && s.revoked === 0}
        empty={<NoDevices />}
      >
        {(s) => (
          <>
            <div class="tiles">
              <Tile label="Devices" value={s.total} to={href(['devices'])} />
              <Tile label="Online" value={s.online} to={href(['devices'], { online: 'true' })} tone="ok" />
              <Tile
                label="Offline"
                value={s.total - s.online}
                to={href(['devices'], { online: 'false' })}
                tone="muted"
              />
              <Tile
                label="Failed"
                value={count(s.byStatus, 'failed')}
                to={href(['devices'], { status: 'failed' })}
                tone="bad"
              />
              <Tile
                label="Rolled back"
                value={count(s.byStatus, 'rolled-back')}
                to={href(['devices'], { status: 'rolled-back' })}
                tone="warn"
              />
            </div>
            <div class="grid3">
              <Breakdown
                title="By status"
                rows={[...s.byStatus].sort(
                  (a, b) => STATUS_ORDER.indexOf(a.key ?? '') - STATUS_ORDER.indexOf(b.key ?? ''),
                )}
                total={s.total}
                link={(k) => href(['devices'], { status: k })}
                badge
              />
              <Breakdown
                title="By platform"
                rows={s.byPlatform}
                total={s.total}
                link={(k) => href(['devices'], { platform: k })}
              />
              <Breakdown title="By agent version" rows={s.byAgentVersion} total={s.total} />
            </div>
          </>
        )}
      </Show>
      <div class="grid2">
        <section class="card" aria-labelledby="ov-rollouts">
          <h2 id="ov-rollouts">Rollouts running</h2>
          <Show r={rollouts} what="rollouts" isEmpty={(r) => r.length === 0} empty="No rollout is running.">
            {(list) => (
              <ul class="plain">
                {list.map((r) => (
                  <li key={r.id}>
                    <a href={href(['rollouts', String(r.id)])}>{rolloutName(r)}</a>{' '}
                    <StatusBadge status={r.state} /> phase {r.phase} of {r.phases.length}{' '}
                    <progress
                      value={r.done}
                      max={Math.max(1, r.total)}
                      aria-label={`${rolloutName(r)} progress`}
                    />{' '}
                    {r.done}/{r.total}
                  </li>
                ))}
              </ul>
            )}
          </Show>
        </section>
        <section class="card" aria-labelledby="ov-failures">
          <h2 id="ov-failures">Last failures</h2>
          <Show r={failures} what="failures" isEmpty={(f) => f.length === 0} empty="No device is failing.">
            {(list) => (
              <ul class="plain failures">
                {list.map((d) => (
                  <li key={d.id}>
                    <a href={href(['devices', d.id])}>{d.id}</a> <StatusBadge status={d.status} />{' '}
                    <When at={d.lastErrorAt ?? d.lastSeen} />
                    {d.lastError && <p class="reason">{d.lastError}</p>}
                  </li>
                ))}
              </ul>
            )}
          </Show>
        </section>
      </div>
    </Page>
  );
}

function NoDevices() {
  return (
    <Empty>
      No device has joined this fleet yet. Create an enrollment token under{' '}
      <a href={href(['admin', 'enrollment'])}>Administration</a> and run the command it shows on a device.
    </Empty>
  );
}

function count(rows: FleetSummary['byStatus'], key: string): number {
  return rows.find((r) => r.key === key)?.count ?? 0;
}

function Tile({ label, value, to, tone }: { label: string; value: number; to: string; tone?: string }) {
  return (
    <a class={`tile ${tone ? `tile-${tone}` : ''}`} href={to}>
      <span class="tile-value">{value.toLocaleString()}</span>
      <span class="tile-label">{label}</span>
    </a>
  );
}

function Breakdown({
  title,
  rows,
  total,
  link,
  badge,
}: {
  title: string;
  rows: FleetSummary['byStatus'];
  total: number;
  link?: (key: string) => string;
  badge?: boolean;
}) {
  return (
    <section class="card">
      <h2>{title}</h2>
      {rows.length === 0 ? (
        <Empty>Nothing reported.</Empty>
      ) : (
        <table class="breakdown">
          <tbody>
            {rows.map((r) => (
              <tr key={r.key ?? '-'}>
                <th scope="row">
                  {r.key === null ? (
                    <span class="muted">not reported</span>
                  ) : link ? (
                    <a href={link(r.key)}>{badge ? <StatusBadge status={r.key} /> : r.key}</a>
                  ) : (
                    r.key
                  )}
                </th>
                <td class="num">{r.count.toLocaleString()}</td>
                <td class="barcell">
                  <meter
                    class={`tone-${badge && r.key !== null ? statusTone(r.key) : 'accent'}`}
                    min={0}
                    max={Math.max(1, total)}
                    value={r.count}
                    aria-label={`${r.key ?? 'not reported'}: ${r.count}`}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
