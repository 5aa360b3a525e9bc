/**
 * Deploy: a compose file or target JSON, checked by the server (POST /deployments/validate) with its errors
 * shown at the line they name, then published to a group or to devices (ids, or the devices matching
 * labels). Progress comes from GET /deployments/{id}/progress, refreshed by the live stream. A group deploy
 * is a one-phase rollout (docs/rollouts.md): its answer names it, and the page links to it. A staged
 * rollout over the same selection is on the Rollouts page.
 */
import { useMemo, useRef, useState } from 'preact/hooks';
import type { Page as ApiPage, Deployment, Device } from '../../../api/schemas.js';
import { ApiError, call } from '../api.js';
import { type Problem, problemsOf } from '../lineof.js';
import { href } from '../router.js';
import { can, Empty, errorText, notify, Page, StatusBadge, useLive, useResource, useSession } from '../ui.js';

export const SAMPLE = `name: hello
services:
  web:
    image: sample:v1
    restart: always
`;

type ScopeKind = 'group' | 'devices' | 'labels';

interface Progress {
  total: number;
  converged: number;
  pending: number;
  failed: number;
  done: boolean;
  ok: boolean;
  devices: Array<{ deviceId: string; state: string; online: boolean; reported: string; detail?: string }>;
}

export function DeployPage({ query }: { query: URLSearchParams }) {
  const session = useSession();
  const preset = query.get('devices');
  const [kind, setKind] = useState<ScopeKind>(preset ? 'devices' : query.get('group') ? 'group' : 'devices');
  const [group, setGroup] = useState(query.get('group') ?? '');
  const [ids, setIds] = useState(preset ?? '');
  const [labels, setLabels] = useState('');
  const [fileName, setFileName] = useState('compose.yml');
  const [text, setText] = useState(SAMPLE);
  const [problems, setProblems] = useState<Problem[]>([]);
  const [checked, setChecked] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const [published, setPublished] = useState<Deployment[]>([]);
  const editor = useRef<HTMLTextAreaElement>(null);
  const isYaml = /\.ya?ml$/i.test(fileName);

  if (!can(session, 'operator'))
    return (
      <Page title="Deploy">
        <Empty>Your role ({session?.role}) may look but not deploy.</Empty>
      </Page>
    );

  const file = { name: fileName, text };

  /** The scopes to deploy to: one group, or one device each. */
  async function scopes(): Promise<Array<{ device: string } | { group: string }>> {
    if (kind === 'group') {
      if (!group.trim()) throw new Error('name the group');
      return [{ group: group.trim() }];
    }
    let list: string[];
    if (kind === 'devices') list = ids.split(/[\s,]+/).filter(Boolean);
    else {
      const label = labels.split(/[\s,]+/).filter(Boolean);
      if (!label.length) throw new Error('give at least one label key=value');
      const page = await call<ApiPage<Device>>('GET', '/devices', {
        query: { label, limit: 500, revoked: false },
      });
      if (page.next) throw new Error(`more than 500 devices match: use a group or a rollout`);
      list = page.items.map((d) => d.id);
    }
    if (!list.length) throw new Error('no device selected');
    return list.map((device) => ({ device }));
  }

  async function validate(): Promise<boolean> {
    setProblems([]);
    setChecked(undefined);
    try {
      const [first] = await scopes();
      const v = await call<{ images: Array<{ name: string }>; apps: string[]; bytes: number }>(
        'POST',
        '/deployments/validate',
        { body: { ...first, file, allowUnknown: kind === 'devices' } },
      );
      setChecked(
        `Valid: apps ${v.apps.join(', ')}; images ${v.images.map((i) => i.name).join(', ')}; ${v.bytes} bytes signed.`,
      );
      return true;
    } catch (err) {
      const message = err instanceof ApiError ? err.message : errorText(err);
      setProblems(problemsOf(message, text, isYaml));
      return false;
    }
  }

  async function deploy() {
    setBusy(true);
    try {
      if (!(await validate())) return;
      const made: Deployment[] = [];
      for (const scope of await scopes()) {
        try {
          made.push(
            await call<Deployment>('POST', '/deployments', {
              body: { ...scope, file, allowUnknown: kind === 'devices' },
            }),
          );
        } catch (err) {
          notify('error', `${'group' in scope ? `group ${scope.group}` : scope.device}: ${errorText(err)}`);
        }
      }
      setPublished(made);
      if (made.length) notify('ok', `published ${made.map(publishedText).join(', ')}`);
    } catch (err) {
      setProblems([{ line: undefined, message: errorText(err) }]);
    } finally {
      setBusy(false);
    }
  }

  const lineCount = text.split('\n').length;
  const bad = new Set(problems.map((p) => p.line).filter((l): l is number => l !== undefined));

  function jumpTo(line: number) {
    const el = editor.current;
    if (!el) return;
    const lines = text.split('\n');
    const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    el.focus();
    el.setSelectionRange(start, start + (lines[line - 1]?.length ?? 0));
  }

  return (
    <Page title="Deploy">
      <form
        class="deploy"
        onSubmit={(e) => {
          e.preventDefault();
          void deploy();
        }}
      >
        <fieldset class="card">
          <legend>Where</legend>
          <div class="radios">
            {(['devices', 'group', 'labels'] as const).map((k) => (
              <label key={k} class="inline">
                <input type="radio" name="scope" value={k} checked={kind === k} onChange={() => setKind(k)} />{' '}
                {k === 'devices' ? 'Devices (ids)' : k === 'group' ? 'A group' : 'Devices with labels'}
              </label>
            ))}
          </div>
          {kind === 'group' && (
            <label>
              Group
              <input
                name="group"
                value={group}
                required
                onInput={(e) => setGroup((e.target as HTMLInputElement).value)}
              />
            </label>
          )}
          {kind === 'devices' && (
            <label>
              Device ids (comma or space separated)
              <input
                name="devices"
                value={ids}
                required
                onInput={(e) => setIds((e.target as HTMLInputElement).value)}
              />
            </label>
          )}
          {kind === 'labels' && (
            <label>
              Labels (key=value, all must match)
              <input
                name="labels"
                value={labels}
                placeholder="site=berlin tier=edge"
                required
                onInput={(e) => setLabels((e.target as HTMLInputElement).value)}
              />
            </label>
          )}
          <p class="hint">
            Many devices in phases, with thresholds and approval:{' '}
            <a href={href(['rollouts'], { create: '1' })}>start a rollout</a>.
          </p>
        </fieldset>
        <fieldset class="card">
          <legend>What</legend>
          <label>
            File name (decides the format: .yml/.yaml is compose, else target JSON)
            <input value={fileName} onInput={(e) => setFileName((e.target as HTMLInputElement).value)} />
          </label>
          <div class="editor">
            <ol class="gutter" aria-hidden="true">
              {Array.from({ length: lineCount }, (_, i) => (
                <li key={i} class={bad.has(i + 1) ? 'bad' : ''}>
                  {i + 1}
                </li>
              ))}
            </ol>
            <textarea
              ref={editor}
              aria-label="Compose file or target JSON"
              spellcheck={false}
              rows={Math.max(12, lineCount + 1)}
              value={text}
              onInput={(e) => {
                setText((e.target as HTMLTextAreaElement).value);
                setChecked(undefined);
              }}
            />
          </div>
          {problems.length > 0 && (
            <div role="alert" aria-label="Problems">
              <ul class="problems">
                {problems.map((p, i) => (
                  <li key={i}>
                    {p.line !== undefined ? (
                      <button type="button" class="link" onClick={() => jumpTo(p.line!)}>
                        line {p.line}
                      </button>
                    ) : null}{' '}
                    {p.message}
                  </li>
                ))}
              </ul>
            </div>
          )}
          {checked && (
            <p class="state state-ok" role="status">
              {checked}
            </p>
          )}
        </fieldset>
        <div class="form-actions">
          <button type="button" onClick={() => void validate()} disabled={busy}>
            Validate
          </button>
          <button type="submit" class="primary" disabled={busy}>
            {busy ? 'Deploying…' : 'Deploy'}
          </button>
        </div>
      </form>
      {published.map((d) => (
        <DeploymentProgressCard key={d.id} d={d} />
      ))}
    </Page>
  );
}

