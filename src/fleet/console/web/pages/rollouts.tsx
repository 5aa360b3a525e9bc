/**
 * Staged rollouts (issue 12's API, /api/v1/rollouts): the list, one rollout with a bar per phase and its
 * devices, the operator's pause / resume / approve / abort, and a form that creates one (selection, phases,
 * thresholds, approval) after the server's pre-check. A server without the rollout API answers 404 for the
 * list: the page says so instead of failing. Live: `rollout`, `rollout.progress` and `rollout.device` events.
 */
import { useState } from 'preact/hooks';
import type { RolloutDeviceWire, RolloutPreview, RolloutWire } from '../../../api/schemas.js';
import { ApiError, call, seg } from '../api.js';
import { type Problem, problemsOf } from '../lineof.js';
import { go, href } from '../router.js';
import {
  act,
  ConfirmButton,
  can,
  Empty,
  errorText,
  Page,
  Show,
  StatusBadge,
  Table,
  useLive,
  useResource,
  useSession,
  When,
} from '../ui.js';
import { SAMPLE } from './deploy.js';

type Rollout = RolloutWire;
interface RolloutList {
  items: Rollout[];
  total: number | null;
  next: string | null;
}

/** Rollouts that are not finished; [] where the server has no rollout API. */
export async function activeRollouts(signal: AbortSignal): Promise<Rollout[]> {
  try {
    const page = await call<RolloutList>('GET', '/rollouts', { query: { active: true }, signal });
    return page.items;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return [];
    throw err;
  }
}

export function rolloutName(r: Pick<Rollout, 'id' | 'name'>): string {
  return r.name ? `${r.name} (#${r.id})` : `rollout #${r.id}`;
}

function selectionText(s: Rollout['selection']): string {
  if (s.kind === 'group') return `group ${s.group ?? ''}`;
  if (s.kind === 'selector') return `labels ${s.selector ?? ''}`;
  if (s.kind === 'devices') return `${s.devices ?? 0} devices by id`;
  return 'every device';
}

const isRolloutEvent = (e: { type: string }) => e.type.startsWith('rollout');

/**
 * One bar, segments in proportion: converged, failed, superseded, pending, queued. Widths go through the
 * CSSOM (preact's style object), which the CSP allows; the numbers are also in the text beside it.
 */
export function StackBar({ label, parts }: { label: string; parts: Array<{ kind: string; n: number }> }) {
  const total = parts.reduce((s, p) => s + p.n, 0);
  return (
    <span
      class="stack"
      role="img"
      aria-label={`${label}: ${parts.map((p) => `${p.n} ${p.kind}`).join(', ')}`}
    >
      {parts
        .filter((p) => p.n > 0)
        .map((p) => (
          <span
            key={p.kind}
            class={`stack-${p.kind}`}
            style={{ flexGrow: String(p.n / Math.max(1, total)) }}
          />
        ))}
    </span>
  );
}

function phaseParts(p: Rollout['phases'][number]) {
  return [
    { kind: 'converged', n: p.converged },
    { kind: 'failed', n: p.failed },
    { kind: 'superseded', n: p.superseded },
    { kind: 'pending', n: p.pending },
    { kind: 'queued', n: p.queued },
  ];
}

