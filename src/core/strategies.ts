/**
 * Update strategies: how one service moves from its old container(s) to a container of the target spec.
 * A pure switch over the strategy, fed a snapshot of the service's situation; it returns the steps that
 * can run now (the reconciler re-plans after each batch, so each call is one move of the state machine).
 *
 *   download-then-kill   fetch+unpack while the old one runs (restarted by its policy if it stops, e.g.
 *                        a reboot mid-download); then stop old, remove old, create, start.
 *                        Least downtime without running both at once (the default).
 *   kill-then-download   stop and remove the old one first, then fetch. For devices where the old
 *                        container must not run alongside a download (CPU, bandwidth, hardware access).
 *   delete-then-download like kill-then-download, and also deletes the old image before fetching, for
 *                        devices without room for two versions (rollback then has to fetch again).
 *   hand-over            fetch, create and start the new one while the old one still runs; stop the old one
 *                        when the new one is healthy or writes `handover-complete` into the app's lock dir
 *                        (balena's signal), kill it after handoverTimeoutMs. Zero downtime.
 *
 * Update lock: while the app holds its lock (updates.lock in its lock dir), no running container of the app
 * is stopped or killed — the step becomes a `wait` — unless the target sets update.overrideLock.
 */
import { type RestartBackoff, restartDecision } from './restart.js';
import type { CurrentContainer, CurrentImage } from './state.js';
import type { Step } from './steps.js';
import type { Service, UpdateStrategy } from './target.js';

export interface ServiceSituation {
  app: string;
  service: string;
  target: Service;
  targetHash: string;
  /** the container name create would use */
  name: string;
  image: CurrentImage;
  /** the container created from the target spec, if any */
  fresh: CurrentContainer | undefined;
  /** other containers of this service: older specs, duplicates */
  old: CurrentContainer[];
  /** the app's update lock is held and the target does not override it */
  locked: boolean;
  /** when the app last wrote `handover-complete` (balena's hand-over signal), if ever */
  handoverSignalAt?: number | undefined;
  /** every depends_on condition holds */
  depsReady: boolean;
  /** why not, when depsReady is false */
  depsReason?: string | undefined;
  /** volumes and networks the container needs exist */
  resourcesReady: boolean;
  /** the old image may be deleted (delete-then-download): no other service or kept target uses it */
  oldImageDeletable: (image: string) => boolean;
  now: number;
  backoff: RestartBackoff;
}

const ref = (c: CurrentContainer) => ({ id: c.id, app: c.app, service: c.service });

/** Steps that take an old container out of service: stop (if running, lock permitting), then remove. */
export function retireSteps(
  c: CurrentContainer,
  locked: boolean,
  stopTimeoutMs: number,
  stopSignal?: string,
): Step[] {
  if (c.status === 'running') {
    if (locked) return [{ kind: 'wait', reason: `update lock held by app ${c.app}` }];
    return [{ kind: 'stop', ...ref(c), timeoutMs: stopTimeoutMs, signal: stopSignal }];
  }
  return [{ kind: 'remove', ...ref(c) }];
}

function imageSteps(s: ServiceSituation): Step[] {
  if (!s.image.fetched) return [{ kind: 'fetch', image: s.target.image }];
  if (!s.image.unpacked) return [{ kind: 'unpack', image: s.target.image }];
  return [];
}

const imageReady = (s: ServiceSituation) => s.image.fetched && s.image.unpacked;

/** Create/start/restart the target container; the part every strategy ends with. */
export function bringUpSteps(s: ServiceSituation): Step[] {
  const f = s.fresh;
  if (!f) {
    if (!imageReady(s)) return imageSteps(s);
    if (!s.resourcesReady) return []; // the volume/network steps of this plan come first
    if (!s.depsReady)
      return [{ kind: 'wait', reason: `${s.app}/${s.service}: ${s.depsReason ?? 'dependencies'}` }];
    return [
      {
        kind: 'create',
        app: s.app,
        service: s.service,
        name: s.name,
        specHash: s.targetHash,
        spec: s.target,
      },
    ];
  }
  if (f.status === 'created') {
    if (!s.depsReady)
      return [{ kind: 'wait', reason: `${s.app}/${s.service}: ${s.depsReason ?? 'dependencies'}` }];
    return [{ kind: 'start', ...ref(f), restart: false }];
  }
  if (f.status === 'stopped') return restartSteps(s, f, 'restart backoff');
  return [];
}