/** `group lab 3 as rollout 7` for a group deploy (a one-phase rollout), else the deployment's version. */
function publishedText(d: Deployment): string {
  return d.rolloutId !== undefined ? `${d.text} as rollout ${d.rolloutId}` : d.text;
}

function DeploymentProgressCard({ d }: { d: Deployment }) {
  const progress = useResource(
    (signal) => call<Progress>('GET', `/deployments/${d.id}/progress`, { signal }),
    [d.id],
  );
  useLive((e) => e.type === 'deployment.progress' || e.type === 'device.state', progress.reload, 1000);
  const p = progress.data;
  const stateOf = useMemo(() => p?.devices.slice(0, 50) ?? [], [p]);
  return (
    <section class="card" aria-label={`progress of ${d.scope.id}: ${d.text}`}>
      <h2>
        {d.scope.kind === 'device' ? `${d.scope.id}: ` : ''}
        {d.text} {p && <StatusBadge status={p.done ? (p.ok ? 'converged' : 'failed') : 'applying'} />}
      </h2>
      {d.rolloutId !== undefined && (
        <p>
          Published as{' '}
          <a href={href(['rollouts', String(d.rolloutId)])} data-testid="deploy-rollout">
            rollout {d.rolloutId}
          </a>{' '}
          (one phase, every device of the group: its page follows each device).
        </p>
      )}
      {!p ? (
        progress.error ? (
          <p class="state state-error">{errorText(progress.error)}</p>
        ) : (
          <p class="state">Loading progress…</p>
        )
      ) : (
        <>
          <p>
            <progress value={p.converged} max={Math.max(1, p.total)} aria-label="converged" /> {p.converged}{' '}
            of {p.total} converged, {p.pending} pending, {p.failed} failed
          </p>
          <ul class="plain">
            {stateOf.map((x) => (
              <li key={x.deviceId}>
                <a href={href(['devices', x.deviceId])}>{x.deviceId}</a> <StatusBadge status={x.state} />{' '}
                {x.reported} {x.detail && <span class="reason">{x.detail}</span>}
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}