export function RolloutsPage({ query }: { query: URLSearchParams }) {
  const session = useSession();
  const creating = query.get('create') === '1' && can(session, 'operator');
  const state = query.get('state') ?? '';
  const list = useResource(
    (signal) =>
      call<RolloutList>('GET', '/rollouts', {
        query: { limit: 50, state: state || undefined },
        signal,
      }).catch((err) => {
        if (err instanceof ApiError && err.status === 404) return null;
        throw err;
      }),
    [state],
  );
  useLive(isRolloutEvent, list.reload, 1000);
  return (
    <Page
      title="Rollouts"
      actions={
        can(session, 'operator') && !creating ? (
          <a class="button primary" href={href(['rollouts'], { create: '1' })}>
            New rollout
          </a>
        ) : undefined
      }
    >
      {creating && <CreateRollout />}
      <section class="card" aria-labelledby="rollouts-list">
        <h2 id="rollouts-list">All rollouts</h2>
        <form class="filters inline-form" onSubmit={(e) => e.preventDefault()}>
          <label>
            State
            <select
              value={state}
              onChange={(e) =>
                go(['rollouts'], { state: (e.target as HTMLSelectElement).value || undefined }, true)
              }
            >
              <option value="">any</option>
              {['draft', 'running', 'waiting-approval', 'paused', 'succeeded', 'aborted', 'superseded'].map(
                (s) => (
                  <option key={s} value={s}>
                    {s}
                  </option>
                ),
              )}
            </select>
          </label>
        </form>
        <Show r={list} what="rollouts">
          {(l) =>
            l === null ? (
              <Empty>This fleet server has no rollout API: deploy to a group or to devices instead.</Empty>
            ) : l.items.length === 0 ? (
              <Empty>
                No rollout{state ? ` in state ${state}` : ''} yet.
                {can(session, 'operator') ? ' Start one with “New rollout”.' : ''}
              </Empty>
            ) : (
              <Table
                testId="rollouts-table"
                rows={l.items}
                rowKey={(r) => r.id}
                columns={[
                  {
                    header: 'Rollout',
                    cell: (r) => <a href={href(['rollouts', String(r.id)])}>{rolloutName(r)}</a>,
                  },
                  { header: 'State', cell: (r) => <StatusBadge status={r.state} /> },
                  { header: 'Devices', cell: (r) => selectionText(r.selection) },
                  { header: 'Phase', cell: (r) => `${r.phase} of ${r.phases.length}` },
                  {
                    header: 'Progress',
                    cell: (r) => (
                      <>
                        <StackBar
                          label={`${rolloutName(r)} progress`}
                          parts={[
                            { kind: 'converged', n: r.converged },
                            { kind: 'failed', n: r.failed },
                            { kind: 'pending', n: r.pending },
                            { kind: 'queued', n: Math.max(0, r.total - r.done - r.pending) },
                          ]}
                        />{' '}
                        {r.done}/{r.total}
                      </>
                    ),
                  },
                  {
                    header: 'Created',
                    cell: (r) => (
                      <>
                        <When at={r.createdAt} /> {r.createdBy && <span class="muted">by {r.createdBy}</span>}
                      </>
                    ),
                  },
                ]}
              />
            )
          }
        </Show>
      </section>
    </Page>
  );
}

