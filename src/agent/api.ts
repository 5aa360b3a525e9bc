/**
 * The agent's local API: HTTP/JSON on a unix socket (<state-dir>/berth.sock, mode 0660), as dockerd has.
 * `berth ps | run | logs | stop | rm | exec` talk to it while an agent runs, so they and the reconciler
 * never act on the same containers at once: every mutation goes through the agent's mutex.
 *
 *   GET    /v1/ping                          {ok, pid}
 *   GET    /v1/containers                    [ContainerView]            (with health)
 *   POST   /v1/containers                    RunRequest → {id}          (ad-hoc container, like docker run)
 *   GET    /v1/containers/:id                docker-like inspect JSON   (src/runtime/inspect.ts)
 *   GET    /v1/containers/:id/logs?tail=N&since=ms&until=ms[&stream=1&follow=1]   {lines} | NDJSON LogLine
 *   GET    /v1/containers/:id/stats          {cpuUsageNs, memoryBytes, memoryLimitBytes?, pids?, at}
 *   GET    /v1/containers/:id/top            {titles, processes}        (ps -ef of the container)
 *   POST   /v1/containers/:id/start          {}
 *   POST   /v1/containers/:id/stop           {timeoutMs?} → {}
 *   POST   /v1/containers/:id/restart        {timeoutMs?} → {}
 *   DELETE /v1/containers/:id?force=1        {}
 *   POST   /v1/containers/:id/exec           {argv, timeoutMs?} → {exitCode, stdout, stderr}
 *   GET    /v1/events?since=ms&until=ms&follow=1   NDJSON BerthEvent     (src/runtime/events.ts)
 *   GET    /v1/images                        [ImageRecord]
 *   GET    /v1/images/:ref                   record + manifest + config (or index)
 *   GET    /v1/state                         reported state
 *   POST   /v1/commands                      Command → CommandResult    (same commands as from the fleet)
 *
 * `:id` is the name the agent gave a container, its runtime id, a unique prefix (≥ 4) of that, or an app's
 * service name (`web`, `app/web`).
 *
 * Errors: {error: {code, message}} with an HTTP status per BerthError code.
 */
import { chmod, unlink } from 'node:fs/promises';
import * as http from 'node:http';
import * as net from 'node:net';
import { z } from 'zod';
import { NameSchema, ServiceSchema } from '../core/target.js';
import {
  BerthError,
  conflict,
  type ErrorCode,
  errorMessage,
  HTTP_STATUS,
  invalidInput,
  notFound,
} from '../lib/errors.js';
import { DEFAULT_MAX_DEPTH, parseJsonBounded } from '../lib/json-bounds.js';
import type { Logger } from '../lib/logger.js';
import { formatIssues } from '../oci/validate.js';
import type { EventLog } from '../runtime/events.js';
import { type CommandDeps, dispatchCommand } from './commands.js';
import type { Mutex } from './mutex.js';
import {
  type Clock,
  type ContainerEngine,
  type EngineContainer,
  type ImageService,
  LABEL_APP,
  LABEL_SERVICE,
} from './ports.js';
import type { AgentStore } from './store.js';

const PortRequestSchema = z
  .object({
    hostIp: z.string().optional(),
    hostPort: z.number().int().min(1).max(65535).optional(),
    containerPort: z.number().int().min(1).max(65535),
    protocol: z.enum(['tcp', 'udp']).default('tcp'),
  })
  .strict();

