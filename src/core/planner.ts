/**
 * The planner: a pure function from (current state, target) to the steps that can run now. The reconciler
 * runs one batch and plans again from fresh state, so the planner never sequences more than one move per
 * service: an empty plan means converged, a plan of only `wait` steps means "blocked, ask again later".
 *
 * Order inside a plan: volumes and networks first, then each service's update (see strategies.ts), then
 * the removal of what the target no longer has (dependents stopped before what they depend on), then
 * resources nobody uses, and — only when nothing else is left — a cleanup of unreferenced images.
 */
import { DEFAULT_RESTART_BACKOFF, type RestartBackoff } from './restart.js';
import type { AppResource, CurrentContainer, CurrentState } from './state.js';
import { isIdleStep, type Step } from './steps.js';
import { retireSteps, type ServiceSituation, updateSteps } from './strategies.js';
import { type App, containerName, type Service, specHash, type Target, targetImages } from './target.js';

export interface PlanContext {
  now: number;
  backoff?: RestartBackoff;
  /** images of other kept targets (the previous one, for rollback): never collected */
  keepImages?: readonly string[];
  /** plan a cleanup of unreferenced images once converged (default true) */
  cleanup?: boolean;
}

const key = (app: string, name: string) => `${app}/${name}`;

/** Networks an app's containers need: the declared ones plus `default` when a bridge service names none. */
export function appNetworks(app: App): Map<string, { internal: boolean; labels: Record<string, string> }> {
  const out = new Map<string, { internal: boolean; labels: Record<string, string> }>();
  for (const [name, n] of Object.entries(app.networks))
    out.set(name, { internal: n.internal, labels: n.labels });
  for (const s of Object.values(app.services)) {
    if (s.networkMode === 'bridge' && s.networks.length === 0 && !out.has('default'))
      out.set('default', { internal: false, labels: {} });
  }
  return out;
}

function serviceNetworks(s: Service): string[] {
  if (s.networkMode !== 'bridge') return [];
  return s.networks.length > 0 ? s.networks : ['default'];
}

