/**
 * A scope's release history (`GET /deployments?device=|group=`, newest first): version, images, when, who,
 * the current one marked; for operators, **Redeploy** on an earlier published release — behind a
 * confirmation that says what will happen ("Publish version 7 of group lab as version 9"), then
 * `POST /deployments/{id}/redeploy`. The server decides what may be redeployed and says why not.
 */
import type { Page as ApiPage, Deployment } from '../../api/schemas.js';
import { call, seg } from './api.js';
import { act, ConfirmButton, Show, StatusBadge, Table, useLive, useResource, When } from './ui.js';

export interface Scope {
  kind: 'device' | 'group';
  id: string;
}

/** What Redeploy would publish, in words: "Publish version 7 of group lab as version 9". */
export function redeployQuestion(d: Deployment, next: number): string {
  return `Publish version ${d.version} of ${d.scope.kind} ${d.scope.id} as version ${next}?`;
}

/** Whether a row offers Redeploy: a published release (not a clear) that is not the current one. */
export function redeployable(d: Deployment): boolean {
  return d.state === 'published' && !d.cleared && d.current !== true;
}

export function ReleaseHistory({
  scope,
  operator,
  limit = 20,
}: {
  scope: Scope;
  operator: boolean;
  limit?: number;
}) {
  const list = useResource(
    (signal) =>
      call<ApiPage<Deployment>>('GET', `/deployments?${scope.kind}=${seg(scope.id)}&limit=${limit}`, {
        signal,
      }),
    [scope.kind, scope.id, limit],
  );
  useLive(
    (e) => {
      const s = e.scope as Scope | undefined;
      return e.type === 'deployment' && s?.kind === scope.kind && s.id === scope.id;
    },
    list.reload,
    1000,
  );
  const headingId = `history-${scope.kind}`;
  return (
    <section class="card" aria-labelledby={headingId} data-testid="release-history">
      <h2 id={headingId}>
        Releases of {scope.kind} {scope.id}
      </h2>
      <Show
        r={list}
        what="releases"
        isEmpty={(p) => p.items.length === 0}
        empty={`Nothing was deployed to ${scope.kind} ${scope.id} yet.`}
      >
        {(p) => {
          // versions are never reused: the next one is past the newest recorded (published or not)
          const next = Math.max(0, ...p.items.map((d) => d.version)) + 1;
          const versionOf = new Map(p.items.map((d) => [d.id, d.version]));
          return (
            <Table
              rows={p.items}
              rowKey={(d) => d.id}
              rowClass={(d) => (d.current ? 'current' : undefined)}
              testId="history-table"
              columns={[
                {
                  header: 'Version',
                  rowHeader: true,
                  cell: (d) => (
                    <>
                      {d.version} {d.current && <StatusBadge status="current" />}
                    </>
                  ),
                },
                {
                  header: 'Images',
                  cell: (d) =>
                    d.cleared ? (
                      <span class="muted">cleared (its groups apply)</span>
                    ) : (
                      d.images.map((i) => (
                        <code key={i.name} title={i.digest}>
                          {i.name}
                        </code>
                      ))
                    ),
                },
                { header: 'When', cell: (d) => <When at={d.createdAt} /> },
                {
                  header: 'By',
                  cell: (d) => (
                    <>
                      {d.createdBy ?? '—'}
                      {d.redeployOf !== null && (
                        <span class="muted">
                          {' '}
                          (redeploy of{' '}
                          {versionOf.has(d.redeployOf)
                            ? `version ${versionOf.get(d.redeployOf)}`
                            : `deployment ${d.redeployOf}`}
                          )
                        </span>
                      )}
                    </>
                  ),
                },
                {
                  header: 'State',
                  cell: (d) => (d.state === 'published' ? 'published' : <StatusBadge status={d.state} />),
                },
                operator && {
                  header: 'Actions',
                  hiddenHeader: true,
                  cell: (d) =>
                    redeployable(d) && (
                      <ConfirmButton
                        label="Redeploy"
                        question={redeployQuestion(d, next)}
                        onConfirm={() =>
                          act(`Published version ${d.version} of ${d.scope.kind} ${d.scope.id} again`, () =>
                            call('POST', `/deployments/${d.id}/redeploy`, {
                              body: { [d.scope.kind]: d.scope.id },
                            }),
                          ).then(list.reload)
                        }
                      />
                    ),
                },
              ]}
            />
          );
        }}
      </Show>
    </section>
  );
}