/** An ad-hoc container (`berth run` while an agent runs): the CLI's options, in the target's terms. */
export const RunRequestSchema = z
  .object({
    /** the image to run; with `rootfs`, only the name shown in `ps` (default: the directory) */
    image: z.string().min(1).optional(),
    /** run this host directory as the root filesystem instead of the image (`berth run --rootfs`) */
    rootfs: z.string().startsWith('/').optional(),
    name: NameSchema.optional(),
    command: z.array(z.string()).optional(),
    entrypoint: z.array(z.string()).optional(),
    env: z.record(z.string()).default({}),
    volumes: z
      .array(
        z.object({
          source: z.string().startsWith('/'),
          target: z.string().startsWith('/'),
          readOnly: z.boolean().default(false),
        }),
      )
      .default([]),
    ports: z.array(PortRequestSchema).default([]),
    networkMode: z.enum(['bridge', 'host', 'none']).default('bridge'),
    memoryBytes: z.number().int().positive().optional(),
    cpus: z.number().positive().optional(),
    pids: z.number().int().positive().optional(),
    user: z.string().optional(),
    workingDir: z.string().optional(),
    hostname: z.string().optional(),
    readOnly: z.boolean().default(false),
    privileged: z.boolean().default(false),
    capAdd: z.array(z.string()).default([]),
    capDrop: z.array(z.string()).default([]),
    devices: z
      .array(z.object({ hostPath: z.string().startsWith('/'), containerPath: z.string().startsWith('/') }))
      .default([]),
    labels: z.record(z.string()).default({}),
    stopSignal: z.string().optional(),
    /** removed by the agent once it exits (`berth run -d --rm`) */
    autoRemove: z.boolean().default(false),
  })
  .strict()
  .refine((r) => r.image !== undefined || r.rootfs !== undefined, {
    message: 'image or rootfs is required',
  });
export type RunRequest = z.input<typeof RunRequestSchema>;

export interface ContainerView {
  /** the name the agent gave it (the id every route takes); `containerId` is the runtime's id */
  id: string;
  name: string;
  containerId?: string | undefined;
  image: string;
  status: string;
  /** the runtime's words, as `berth ps` prints without an agent: created | running | exited */
  state: string;
  app?: string | undefined;
  service?: string | undefined;
  exitCode?: number | undefined;
  oomKilled?: boolean | undefined;
  startedAt?: number | undefined;
  finishedAt?: number | undefined;
  createdAt?: number | undefined;
  ipAddress?: string | undefined;
  ports: Array<{ hostIp?: string; hostPort: number; containerPort: number; protocol: string }>;
  managed: boolean;
  /** health of a target's service (starting | healthy | unhealthy), none for the others */
  health?: string | undefined;
}

export const LABEL_ADHOC = 'io.berth.adhoc';

export function containerView(c: EngineContainer, health?: string): ContainerView {
  return {
    ...(health && health !== 'none' ? { health } : {}),
    id: c.id,
    name: c.id,
    containerId: c.runtimeId,
    image: c.image,
    status: c.status,
    state: c.status === 'stopped' ? 'exited' : c.status,
    app: c.labels[LABEL_APP],
    service: c.labels[LABEL_SERVICE],
    exitCode: c.exitCode,
    oomKilled: c.oomKilled,
    startedAt: c.startedAt,
    finishedAt: c.finishedAt,
    createdAt: c.createdAt,
    ipAddress: c.ip,
    ports: c.ports ?? [],
    managed: c.labels[LABEL_APP] !== undefined,
  };
}

/** Images on the device, for `berth images` / `berth inspect <image>` through the agent. */
export interface ImageCatalog {
  list(): unknown[];
  inspect(ref: string): Promise<unknown>;
}

export interface ApiDeps {
  engine: ContainerEngine;
  /** the state dir's event log (`berth events`); optional so fakes need not have one */
  events?: EventLog | undefined;
  catalog?: ImageCatalog | undefined;
  images: ImageService;
  store: AgentStore;
  clock: Clock;
  mutex: Mutex;
  log: Logger;
  commands: CommandDeps;
  state: () => Promise<unknown>;
}

const MAX_BODY = 1024 * 1024;

