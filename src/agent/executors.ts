/**
 * One executor per step kind. `Executors` is a record over `Step['kind']`: adding a kind to the union in
 * core/steps.ts without adding its executor here is a compile error. Executors act through the ports and
 * keep the agent's container records (restarts, stopped-by-user) in step with what they did.
 */
import { effectiveRestarts, type RestartBackoff } from '../core/restart.js';
import type { Step, StepKind, StepOf } from '../core/steps.js';
import {
  type AgentPorts,
  type Clock,
  LABEL_APP,
  LABEL_DEPENDS_ON,
  LABEL_SERVICE,
  LABEL_SPEC_HASH,
} from './ports.js';
import type { AgentStore } from './store.js';

export type Executor<K extends StepKind> = (step: StepOf<K>) => Promise<void>;
export type Executors = { [K in StepKind]: Executor<K> };

export interface ExecutorDeps {
  ports: AgentPorts;
  store: AgentStore;
  clock: Clock;
  backoff: RestartBackoff;
}

export function berthLabels(app: string, service: string, specHash: string, dependsOn: readonly string[]) {
  return {
    [LABEL_APP]: app,
    [LABEL_SERVICE]: service,
    [LABEL_SPEC_HASH]: specHash,
    [LABEL_DEPENDS_ON]: dependsOn.join(','),
  };
}

export function createExecutors({ ports, store, clock, backoff }: ExecutorDeps): Executors {
  const { engine, images, volumes, networks, locks } = ports;
  const record = (id: string) => store.containers().find((c) => c.id === id);
  return {
    fetch: async (s) => {
      store.addManagedImage(s.image, clock.now()); // intent first: a half-fetched image is still ours to collect
      await images.fetch(s.image);
    },
    unpack: (s) => images.unpack(s.image),
    removeImage: async (s) => {
      await images.remove(s.image);
      store.forgetManagedImages([s.image]);
    },
    cleanup: async (s) => {
      // Keep everything stored except what the plan collects: images pulled by hand are not the agent's.
      const drop = new Set(s.images);
      await images.gc((await images.list()).filter((i) => !drop.has(i)));
      store.forgetManagedImages(s.images);
    },
    createVolume: (s) => volumes.create(s.app, s.name, s.labels),
    removeVolume: (s) => volumes.remove(s.app, s.name),
    createNetwork: (s) => networks.create(s.app, s.name, { internal: s.internal, labels: s.labels }),
    removeNetwork: (s) => networks.remove(s.app, s.name),
    create: async (s) => {
      const volumePaths: Record<string, string> = {};
      for (const v of s.spec.volumes)
        if (v.type === 'volume') volumePaths[v.source!] = volumes.hostPath(s.app, v.source!);
      // Intent first: the record exists before the container, so a crash in between leaves a record the
      // reconciler ignores (records follow list(), never the other way round).
      store.recordContainer(
        { id: s.name, app: s.app, service: s.service, specHash: s.specHash, image: s.spec.image },
        clock.now(),
      );
      await engine.create({
        name: s.name,
        image: s.spec.image,
        spec: s.spec,
        labels: {
          ...s.spec.labels,
          ...berthLabels(s.app, s.service, s.specHash, Object.keys(s.spec.dependsOn)),
        },
        volumePaths,
        lockDir: await locks.dir(s.app),
      });
    },
    start: async (s) => {
      if (s.restart) {
        const c = (await engine.list()).find((x) => x.id === s.id);
        const r = record(s.id);
        const prev =
          c && r
            ? effectiveRestarts(
                { restarts: r.restarts, startedAt: c.startedAt, finishedAt: c.finishedAt },
                backoff,
              )
            : 0;
        store.updateContainer(s.id, { restarts: prev + 1 }, clock.now());
      }
      store.updateContainer(s.id, { stoppedByUser: false, health: 'none' }, clock.now());
      await engine.start(s.id);
    },
    stop: (s) => engine.stop(s.id, { timeoutMs: s.timeoutMs, signal: s.signal }),
    kill: (s) => engine.kill(s.id, 'SIGKILL'),
    remove: async (s) => {
      await engine.remove(s.id);
      store.forgetContainer(s.id);
    },
    updateMetadata: (s) => engine.updateLabels(s.id, s.labels),
    wait: async () => {},
    noop: async () => {},
  };
}

/** Run one step through its executor (the cast is the one place the union meets the record). */
export function runStep(executors: Executors, step: Step): Promise<void> {
  return (executors[step.kind] as Executor<StepKind>)(step as never);
}
