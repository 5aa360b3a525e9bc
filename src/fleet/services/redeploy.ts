/**
 * Redeploy: publish the release of an earlier deployment of a scope again, as that scope's next version
 * (devices refuse versions that go backwards, so "going back" is always a new version carrying old content).
 * This file is the pure part — what may be redeployed and what it becomes; DeployService.redeployInput reads
 * the rows and the fleet's images and hands the result to the ordinary deploy path (a device override, or a
 * one-phase rollout for a group), so a redeploy is checked and published exactly as a deploy of that content.
 *
 * What goes again: the apps and the images, pinned to the digests that deployment published. The agent
 * release a target names is not taken back: like every app deploy, the new version keeps the agent release
 * the scope names now (going back on the agent is `deploy --agent X --allow-downgrade`, said on purpose).
 */
import { conflict, notFound } from '../../lib/errors.js';
import type { SignedTarget } from '../../transport/messages.js';
import { canonicalJson } from '../../transport/signing.js';
import type { ScopeKey } from '../view.js';
import type { DeployInput } from './deploy.js';

/** The longest reason an operator may give (it goes into the audit row). */
export const MAX_REDEPLOY_REASON = 500;

/** The deployment asked for, as the store holds it. */
export interface RedeploySource {
  id: number;
  scope: ScopeKey;
  version: number;
  cleared: boolean;
  state: 'pending' | 'published' | 'failed';
  signed: SignedTarget;
}

/** "group lab 7", "device d1 3": a deployment named with its scope's id (messages for operators). */
export function deploymentLabel(d: { scope: ScopeKey; version: number }): string {
  return `${d.scope.kind} ${d.scope.id} ${d.version}`;
}

/**
 * What redeploying `source` publishes, or the coded error that says why it cannot be:
 * - `expect` (the scope the caller means) differs → Conflict naming both;
 * - a cleared override, a failed or a pending deployment → Conflict (nothing of it to publish again);
 * - the scope's current release is that same release (same apps, same image digests) → Conflict
 *   "already current": a redeploy that changes nothing is refused, as docker/balena treat "already running";
 * - an image it names is no longer in the fleet → NotFound; the name now holds other content → Conflict.
 */
export function planRedeploy(
  source: RedeploySource,
  o: {
    expect?: ScopeKey | undefined;
    /** the scope's current deployment (undefined: none), with its signed target */
    current?: { id: number; cleared: boolean; signed: SignedTarget } | undefined;
    /** the digest the fleet holds under an image name now (undefined: none) */
    imageDigest: (name: string) => string | undefined;
  },
): DeployInput {
  const label = `deployment ${source.id} (${deploymentLabel(source)})`;
  if (o.expect && (o.expect.kind !== source.scope.kind || o.expect.id !== source.scope.id))
    throw conflict(
      `${label} belongs to ${source.scope.kind} ${source.scope.id}, not ${o.expect.kind} ${o.expect.id}`,
    );
  if (source.state !== 'published')
    throw conflict(
      `${label} was ${source.state === 'failed' ? 'never published (its publish failed)' : 'not published yet (pending)'}: only a published release can be deployed again`,
    );
  if (source.cleared || source.signed.target.clear)
    throw conflict(
      `${label} cleared the device's own target: it holds no release to deploy again (its groups' targets apply)`,
    );
  const target = source.signed.target;
  const cur = o.current;
  if (cur && !cur.cleared && sameRelease(cur.signed, source.signed))
    throw conflict(
      cur.id === source.id
        ? `${label} is the current version of ${source.scope.kind} ${source.scope.id} already: nothing to redeploy`
        : `${source.scope.kind} ${source.scope.id} runs that release already (its current version ${cur.signed.target.version} has the same apps and images): nothing to redeploy`,
    );
  const digests: Record<string, string> = {};
  for (const img of target.images) {
    const now = o.imageDigest(img.name);
    if (now === undefined)
      throw notFound(
        `image ${img.name} of ${label} is no longer in the fleet: push it again (${img.digest}) to go back to that release (nothing was published)`,
      );
    if (now !== img.digest)
      throw conflict(
        `image ${img.name} is now ${now}, ${label} pinned ${img.digest}: push that content again under a tag of its own to go back to it (nothing was published)`,
      );
    digests[img.name] = img.digest;
  }
  return { apps: target.apps, images: target.images.map((i) => i.name), digests };
}

/** Same apps and the same images (by digest): one release, whatever version or time it was published at. */
export function sameRelease(a: SignedTarget, b: SignedTarget): boolean {
  const key = (s: SignedTarget) =>
    canonicalJson({
      apps: s.target.apps ?? {},
      images: [...s.target.images].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0)),
    });
  return key(a) === key(b);
}

/** The audit row's note for a redeploy: which deployment it re-published, and the operator's reason. */
export function redeployNote(from: number, reason: string | undefined): string {
  const why = reason?.replace(/\s+/g, ' ').trim();
  return `redeploy of deployment ${from}${why ? `: ${why}` : ''}`;
}
