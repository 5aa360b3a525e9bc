/**
 * Administration: users and roles (admin), API tokens (everyone their own; admins all), enrollment tokens
 * (operator) with the command a device runs, and the audit log (admin). A new secret is shown once, in a
 * box the page forgets when it is dismissed.
 */
import { useState } from 'preact/hooks';
import type { ApiToken, AuditEntry, User } from '../../../api/schemas.js';
import type { Role } from '../../../identity/roles.js';
import { call, seg } from '../api.js';
import { href } from '../router.js';
import {
  act,
  ConfirmButton,
  can,
  errorText,
  Page,
  Show,
  StatusBadge,
  Table,
  useResource,
  useSession,
  When,
} from '../ui.js';

const ROLES: Role[] = ['viewer', 'operator', 'admin'];

export function AdminPage({ tab }: { tab: string | undefined }) {
  const session = useSession();
  const tabs: Array<[string, string, boolean]> = [
    ['tokens', 'API tokens', true],
    ['enrollment', 'Enrollment tokens', can(session, 'operator')],
    ['users', 'Users', can(session, 'admin')],
    ['audit', 'Audit log', can(session, 'admin')],
  ];
  const shown = tabs.filter((t) => t[2]);
  const current = shown.find((t) => t[0] === tab)?.[0] ?? shown[0]![0];
  return (
    <Page title="Administration">
      <nav class="tabs" aria-label="Administration">
        {shown.map(([k, label]) => (
          <a key={k} href={href(['admin', k])} aria-current={k === current ? 'page' : undefined}>
            {label}
          </a>
        ))}
      </nav>
      {current === 'tokens' && <Tokens />}
      {current === 'enrollment' && <Enrollment />}
      {current === 'users' && <Users />}
      {current === 'audit' && <Audit />}
    </Page>
  );
}

/** A secret shown this once. */
function Secret({
  title,
  value,
  extra,
  onDone,
}: {
  title: string;
  value: string;
  extra?: string;
  onDone: () => void;
}) {
  const [copied, setCopied] = useState(false);
  return (
    <div class="card secret" role="alert">
      <h3>{title}</h3>
      <p>Copy it now: it is shown this once and never again.</p>
      <pre class="secret-value" data-testid="secret">
        {value}
      </pre>
      {extra && <pre class="secret-value">{extra}</pre>}
      <button
        type="button"
        onClick={() =>
          navigator.clipboard?.writeText(extra ?? value).then(
            () => setCopied(true),
            () => setCopied(false),
          )
        }
      >
        {copied ? 'Copied' : 'Copy'}
      </button>{' '}
      <button type="button" onClick={onDone}>
        Done
      </button>
    </div>
  );
}