/** Bodies are read whole up to 1 MiB, then checked for UTF-8 and depth before JSON.parse (lib/json-bounds). */
async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > MAX_BODY) throw invalidInput('request body larger than 1 MiB');
    chunks.push(c as Buffer);
  }
  if (n === 0) return {};
  const body = parseJsonBounded(Buffer.concat(chunks), { maxBytes: MAX_BODY, maxDepth: DEFAULT_MAX_DEPTH });
  if (!body.ok) throw invalidInput(`request body refused: ${body.reason}`);
  return body.value;
}

function parse<T>(schema: z.ZodType<T, z.ZodTypeDef, unknown>, raw: unknown, what: string): T {
  const r = schema.safeParse(raw);
  if (!r.success) throw invalidInput(`invalid ${what}: ${formatIssues(r.error)}`);
  return r.data;
}

/** The request target as a URL; anything `new URL` refuses (`GET http://[`) is InvalidInput, not a crash. */
function requestUrl(raw: string | undefined): URL {
  try {
    return new URL(raw ?? '/', 'http://berth');
  } catch {
    throw invalidInput(`request target ${JSON.stringify(String(raw).slice(0, 200))} is not a URL path`);
  }
}

function decodePart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw invalidInput(`path segment ${JSON.stringify(part.slice(0, 200))} is not valid percent-encoding`);
  }
}

let adhocSeq = 0;

/** how often a followed event stream looks for new events */
const EVENTS_POLL_MS = 250;