function sameLabels(a: Record<string, string> | undefined, b: Record<string, string>): boolean {
  if (a === undefined) return true; // the engine does not report labels: nothing to compare
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

export function plan(current: CurrentState, target: Target, ctx: PlanContext): Step[] {
  const backoff = ctx.backoff ?? DEFAULT_RESTART_BACKOFF;
  const steps: Step[] = [];
  const volumes = new Set(current.volumes.map((v) => key(v.app, v.name)));
  const networks = new Set(current.networks.map((n) => key(n.app, n.name)));

  // 1. volumes and networks the target declares
  for (const [appName, app] of Object.entries(target.apps)) {
    for (const [name, v] of Object.entries(app.volumes)) {
      if (!volumes.has(key(appName, name)))
        steps.push({ kind: 'createVolume', app: appName, name, labels: v.labels });
    }
    for (const [name, n] of appNetworks(app)) {
      if (!networks.has(key(appName, name)))
        steps.push({ kind: 'createNetwork', app: appName, name, internal: n.internal, labels: n.labels });
    }
  }

  // Index containers by service; the fresh one (target spec) is preferably a running one.
  const byService = new Map<string, CurrentContainer[]>();
  for (const c of current.containers) {
    const k = key(c.app, c.service);
    const list = byService.get(k);
    if (list) list.push(c);
    else byService.set(k, [c]);
  }
  const hashes = new Map<string, string>();
  for (const [appName, app] of Object.entries(target.apps))
    for (const [svcName, svc] of Object.entries(app.services))
      hashes.set(key(appName, svcName), specHash(svc));

  const freshOf = (app: string, service: string): CurrentContainer | undefined => {
    const h = hashes.get(key(app, service));
    const list = (byService.get(key(app, service)) ?? []).filter((c) => c.specHash === h);
    return list.find((c) => c.status === 'running') ?? list[0];
  };

  const targetImageSet = new Set(targetImages(target));
  const containerImageUsers = (image: string) => current.containers.filter((c) => c.image === image);

  // 2. each target service
  for (const [appName, app] of Object.entries(target.apps)) {
    for (const [svcName, svc] of Object.entries(app.services)) {
      const h = hashes.get(key(appName, svcName))!;
      const all = byService.get(key(appName, svcName)) ?? [];
      const fresh = freshOf(appName, svcName);
      const old = all.filter((c) => c !== fresh);

      let depsReason: string | undefined;
      for (const [dep, cond] of Object.entries(svc.dependsOn)) {
        const d = freshOf(appName, dep);
        if (d?.status !== 'running') depsReason = `waiting for ${dep} to run`;
        else if (cond === 'healthy' && d.health !== 'healthy' && d.health !== 'none')
          depsReason = `waiting for ${dep} to be healthy`;
        if (depsReason) break;
      }
      const resourcesReady =
        svc.volumes.every((v) => v.type !== 'volume' || volumes.has(key(appName, v.source!))) &&
        serviceNetworks(svc).every((n) => networks.has(key(appName, n)));

      const situation: ServiceSituation = {
        app: appName,
        service: svcName,
        target: svc,
        targetHash: h,
        name: containerName(appName, svcName, h),
        image: current.images[svc.image] ?? { fetched: false, unpacked: false },
        fresh,
        old,
        locked: current.locks[appName] === true && !svc.update.overrideLock,
        handoverSignalAt: current.handovers?.[appName],
        depsReady: depsReason === undefined,
        depsReason,
        resourcesReady,
        oldImageDeletable: (image) =>
          !targetImageSet.has(image) && containerImageUsers(image).every((c) => old.includes(c)),
        now: ctx.now,
        backoff,
      };
      steps.push(...updateSteps(svc.update.strategy, situation));
      if (fresh && !sameLabels(fresh.labels, svc.labels))
        steps.push({
          kind: 'updateMetadata',
          id: fresh.id,
          app: appName,
          service: svcName,
          labels: svc.labels,
        });
    }
  }

  // 3. containers of services the target no longer has; dependents go first
  const orphans = current.containers.filter((c) => !target.apps[c.app]?.services[c.service]);
  for (const c of orphans) {
    const dependent = orphans.find(
      (d) => d !== c && d.app === c.app && d.status === 'running' && (d.dependsOn ?? []).includes(c.service),
    );
    if (c.status === 'running' && dependent) {
      steps.push({ kind: 'wait', reason: `${c.app}/${c.service}: ${dependent.service} depends on it` });
      continue;
    }
    steps.push(...retireSteps(c, current.locks[c.app] === true, 10_000));
  }

  // 4. volumes and networks nobody declares, once no container that could use them is left
  const settled = (app: string) =>
    current.containers.every((c) => c.app !== app || c.specHash === hashes.get(key(c.app, c.service)));
  const unused = (r: AppResource, declared: (app: App) => boolean) => {
    const app = target.apps[r.app];
    if (!app) return !current.containers.some((c) => c.app === r.app);
    return !declared(app) && settled(r.app);
  };
  for (const v of current.volumes) {
    if (unused(v, (app) => v.name in app.volumes))
      steps.push({ kind: 'removeVolume', app: v.app, name: v.name });
  }
  for (const n of current.networks) {
    if (unused(n, (app) => appNetworks(app).has(n.name)))
      steps.push({ kind: 'removeNetwork', app: n.app, name: n.name });
  }

  // 5. once converged: images no kept target and no container references
  if (ctx.cleanup !== false && steps.every(isIdleStep) && steps.length === 0) {
    const keep = new Set([
      ...targetImageSet,
      ...(ctx.keepImages ?? []),
      ...current.containers.map((c) => c.image),
    ]);
    const images = Object.keys(current.images)
      .filter((i) => !keep.has(i))
      .sort();
    if (images.length > 0) steps.push({ kind: 'cleanup', keepImages: [...keep].sort(), images });
  }

  return dedupe(steps);
}

/** Two services sharing an image must not fetch it twice in one batch. */
function dedupe(steps: Step[]): Step[] {
  const seen = new Set<string>();
  return steps.filter((s) => {
    if (s.kind !== 'fetch' && s.kind !== 'unpack' && s.kind !== 'removeImage') return true;
    const k = `${s.kind} ${s.image}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
