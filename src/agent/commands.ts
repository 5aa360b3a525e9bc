/**
 * Remote commands from the fleet (and the local API): restart an app or a service, fetch recent logs,
 * re-report, purge a volume, retry the reconcile now. Validated with a schema at the edge, dispatched over the ports, always
 * answered with a result object (never a throw), so the transport can reply on the request's topic.
 */
import { z } from 'zod';
import { NameSchema } from '../core/target.js';
import { BerthError, errorMessage, invalidInput, notFound } from '../lib/errors.js';
import { formatIssues } from '../oci/validate.js';
import type { Mutex } from './mutex.js';
import { type Clock, type ContainerEngine, LABEL_APP, LABEL_SERVICE, type VolumeService } from './ports.js';
import type { AgentStore } from './store.js';

export const CommandSchema = z.discriminatedUnion('kind', [
  z
    .object({
      id: z.string().max(64).optional(),
      kind: z.literal('restart'),
      app: NameSchema,
      service: NameSchema.optional(),
    })
    .strict(),
  z
    .object({
      id: z.string().max(64).optional(),
      kind: z.literal('logs'),
      app: NameSchema,
      service: NameSchema,
      tail: z.number().int().min(1).max(10_000).default(200),
    })
    .strict(),
  z.object({ id: z.string().max(64).optional(), kind: z.literal('report') }).strict(),
  /** reconcile now, with the retry backoff reset (the cause of the last failure is gone) */
  z.object({ id: z.string().max(64).optional(), kind: z.literal('retry') }).strict(),
  z
    .object({
      id: z.string().max(64).optional(),
      kind: z.literal('purgeVolume'),
      app: NameSchema,
      volume: NameSchema,
      /** purge even while the app holds its update lock */
      force: z.boolean().default(false),
    })
    .strict(),
]);
export type Command = z.infer<typeof CommandSchema>;

export type CommandResult =
  | { id?: string | undefined; kind: string; ok: true; result: unknown }
  | { id?: string | undefined; kind: string; ok: false; error: { code: string; message: string } };

export interface CommandDeps {
  engine: ContainerEngine;
  volumes: VolumeService;
  store: AgentStore;
  clock: Clock;
  mutex: Mutex;
  isLocked: (app: string) => Promise<boolean>;
  /** ask the reconciler to look again now, its retry backoff reset (`why` goes to the log) */
  reconcile: (why: string) => void;
  report: () => Promise<void>;
}

export function parseCommand(raw: unknown): Command {
  const r = CommandSchema.safeParse(raw);
  if (!r.success) throw invalidInput(`invalid command: ${formatIssues(r.error)}`);
  return r.data;
}

export async function dispatchCommand(raw: unknown, deps: CommandDeps): Promise<CommandResult> {
  const id =
    typeof raw === 'object' && raw && typeof (raw as { id?: unknown }).id === 'string'
      ? (raw as { id: string }).id
      : undefined;
  const kind =
    typeof raw === 'object' && raw && typeof (raw as { kind?: unknown }).kind === 'string'
      ? (raw as { kind: string }).kind
      : '?';
  try {
    const cmd = parseCommand(raw);
    return { id, kind, ok: true, result: await run(cmd, deps) };
  } catch (err) {
    const code = err instanceof BerthError ? err.code : 'Internal';
    return { id, kind, ok: false, error: { code, message: errorMessage(err) } };
  }
}

async function appContainers(engine: ContainerEngine, app: string, service?: string) {
  return (await engine.list()).filter(
    (c) => c.labels[LABEL_APP] === app && (service === undefined || c.labels[LABEL_SERVICE] === service),
  );
}

async function run(cmd: Command, d: CommandDeps): Promise<unknown> {
  switch (cmd.kind) {
    case 'restart': {
      const list = await appContainers(d.engine, cmd.app, cmd.service);
      if (list.length === 0)
        throw notFound(`no containers for ${cmd.app}${cmd.service ? `/${cmd.service}` : ''}`);
      const restarted = await d.mutex.run(async () => {
        const ids: string[] = [];
        for (const c of list) {
          if (c.status === 'running') await d.engine.stop(c.id, { timeoutMs: 10_000 });
          d.store.updateContainer(c.id, { stoppedByUser: false }, d.clock.now());
          await d.engine.start(c.id);
          ids.push(c.id);
        }
        return ids;
      });
      d.reconcile(`restart of ${cmd.app}${cmd.service ? `/${cmd.service}` : ''}`);
      return { restarted };
    }
    case 'logs': {
      const list = await appContainers(d.engine, cmd.app, cmd.service);
      const c =
        list.find((x) => x.status === 'running') ??
        list.sort((a, b) => (b.createdAt ?? 0) - (a.createdAt ?? 0))[0];
      if (!c) throw notFound(`no container for ${cmd.app}/${cmd.service}`);
      return { container: c.id, lines: await d.engine.logs(c.id, { tail: cmd.tail }) };
    }
    case 'report':
      await d.report();
      return { reported: true };
    case 'retry':
      d.reconcile('an operator asked to retry');
      return { retrying: true };
    case 'purgeVolume': {
      const vols = await d.volumes.list();
      if (!vols.some((v) => v.app === cmd.app && v.name === cmd.volume))
        throw notFound(`volume ${cmd.volume} of app ${cmd.app} not found`);
      if (!cmd.force && (await d.isLocked(cmd.app)))
        throw new BerthError(
          'Conflict',
          `app ${cmd.app} holds its update lock; purge with force to override`,
        );
      // Every container of the app goes down while its data is wiped (which of them mount the volume is
      // the spec's business; stopping the whole app is the safe answer), and comes back after.
      const list = await appContainers(d.engine, cmd.app);
      const stopped = await d.mutex.run(async () => {
        const ids: string[] = [];
        for (const c of list)
          if (c.status === 'running') {
            await d.engine.stop(c.id, { timeoutMs: 10_000 });
            ids.push(c.id);
          }
        await d.volumes.remove(cmd.app, cmd.volume);
        await d.volumes.create(cmd.app, cmd.volume, {});
        for (const id of ids) await d.engine.start(id);
        return ids;
      });
      d.reconcile(`purge of volume ${cmd.app}/${cmd.volume}`);
      return { purged: `${cmd.app}/${cmd.volume}`, restarted: stopped };
    }
  }
}