export function RolloutPage({ id }: { id: string }) {
  const session = useSession();
  const rollout = useResource((signal) => call<Rollout>('GET', `/rollouts/${seg(id)}`, { signal }), [id]);
  const [outcome, setOutcome] = useState('');
  const devices = useResource(
    (signal) =>
      call<{ items: RolloutDeviceWire[]; total: number | null }>('GET', `/rollouts/${seg(id)}/devices`, {
        query: { limit: 100, outcome: outcome || undefined },
        signal,
      }),
    [id, outcome],
  );
  const mine = (e: { type: string; rolloutId?: unknown }) => isRolloutEvent(e) && String(e.rolloutId) === id;
  useLive(mine, rollout.reload, 500);
  useLive(mine, devices.reload, 1500);
  const r = rollout.data;
  const operator = can(session, 'operator');
  const post = (verb: string, body?: unknown) =>
    act(`${verb} ${r ? rolloutName(r) : id}`, () =>
      call('POST', `/rollouts/${seg(id)}/${verb}`, body === undefined ? {} : { body }),
    ).then(() => rollout.reload());
  return (
    <Page
      title={r?.name ? `Rollout ${r.name} (#${id})` : `Rollout #${id}`}
      actions={
        r && operator ? (
          <>
            {r.state === 'draft' && (
              <button type="button" class="primary" onClick={() => void post('start')}>
                Start
              </button>
            )}
            {r.state === 'running' && (
              <button type="button" onClick={() => void post('pause')}>
                Pause
              </button>
            )}
            {r.state === 'paused' && (
              <button type="button" class="primary" onClick={() => void post('resume')}>
                Resume
              </button>
            )}
            {r.state === 'waiting-approval' && (
              <button type="button" class="primary" onClick={() => void post('approve')}>
                Approve next phase
              </button>
            )}
            {['draft', 'running', 'paused', 'waiting-approval'].includes(r.state) && (
              <ConfirmButton
                label="Abort"
                question={r.policy.rollback ? 'Abort and roll moved devices back?' : 'Abort?'}
                danger
                onConfirm={() =>
                  post('abort', { reason: `aborted from the console by ${session?.user ?? '?'}` })
                }
              />
            )}
          </>
        ) : undefined
      }
    >
      <p>
        <a href={href(['rollouts'])}>← All rollouts</a>
      </p>
      <Show r={rollout} what="the rollout">
        {(r) => (
          <>
            <div class="grid2">
              <section class="card" aria-labelledby="ro-summary">
                <h2 id="ro-summary">Summary</h2>
                <dl class="kv">
                  <dt>State</dt>
                  <dd>
                    <StatusBadge status={r.state} /> {r.reason && <span class="reason">{r.reason}</span>}
                  </dd>
                  <dt>Devices</dt>
                  <dd>
                    {selectionText(r.selection)}: {r.total}
                    {r.excluded > 0 && (
                      <span class="muted"> ({r.excluded} left out: another target applies)</span>
                    )}
                  </dd>
                  <dt>Target</dt>
                  <dd>
                    apps {r.target.apps.join(', ') || '—'}; images{' '}
                    {r.target.images.map((i) => i.name).join(', ')}
                  </dd>
                  <dt>Progress</dt>
                  <dd>
                    {r.converged} converged, {r.failed} failed, {r.pending} pending of {r.total}
                  </dd>
                  {r.rollback.state !== 'none' && (
                    <>
                      <dt>Rollback</dt>
                      <dd>
                        {r.rollback.state}: {r.rollback.returned} of {r.rollback.moved} back on their previous
                        target
                      </dd>
                    </>
                  )}
                  <dt>Created</dt>
                  <dd>
                    <When at={r.createdAt} /> {r.createdBy && `by ${r.createdBy}`}
                  </dd>
                  {r.finishedAt && (
                    <>
                      <dt>Finished</dt>
                      <dd>
                        <When at={r.finishedAt} />
                      </dd>
                    </>
                  )}
                </dl>
              </section>
              <section class="card" aria-labelledby="ro-policy">
                <h2 id="ro-policy">Policy</h2>
                <dl class="kv">
                  <dt>Next phase when</dt>
                  <dd>
                    ≥ {r.policy.successThreshold} % converged, ≤ {r.policy.maxPending} % pending
                  </dd>
                  <dt>Abort when</dt>
                  <dd>more than {r.policy.errorThreshold} % failed so far</dd>
                  <dt>Soak</dt>
                  <dd>{r.policy.soakMs ? `${Math.round(r.policy.soakMs / 1000)} s` : 'none'}</dd>
                  <dt>Phase timeout</dt>
                  <dd>
                    {r.policy.phaseTimeoutMs === null
                      ? 'none'
                      : `${Math.round(r.policy.phaseTimeoutMs / 1000)} s`}
                  </dd>
                  <dt>Approval</dt>
                  <dd>{r.policy.approval ? 'each phase after the first' : 'no'}</dd>
                  <dt>On abort</dt>
                  <dd>{r.policy.rollback ? 'roll moved devices back' : 'leave them'}</dd>
                </dl>
              </section>
            </div>
            <section class="card" aria-labelledby="ro-phases">
              <h2 id="ro-phases">Phases</h2>
              <Table
                class="phases"
                testId="phases"
                rows={r.phases}
                rowKey={(p) => p.index}
                rowClass={(p) => (p.index === r.phase ? 'current' : '')}
                columns={[
                  {
                    header: 'Phase',
                    rowHeader: true,
                    cell: (p) => (
                      <>
                        {p.index} <span class="muted">({p.spec})</span>
                      </>
                    ),
                  },
                  { header: 'Size', cell: (p) => p.size },
                  { header: 'State', cell: (p) => <StatusBadge status={p.state} /> },
                  {
                    header: 'Devices',
                    cellClass: () => 'barcell',
                    cell: (p) => <StackBar label={`phase ${p.index}`} parts={phaseParts(p)} />,
                  },
                  { header: 'Converged', class: 'num', cell: (p) => p.converged },
                  { header: 'Failed', class: 'num', cell: (p) => p.failed },
                  {
                    header: 'Pending',
                    class: 'num',
                    cell: (p) => (
                      <>
                        {p.pending}
                        {p.offline > 0 && <span class="muted"> ({p.offline} offline)</span>}
                      </>
                    ),
                  },
                ]}
              />
            </section>
          </>
        )}
      </Show>
      <section class="card" aria-labelledby="ro-devices">
        <h2 id="ro-devices">Devices</h2>
        <label class="inline">
          Outcome{' '}
          <select value={outcome} onChange={(e) => setOutcome((e.target as HTMLSelectElement).value)}>
            <option value="">any</option>
            {['queued', 'pending', 'converged', 'failed', 'superseded'].map((o) => (
              <option key={o} value={o}>
                {o}
              </option>
            ))}
          </select>
        </label>
        <Show r={devices} what="devices" isEmpty={(d) => d.items.length === 0} empty="No device here.">
          {(d) => (
            <Table
              testId="rollout-devices"
              rows={d.items}
              rowKey={(x) => x.deviceId}
              columns={[
                {
                  header: 'Device',
                  cell: (x) => (
                    <>
                      <a href={href(['devices', x.deviceId])}>{x.deviceId}</a>
                      {x.canary && <span class="tag">canary</span>}
                    </>
                  ),
                },
                { header: 'Phase', cell: (x) => x.phase },
                {
                  header: 'Outcome',
                  cell: (x) => (
                    <>
                      <StatusBadge status={x.outcome} />
                      {x.rollback.state !== 'none' && <span class="muted"> rollback {x.rollback.state}</span>}
                    </>
                  ),
                },
                { header: 'Sent', cell: (x) => <When at={x.publishedAt} /> },
                {
                  header: 'Detail',
                  cellClass: (x) => (x.outcome === 'failed' ? 'reason' : 'muted'),
                  cell: (x) => x.detail ?? '',
                },
              ]}
            />
          )}
        </Show>
      </section>
    </Page>
  );
}