function Tokens() {
  const session = useSession();
  const tokens = useResource((signal) => call<{ items: ApiToken[] }>('GET', '/tokens', { signal }), []);
  const [name, setName] = useState('');
  const [role, setRole] = useState<Role>('viewer');
  const [days, setDays] = useState('30');
  const [secret, setSecret] = useState<string | undefined>();
  const [error, setError] = useState<string | undefined>();
  const allowed = ROLES.filter((r) => can(session, r));
  return (
    <section aria-label="API tokens">
      {secret && <Secret title="New API token" value={secret} onDone={() => setSecret(undefined)} />}
      <form
        class="card inline-form"
        onSubmit={async (e) => {
          e.preventDefault();
          setError(undefined);
          try {
            const expiresAt = days
              ? new Date(Date.now() + Number(days) * 86_400_000).toISOString()
              : undefined;
            const made = await call<{ token: string }>('POST', '/tokens', {
              body: { name, role, ...(expiresAt ? { expiresAt } : {}) },
            });
            setSecret(made.token);
            setName('');
            tokens.reload();
          } catch (err) {
            setError(errorText(err));
          }
        }}
      >
        <h2>New API token</h2>
        <label>
          Name
          <input value={name} required onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Role
          <select value={role} onChange={(e) => setRole((e.target as HTMLSelectElement).value as Role)}>
            {allowed.map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </select>
        </label>
        <label>
          Expires after (days, empty: never)
          <input
            type="number"
            min="1"
            max="3650"
            value={days}
            onInput={(e) => setDays((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit" class="primary">
          Create token
        </button>
        {error && (
          <p class="state state-error" role="alert">
            {error}
          </p>
        )}
      </form>
      <Show r={tokens} what="API tokens" isEmpty={(t) => t.items.length === 0} empty="No API token.">
        {(t) => (
          <Table
            rows={t.items}
            rowKey={(k) => k.id}
            columns={[
              { header: 'Name', cell: (k) => k.name },
              { header: 'Id', cell: (k) => <code>{k.id}</code> },
              { header: 'Role', cell: (k) => k.role },
              { header: 'User', cell: (k) => k.user ?? 'server' },
              { header: 'State', cell: (k) => <StatusBadge status={k.state} /> },
              { header: 'Last used', cell: (k) => <When at={k.lastUsedAt} /> },
              {
                header: 'Expires',
                cell: (k) => (k.expiresAt ? new Date(k.expiresAt).toLocaleDateString() : 'never'),
              },
              {
                header: 'Actions',
                hiddenHeader: true,
                cell: (k) =>
                  k.state === 'active' && (
                    <ConfirmButton
                      label="Revoke"
                      question={`Revoke token ${k.name}?`}
                      danger
                      onConfirm={() =>
                        act(`token ${k.name} revoked`, () => call('DELETE', `/tokens/${seg(k.id)}`)).then(
                          tokens.reload,
                        )
                      }
                    />
                  ),
              },
            ]}
          />
        )}
      </Show>
    </section>
  );
}

interface EnrollmentToken {
  id: string;
  groups: string[];
  labels: Record<string, string>;
  expiresAt: string;
  maxUses: number | null;
  uses: number;
  createdAt: string;
  createdBy: string | null;
  revokedAt: string | null;
}

export function enrollCommand(origin: string, token: string): string {
  return `berth agent --enroll ${origin} --token ${token} --device-id "$(hostname)"`;
}

function Enrollment() {
  const list = useResource(
    (signal) => call<{ items: EnrollmentToken[] }>('GET', '/enrollment-tokens', { signal }),
    [],
  );
  const [groups, setGroups] = useState('');
  const [labels, setLabels] = useState('');
  const [hours, setHours] = useState('24');
  const [uses, setUses] = useState('');
  const [made, setMade] = useState<string | undefined>();
  const [error, setError] = useState<string | undefined>();
  return (
    <section aria-label="Enrollment tokens">
      {made && (
        <Secret
          title="New enrollment token"
          value={made}
          extra={enrollCommand(location.origin, made)}
          onDone={() => setMade(undefined)}
        />
      )}
      <form
        class="card inline-form"
        onSubmit={async (e) => {
          e.preventDefault();
          setError(undefined);
          try {
            const labelMap: Record<string, string> = {};
            for (const w of labels.split(/[\s,]+/).filter(Boolean)) {
              const i = w.indexOf('=');
              if (i <= 0) throw new Error(`label ${w}: expected key=value`);
              labelMap[w.slice(0, i)] = w.slice(i + 1);
            }
            const r = await call<{ token: string }>('POST', '/enrollment-tokens', {
              body: {
                groups: groups.split(/[\s,]+/).filter(Boolean),
                labels: labelMap,
                expiresInMs: Math.round(Number(hours) * 3600_000),
                ...(uses ? { maxUses: Number(uses) } : {}),
              },
            });
            setMade(r.token);
            list.reload();
          } catch (err) {
            setError(errorText(err));
          }
        }}
      >
        <h2>New enrollment token</h2>
        <label>
          Groups
          <input
            value={groups}
            placeholder="berlin edge"
            onInput={(e) => setGroups((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Labels
          <input
            value={labels}
            placeholder="site=berlin"
            onInput={(e) => setLabels((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Valid for (hours)
          <input
            type="number"
            min="1"
            max="8760"
            required
            value={hours}
            onInput={(e) => setHours((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Uses (empty: any)
          <input
            type="number"
            min="1"
            value={uses}
            onInput={(e) => setUses((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit" class="primary">
          Create
        </button>
        {error && (
          <p class="state state-error" role="alert">
            {error}
          </p>
        )}
      </form>
      <Show
        r={list}
        what="enrollment tokens"
        isEmpty={(l) => l.items.length === 0}
        empty="No enrollment token."
      >
        {(l) => (
          <Table
            rows={l.items}
            rowKey={(t) => t.id}
            columns={[
              { header: 'Id', cell: (t) => <code>{t.id}</code> },
              { header: 'Groups', cell: (t) => t.groups.join(', ') || '—' },
              {
                header: 'Labels',
                cell: (t) =>
                  Object.entries(t.labels).map(([k, v]) => (
                    <span class="label" key={k}>
                      {k}={v}
                    </span>
                  )),
              },
              {
                header: 'Uses',
                class: 'num',
                cell: (t) => `${t.uses}${t.maxUses !== null ? ` / ${t.maxUses}` : ''}`,
              },
              {
                header: 'Expires',
                cell: (t) => (t.revokedAt ? <StatusBadge status="revoked" /> : <When at={t.expiresAt} />),
              },
              { header: 'Made by', cell: (t) => t.createdBy ?? '—' },
              {
                header: 'Actions',
                hiddenHeader: true,
                cell: (t) =>
                  !t.revokedAt && (
                    <ConfirmButton
                      label="Revoke"
                      question={`Revoke enrollment token ${t.id}?`}
                      danger
                      onConfirm={() =>
                        act(`enrollment token ${t.id} revoked`, () =>
                          call('DELETE', `/enrollment-tokens/${seg(t.id)}`),
                        ).then(list.reload)
                      }
                    />
                  ),
              },
            ]}
          />
        )}
      </Show>
    </section>
  );
}

function Users() {
  const session = useSession();
  const users = useResource((signal) => call<{ items: User[] }>('GET', '/users', { signal }), []);
  const [name, setName] = useState('');
  const [role, setRole] = useState<Role>('viewer');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | undefined>();
  return (
    <section aria-label="Users">
      <form
        class="card inline-form"
        onSubmit={async (e) => {
          e.preventDefault();
          setError(undefined);
          try {
            await call('POST', '/users', { body: { name, role, password } });
            setName('');
            setPassword('');
            users.reload();
          } catch (err) {
            setError(errorText(err));
          }
        }}
      >
        <h2>New user</h2>
        <label>
          Name
          <input
            value={name}
            required
            autocomplete="off"
            onInput={(e) => setName((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Role
          <select value={role} onChange={(e) => setRole((e.target as HTMLSelectElement).value as Role)}>
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </select>
        </label>
        <label>
          Password (8 or more characters)
          <input
            type="password"
            autocomplete="new-password"
            minLength={8}
            required
            value={password}
            onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit" class="primary">
          Add user
        </button>
        {error && (
          <p class="state state-error" role="alert">
            {error}
          </p>
        )}
      </form>
      <Show r={users} what="users" isEmpty={(u) => u.items.length === 0} empty="No user.">
        {(u) => (
          <Table
            rows={u.items}
            rowKey={(x) => x.name}
            columns={[
              { header: 'Name', cell: (x) => x.name },
              {
                header: 'Role',
                cell: (x) => (
                  <select
                    aria-label={`role of ${x.name}`}
                    value={x.role}
                    disabled={x.name === session?.user}
                    onChange={(e) =>
                      act(`${x.name} is now ${(e.target as HTMLSelectElement).value}`, () =>
                        call('PATCH', `/users/${seg(x.name)}`, {
                          body: { role: (e.target as HTMLSelectElement).value },
                        }),
                      ).then(users.reload)
                    }
                  >
                    {ROLES.map((r) => (
                      <option key={r} value={r}>
                        {r}
                      </option>
                    ))}
                  </select>
                ),
              },
              { header: 'Since', cell: (x) => <When at={x.createdAt} /> },
              {
                header: 'Actions',
                hiddenHeader: true,
                cell: (x) =>
                  x.name !== session?.user && (
                    <ConfirmButton
                      label="Delete"
                      question={`Delete user ${x.name} and their tokens?`}
                      danger
                      onConfirm={() =>
                        act(`${x.name} deleted`, () => call('DELETE', `/users/${seg(x.name)}`)).then(
                          users.reload,
                        )
                      }
                    />
                  ),
              },
            ]}
          />
        )}
      </Show>
    </section>
  );
}

function Audit() {
  const [actor, setActor] = useState('');
  const [action, setAction] = useState('');
  const [failed, setFailed] = useState(false);
  const [cursors, setCursors] = useState<string[]>([]);
  const [cursor, setCursor] = useState<string | undefined>();
  const [applied, setApplied] = useState({ actor: '', action: '', failed: false });
  const page = useResource(
    (signal) =>
      call<{ items: AuditEntry[]; next: string | null }>('GET', '/audit', {
        query: { ...applied, failed: applied.failed ? true : undefined, limit: 50, cursor },
        signal,
      }),
    [applied, cursor],
  );
  return (
    <section aria-label="Audit log">
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          setCursors([]);
          setCursor(undefined);
          setApplied({ actor, action, failed });
        }}
      >
        <label>
          Actor
          <input
            value={actor}
            placeholder="user:alice"
            onInput={(e) => setActor((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Action
          <input
            value={action}
            placeholder="deployment.create"
            onInput={(e) => setAction((e.target as HTMLInputElement).value)}
          />
        </label>
        <label class="inline">
          <input type="checkbox" checked={failed} onChange={() => setFailed(!failed)} /> refused only
        </label>
        <button type="submit">Filter</button>
      </form>
      <Show
        r={page}
        what="audit entries"
        isEmpty={(p) => p.items.length === 0}
        empty="No audit entry matches."
      >
        {(p) => (
          <>
            <Table
              class="audit"
              rows={p.items}
              rowKey={(a) => a.id}
              rowClass={(a) => (a.result === 'ok' ? '' : 'refused')}
              columns={[
                { header: 'When', cell: (a) => <When at={a.at} /> },
                {
                  header: 'Actor',
                  cell: (a) => (
                    <>
                      {a.actor} {a.role && <span class="muted">({a.role})</span>}
                    </>
                  ),
                },
                { header: 'Action', cell: (a) => <code>{a.action}</code> },
                { header: 'Target', cell: (a) => a.target ?? '' },
                {
                  header: 'Result',
                  cell: (a) => (
                    <>
                      {a.result === 'ok' ? 'ok' : <span class="badge badge-failed">{a.result}</span>}{' '}
                      {a.status} {a.message && <span class="reason">{a.message}</span>}
                    </>
                  ),
                },
                { header: 'From', cell: (a) => a.source },
              ]}
            />
            <nav class="pager" aria-label="Pages">
              <button
                type="button"
                disabled={!cursors.length}
                onClick={() => {
                  setCursor(cursors[cursors.length - 1] || undefined);
                  setCursors(cursors.slice(0, -1));
                }}
              >
                Newer
              </button>
              <button
                type="button"
                disabled={!p.next}
                onClick={() => {
                  setCursors([...cursors, cursor ?? '']);
                  setCursor(p.next ?? undefined);
                }}
              >
                Older
              </button>
            </nav>
          </>
        )}
      </Show>
    </section>
  );
}
