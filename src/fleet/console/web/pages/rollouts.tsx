/**
 * Staged rollouts (issue 12's API: /api/v1/rollouts). A server without that API answers 404 for the route;
 * the page says so instead of failing.
 */
import { ApiError, call } from '../api.js';
import { Empty, Page, Show, useResource } from '../ui.js';

export interface RolloutSummary {
  id: string;
  name?: string | null;
  state: string;
  done: number;
  total: number;
}

/** Rollouts that are not finished; [] where the server has no rollout API. */
export async function activeRollouts(signal: AbortSignal): Promise<RolloutSummary[]> {
  try {
    const page = await call<{ items: RolloutSummary[] }>('GET', '/rollouts', {
      query: { active: true },
      signal,
    });
    return page.items;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return [];
    throw err;
  }
}

export function RolloutsPage({ query: _query }: { query: URLSearchParams }) {
  const list = useResource(
    (signal) =>
      call<{ items: RolloutSummary[] }>('GET', '/rollouts', { signal }).catch((err) => {
        if (err instanceof ApiError && err.status === 404) return null;
        throw err;
      }),
    [],
  );
  return (
    <Page title="Rollouts">
      <Show r={list} what="rollouts">
        {(l) =>
          l === null ? (
            <Empty>This fleet server has no rollout API yet: deploy to a group or to devices instead.</Empty>
          ) : l.items.length === 0 ? (
            <Empty>No rollout yet.</Empty>
          ) : (
            <ul>
              {l.items.map((r) => (
                <li key={r.id}>{r.name ?? r.id}</li>
              ))}
            </ul>
          )
        }
      </Show>
    </Page>
  );
}

export function RolloutPage({ id }: { id: string }) {
  return (
    <Page title={`Rollout ${id}`}>
      <Empty>Rollout details need the rollout API.</Empty>
    </Page>
  );
}