/** A time bound in ms since the epoch from a query parameter; InvalidInput when it is not one. */
function msParam(url: URL, name: string): number | undefined {
  const v = url.searchParams.get(name);
  if (v === null || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw invalidInput(`${name} must be milliseconds since the epoch`);
  return n;
}

/** route() wrote the response itself (a stream) */
const STREAMED = Symbol('streamed');

export class AgentApi {
  private server: http.Server | undefined;

  constructor(private readonly d: ApiDeps) {}

  /** A container by the name the agent gave it, its runtime id, or a unique prefix (≥ 4) of that id. */
  private async find(ref: string): Promise<EngineContainer> {
    const all = await this.d.engine.list();
    const exact = all.find((x) => x.id === ref || x.runtimeId === ref);
    if (exact) return exact;
    const byPrefix = ref.length >= 4 ? all.filter((x) => x.runtimeId?.startsWith(ref)) : [];
    if (byPrefix.length > 1) throw invalidInput(`container reference ${ref} is ambiguous`);
    if (byPrefix.length === 1) return byPrefix[0]!;
    // an app's service by name (`web`, `app/web`): its running container, the newest in a hand-over
    const [app, service] = ref.includes('/') ? ref.split('/', 2) : [undefined, ref];
    const ofService = all.filter(
      (x) => x.labels[LABEL_SERVICE] === service && (app === undefined || x.labels[LABEL_APP] === app),
    );
    const apps = [...new Set(ofService.map((x) => x.labels[LABEL_APP]))];
    if (apps.length > 1)
      throw invalidInput(
        `service ${ref} is in several apps (${apps.map((a) => `${a}/${service}`).join(', ')}): name one`,
      );
    const newest = (xs: EngineContainer[]) => xs.sort((a, b) => (b.createdAt ?? 0) - (a.createdAt ?? 0))[0];
    const hit = newest(ofService.filter((x) => x.status === 'running')) ?? newest(ofService);
    if (hit) return hit;
    throw notFound(`no such container: ${ref}`);
  }

  private healthOf(): Map<string, string> {
    return new Map(this.d.store.containers().map((c) => [c.id, c.health]));
  }

  private async route(
    method: string,
    url: URL,
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<unknown> {
    const { engine, mutex, store, clock } = this.d;
    const parts = url.pathname.split('/').filter(Boolean).map(decodePart);
    if (parts[0] !== 'v1') throw notFound(`no route ${method} ${url.pathname}`);
    const [, resource, ref, action] = parts;
    if (method === 'GET' && resource === 'ping') return { ok: true, pid: process.pid };
    if (method === 'GET' && resource === 'state') return this.d.state();
    if (method === 'POST' && resource === 'commands')
      return dispatchCommand(await readJson(req), this.d.commands);
    if (method === 'GET' && resource === 'events') return this.streamEvents(url, res);
    if (method === 'GET' && resource === 'images') {
      const catalog = this.d.catalog;
      if (!catalog) throw new BerthError('Unsupported', 'this agent has no image catalog');
      return ref ? catalog.inspect(ref) : catalog.list();
    }
    if (resource !== 'containers') throw notFound(`no route ${method} ${url.pathname}`);

    if (!ref) {
      if (method === 'GET') {
        const health = this.healthOf();
        return (await engine.list()).map((c) => containerView(c, health.get(c.id)));
      }
      if (method === 'POST') return this.run(parse(RunRequestSchema, await readJson(req), 'run request'));
      throw notFound(`no route ${method} ${url.pathname}`);
    }
    const c = await this.find(ref);
    const id = c.id;
    const managed = c.labels[LABEL_APP] !== undefined;
    if (method === 'GET' && !action) {
      if (!engine.inspect) throw new BerthError('Unsupported', 'this engine cannot inspect containers');
      return engine.inspect(id, { health: this.healthOf().get(id) });
    }
    if (method === 'GET' && action === 'stats') return { ...(await engine.stats(id)), at: clock.now() };
    if (method === 'GET' && action === 'top') {
      if (!engine.top) throw new BerthError('Unsupported', 'this engine cannot list processes');
      return engine.top(id);
    }
    if (method === 'GET' && action === 'logs') {
      const tailParam = url.searchParams.get('tail');
      const tail = tailParam === null || tailParam === 'all' ? undefined : Number(tailParam);
      if (tail !== undefined && (!Number.isInteger(tail) || tail < 0))
        throw invalidInput('tail must be a non-negative integer or "all"');
      const since = msParam(url, 'since');
      const until = msParam(url, 'until');
      if (url.searchParams.get('stream') !== '1' && since === undefined && until === undefined)
        return { lines: await engine.logs(id, { tail: tail ?? 200 }) };
      return this.streamLogs(id, { tail, since, until }, url.searchParams.get('follow') === '1', res);
    }
    if (method === 'POST' && action === 'restart') {
      const body = parse(
        z.object({ timeoutMs: z.number().int().nonnegative().default(10_000) }).strict(),
        await readJson(req),
        'restart request',
      );
      await mutex.run(async () => {
        if (managed) store.updateContainer(id, { stoppedByUser: false }, clock.now());
        await engine.stop(id, { timeoutMs: body.timeoutMs });
        await engine.start(id);
      });
      this.d.events?.record('container', 'restart', { id: c.runtimeId ?? id, name: id }, { image: c.image });
      return {};
    }
    if (method === 'POST' && action === 'start') {
      await mutex.run(async () => {
        if (managed) store.updateContainer(id, { stoppedByUser: false }, clock.now());
        await engine.start(id);
      });
      return {};
    }
    if (method === 'POST' && action === 'stop') {
      const body = parse(
        z.object({ timeoutMs: z.number().int().nonnegative().default(10_000) }).strict(),
        await readJson(req),
        'stop request',
      );
      await mutex.run(async () => {
        // A managed container stopped by hand stays stopped (restart policy) until started or re-deployed.
        if (managed) store.updateContainer(id, { stoppedByUser: true }, clock.now());
        await engine.stop(id, { timeoutMs: body.timeoutMs });
      });
      return {};
    }
    if (method === 'POST' && action === 'kill') {
      const body = parse(
        z.object({ signal: z.string().min(1).default('SIGKILL') }).strict(),
        await readJson(req),
        'kill request',
      );
      if (c.status !== 'running') throw conflict(`container ${id} is not running`);
      await mutex.run(async () => {
        if (managed) store.updateContainer(id, { stoppedByUser: true }, clock.now());
        await engine.kill(id, body.signal);
      });
      return {};
    }
    if (method === 'POST' && action === 'exec') {
      const body = parse(
        z
          .object({
            argv: z.array(z.string()).min(1),
            timeoutMs: z.number().int().positive().default(60_000),
            env: z.record(z.string()).optional(),
            cwd: z.string().startsWith('/').optional(),
            input: z.string().optional(),
          })
          .strict(),
        await readJson(req),
        'exec request',
      );
      if (c.status !== 'running') throw conflict(`container ${id} is not running`);
      return engine.exec(id, body.argv, {
        timeoutMs: body.timeoutMs,
        ...(body.env ? { env: body.env } : {}),
        ...(body.cwd ? { cwd: body.cwd } : {}),
        ...(body.input !== undefined ? { input: body.input } : {}),
      });
    }
    if (method === 'DELETE' && !action) {
      const force = url.searchParams.get('force') === '1';
      if (managed && !force)
        throw conflict(
          `container ${id} belongs to app ${c.labels[LABEL_APP]} of the target; change the target instead (or force)`,
        );
      if (c.status === 'running' && !force)
        throw conflict(`container ${id} is running; stop it first (or force)`);
      await mutex.run(async () => {
        if (c.status === 'running') await engine.kill(id, 'SIGKILL');
        await engine.remove(id, { force });
        if (managed) store.forgetContainer(id);
      });
      return {};
    }
    throw notFound(`no route ${method} ${url.pathname}`);
  }

  /**
   * NDJSON, one BerthEvent per line: the stored ones in [since, until], then (follow) new ones as they
   * happen. Following also reconciles the containers every poll, so an exit is seen as it happens.
   */
  private async streamEvents(url: URL, res: http.ServerResponse): Promise<typeof STREAMED> {
    const log = this.d.events;
    if (!log) throw new BerthError('Unsupported', 'this agent keeps no event log');
    const since = msParam(url, 'since');
    const until = msParam(url, 'until');
    const follow = url.searchParams.get('follow') === '1';
    let closed = false;
    res.on('close', () => {
      closed = true;
    });
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    let after = since === undefined && follow ? log.lastSeq() : 0;
    const send = () => {
      for (const e of log.list({ afterSeq: after, since, until })) {
        res.write(`${JSON.stringify(e)}\n`);
        after = e.seq;
      }
    };
    send();
    while (follow && !closed && (until === undefined || this.d.clock.now() <= until)) {
      await new Promise((r) => setTimeout(r, EVENTS_POLL_MS));
      await this.d.engine.list().catch(() => undefined); // reconciles: exits become "die" events
      send();
    }
    res.end();
    return STREAMED;
  }

  /** NDJSON, one LogLine per line, written as the lines come; ends when the container stops (follow). */
  private async streamLogs(
    id: string,
    window: { tail: number | undefined; since: number | undefined; until: number | undefined },
    follow: boolean,
    res: http.ServerResponse,
  ): Promise<typeof STREAMED> {
    const stream = this.d.engine.streamLogs?.bind(this.d.engine);
    if (!stream) throw new BerthError('Unsupported', 'this engine cannot stream logs');
    const ac = new AbortController();
    res.on('close', () => ac.abort());
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    try {
      await stream(id, { ...window, follow, signal: ac.signal }, (line) => {
        res.write(`${JSON.stringify(line)}\n`);
      });
    } catch (err) {
      // headers are gone: the error travels as the last line
      const code: ErrorCode = err instanceof BerthError ? err.code : 'Internal';
      res.write(`${JSON.stringify({ error: { code, message: errorMessage(err) } })}\n`);
    }
    res.end();
    return STREAMED;
  }

  private async run(r: z.infer<typeof RunRequestSchema>): Promise<{ id: string }> {
    const { engine, images, mutex } = this.d;
    const image = r.image ?? r.rootfs!;
    const reserved = Object.keys(r.labels).find((k) => k.startsWith('io.berth.'));
    if (reserved) throw invalidInput(`label ${reserved}: io.berth.* labels are berth's own`);
    if (!r.rootfs) {
      const st = await images.has(image);
      if (!st.fetched) throw notFound(`image ${image} is not on this device; pull it first`);
      if (!st.unpacked) await images.unpack(image);
    }
    const spec = ServiceSchema.parse({
      image,
      ...(r.command ? { command: r.command } : {}),
      ...(r.entrypoint ? { entrypoint: r.entrypoint } : {}),
      env: r.env,
      volumes: r.volumes.map((v) => ({ type: 'bind', ...v })),
      ports: r.ports,
      networkMode: r.networkMode,
      resources: {
        ...(r.memoryBytes ? { memoryBytes: r.memoryBytes } : {}),
        ...(r.cpus ? { cpus: r.cpus } : {}),
        ...(r.pids ? { pids: r.pids } : {}),
      },
      restart: { policy: 'no' },
      ...(r.user ? { user: r.user } : {}),
      ...(r.workingDir ? { workingDir: r.workingDir } : {}),
      ...(r.hostname ? { hostname: r.hostname } : {}),
      ...(r.stopSignal ? { stopSignal: r.stopSignal } : {}),
      readOnly: r.readOnly,
      privileged: r.privileged,
      capAdd: r.capAdd,
      capDrop: r.capDrop,
      devices: r.devices,
      labels: r.labels,
    });
    const name = r.name ?? `run-${Date.now().toString(36)}-${(adhocSeq++).toString(36)}`;
    return mutex.run(async () => {
      const { id } = await engine.create({
        name,
        image,
        spec,
        // the user's labels, and berth's mark: not part of any target, the reconciler leaves it alone
        labels: { ...r.labels, [LABEL_ADHOC]: 'true' },
        volumePaths: {},
        ...(r.rootfs ? { rootfsDir: r.rootfs } : {}),
        ...(r.autoRemove ? { autoRemove: true } : {}),
      });
      try {
        await engine.start(id);
      } catch (err) {
        // an ad-hoc run that failed leaves nothing behind (as `berth run` without an agent)
        await engine.remove(id, { force: true }).catch(() => undefined);
        throw err;
      }
      return { id };
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse) {
    let status = 200;
    let body: unknown;
    try {
      body = await this.route(req.method ?? 'GET', requestUrl(req.url), req, res);
      if (body === STREAMED) return;
    } catch (err) {
      const code: ErrorCode = err instanceof BerthError ? err.code : 'Internal';
      status = HTTP_STATUS[code];
      body = { error: { code, message: errorMessage(err) } };
      if (status >= 500)
        this.d.log.warn({ err: errorMessage(err), url: req.url }, 'local API request failed');
    }
    const data = JSON.stringify(body ?? {});
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
    res.end(data);
  }

  /** Listen on the socket; a stale socket file is replaced, a live agent on it is a Conflict. */
  async listen(socketPath: string): Promise<void> {
    // sun_path holds 108 bytes with the terminating NUL; a longer path fails with a bare EINVAL
    if (Buffer.byteLength(socketPath) > 107)
      throw invalidInput(
        `the agent's socket ${socketPath} is ${Buffer.byteLength(socketPath)} bytes long; unix sockets allow 107: use a shorter --state-dir`,
      );
    if (await socketAnswers(socketPath)) throw conflict(`another agent is already serving ${socketPath}`);
    await unlink(socketPath).catch(() => {});
    const server = http.createServer((req, res) =>
      // handle() answers every error itself; this catch is for a response that cannot be written at all
      this.handle(req, res).catch((err: unknown) => {
        this.d.log.warn({ err: errorMessage(err), url: req.url }, 'local API request dropped');
        res.destroy();
      }),
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    await chmod(socketPath, 0o660);
    this.server = server;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}

export function socketAnswers(socketPath: string, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.end();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}