type SelectionKind = 'group' | 'selector' | 'devices' | 'all';

/** The create form: what (a compose file or target JSON), which devices, phases and thresholds. */
function CreateRollout() {
  const [name, setName] = useState('');
  const [kind, setKind] = useState<SelectionKind>('group');
  const [group, setGroup] = useState('');
  const [selector, setSelector] = useState('');
  const [ids, setIds] = useState('');
  const [phases, setPhases] = useState('1, 10%, 100%');
  const [success, setSuccess] = useState('100');
  const [errors, setErrors] = useState('0');
  const [soak, setSoak] = useState('0');
  const [approval, setApproval] = useState(false);
  const [rollback, setRollback] = useState(true);
  const [fileName, setFileName] = useState('compose.yml');
  const [text, setText] = useState(SAMPLE);
  const [problems, setProblems] = useState<Problem[]>([]);
  const [preview, setPreview] = useState<RolloutPreview | undefined>();
  const [busy, setBusy] = useState(false);

  function body(): Record<string, unknown> {
    const sel =
      kind === 'group'
        ? { group: group.trim() }
        : kind === 'selector'
          ? { selector: selector.trim() }
          : kind === 'devices'
            ? { devices: ids.split(/[\s,]+/).filter(Boolean) }
            : { all: true };
    const phaseList = phases
      .split(/[\s,]+/)
      .filter(Boolean)
      .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
    return {
      ...(name.trim() ? { name: name.trim() } : {}),
      file: { name: fileName, text },
      ...sel,
      phases: phaseList,
      successThreshold: Number(success),
      errorThreshold: Number(errors),
      soakMs: Math.round(Number(soak) * 1000),
      approval,
      rollback,
    };
  }

  function fail(err: unknown) {
    const message = err instanceof ApiError ? err.message : errorText(err);
    setProblems(problemsOf(message, text, /\.ya?ml$/i.test(fileName)));
  }

  async function validate(): Promise<boolean> {
    setProblems([]);
    setPreview(undefined);
    try {
      setPreview(await call<RolloutPreview>('POST', '/rollouts/validate', { body: body() }));
      return true;
    } catch (err) {
      fail(err);
      return false;
    }
  }

  async function create() {
    setBusy(true);
    try {
      if (!(await validate())) return;
      const r = await call<Rollout>('POST', '/rollouts', { body: body() });
      go(['rollouts', String(r.id)]);
    } catch (err) {
      fail(err);
    } finally {
      setBusy(false);
    }
  }

  const text2 = (set: (v: string) => void) => (e: Event) => set((e.target as HTMLInputElement).value);
  return (
    <form
      class="card deploy"
      aria-labelledby="ro-create"
      onSubmit={(e) => {
        e.preventDefault();
        void create();
      }}
    >
      <h2 id="ro-create">New rollout</h2>
      <label>
        Name (optional)
        <input value={name} onInput={text2(setName)} />
      </label>
      <fieldset>
        <legend>Devices</legend>
        <div class="radios">
          {(['group', 'selector', 'devices', 'all'] as const).map((k) => (
            <label key={k} class="inline">
              <input
                type="radio"
                name="selection"
                value={k}
                checked={kind === k}
                onChange={() => setKind(k)}
              />{' '}
              {k === 'group'
                ? 'A group'
                : k === 'selector'
                  ? 'By labels'
                  : k === 'devices'
                    ? 'Device ids'
                    : 'Every device'}
            </label>
          ))}
        </div>
        {kind === 'group' && (
          <label>
            Group
            <input value={group} required onInput={text2(setGroup)} />
          </label>
        )}
        {kind === 'selector' && (
          <label>
            Label selector
            <input
              value={selector}
              required
              placeholder="site=berlin,tier!=lab"
              onInput={text2(setSelector)}
            />
          </label>
        )}
        {kind === 'devices' && (
          <label>
            Device ids (comma or space separated)
            <input value={ids} required onInput={text2(setIds)} />
          </label>
        )}
      </fieldset>
      <fieldset>
        <legend>Phases and thresholds</legend>
        <label>
          Phases (cumulative counts or percentages, the last 100%)
          <input value={phases} required onInput={text2(setPhases)} />
        </label>
        <div class="inline-form">
          <label>
            Success threshold %
            <input type="number" min={0} max={100} value={success} onInput={text2(setSuccess)} />
          </label>
          <label>
            Error threshold %
            <input type="number" min={0} max={100} value={errors} onInput={text2(setErrors)} />
          </label>
          <label>
            Soak (seconds)
            <input type="number" min={0} value={soak} onInput={text2(setSoak)} />
          </label>
        </div>
        <label class="inline">
          <input
            type="checkbox"
            checked={approval}
            onChange={(e) => setApproval((e.target as HTMLInputElement).checked)}
          />{' '}
          An operator approves each phase after the first
        </label>
        <label class="inline">
          <input
            type="checkbox"
            checked={rollback}
            onChange={(e) => setRollback((e.target as HTMLInputElement).checked)}
          />{' '}
          On abort, roll moved devices back
        </label>
      </fieldset>
      <fieldset>
        <legend>What</legend>
        <label>
          File name (.yml/.yaml is compose, else target JSON)
          <input value={fileName} onInput={text2(setFileName)} />
        </label>
        <textarea
          aria-label="Rollout compose file or target JSON"
          spellcheck={false}
          rows={Math.max(8, text.split('\n').length + 1)}
          value={text}
          onInput={(e) => {
            setText((e.target as HTMLTextAreaElement).value);
            setPreview(undefined);
          }}
        />
      </fieldset>
      {problems.length > 0 && (
        <div role="alert" aria-label="Problems">
          <ul class="problems">
            {problems.map((p, i) => (
              <li key={i}>
                {p.line !== undefined ? `line ${p.line}: ` : ''}
                {p.message}
              </li>
            ))}
          </ul>
        </div>
      )}
      {preview && (
        <p class="state state-ok" role="status">
          {preview.selection}: {preview.devices} devices in phases of{' '}
          {preview.phases.map((p) => p.size).join(' / ')}
          {preview.excludedTotal > 0 ? `; ${preview.excludedTotal} left out` : ''}; apps{' '}
          {preview.apps.join(', ')}.
        </p>
      )}
      <div class="form-actions">
        <a class="button" href={href(['rollouts'])}>
          Cancel
        </a>
        <button type="button" onClick={() => void validate()} disabled={busy}>
          Check
        </button>
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Starting…' : 'Start rollout'}
        </button>
      </div>
    </form>
  );
}