/** A stopped container started again if the service's restart policy says so (or a wait for its backoff). */
function restartSteps(s: ServiceSituation, c: CurrentContainer, why: string): Step[] {
  const d = restartDecision(s.target.restart, c, s.now, s.backoff);
  if (d.action === 'start') return [{ kind: 'start', ...ref(c), restart: true }];
  if (d.action === 'wait') return [{ kind: 'wait', reason: `${s.app}/${s.service}: ${why}`, until: d.until }];
  return [];
}

/**
 * While the new version is still being fetched, the old one stays in service: stopped old containers
 * (a reboot, a crash) are restarted by the service's policy, so an update that cannot progress — no
 * network after a reboot — never leaves the app down.
 */
function keepOldUp(s: ServiceSituation): Step[] {
  return s.old.flatMap((c) =>
    c.status === 'stopped' ? restartSteps(s, c, 'restart backoff (old version)') : [],
  );
}

function retireAll(s: ServiceSituation): Step[] {
  return s.old.flatMap((c) => retireSteps(c, s.locked, s.target.stopTimeoutMs, s.target.stopSignal));
}

export function updateSteps(strategy: UpdateStrategy, s: ServiceSituation): Step[] {
  switch (strategy) {
    case 'download-then-kill':
      if (s.old.length > 0) return imageReady(s) ? retireAll(s) : [...keepOldUp(s), ...imageSteps(s)];
      return bringUpSteps(s);

    case 'kill-then-download':
      if (s.old.length > 0) return retireAll(s);
      return bringUpSteps(s);

    case 'delete-then-download': {
      if (s.old.length === 0) return bringUpSteps(s);
      const steps = retireAll(s);
      // Delete the old image in the same batch as the last container that used it goes away.
      const removing = new Set(steps.filter((x) => x.kind === 'remove').map((x) => (x as { id: string }).id));
      const images = new Set<string>();
      for (const c of s.old) {
        if (removing.has(c.id) && c.image !== s.target.image && s.oldImageDeletable(c.image))
          images.add(c.image);
      }
      for (const image of images) steps.push({ kind: 'removeImage', image });
      return steps;
    }

    case 'hand-over': {
      const f = s.fresh;
      if (!f && !imageReady(s)) return [...keepOldUp(s), ...imageSteps(s)];
      if (f?.status !== 'running') {
        // Old containers that are not running any more are just removed; running ones keep serving.
        const dead = s.old
          .filter((c) => c.status !== 'running')
          .map((c): Step => ({ kind: 'remove', ...ref(c) }));
        return [...dead, ...bringUpSteps(s)];
      }
      const out: Step[] = [];
      // handed over: the new one is healthy, or it wrote handover-complete after it was created (a file
      // older than the container is an earlier hand-over's)
      const signalled =
        s.handoverSignalAt !== undefined && f.createdAt !== undefined && s.handoverSignalAt >= f.createdAt;
      const handedOver = f.health === 'healthy' || signalled;
      const deadline = (f.startedAt ?? s.now) + s.target.update.handoverTimeoutMs;
      for (const c of s.old) {
        if (c.status !== 'running') out.push({ kind: 'remove', ...ref(c) });
        else if (s.locked) out.push({ kind: 'wait', reason: `update lock held by app ${c.app}` });
        else if (handedOver)
          out.push({
            kind: 'stop',
            ...ref(c),
            timeoutMs: s.target.stopTimeoutMs,
            signal: s.target.stopSignal,
          });
        else if (s.now >= deadline) out.push({ kind: 'kill', ...ref(c) });
        else
          out.push({
            kind: 'wait',
            reason: `${s.app}/${s.service}: hand-over until healthy`,
            until: deadline,
          });
      }
      return out;
    }
  }
}
