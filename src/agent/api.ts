/**
 * The agent's local API: HTTP/JSON on a unix socket (<state-dir>/berth.sock, mode 0660), as dockerd has.
 * `berth ps | run | logs | stop | rm | exec` talk to it while an agent runs, so they and the reconciler
 * never act on the same containers at once: every mutation goes through the agent's mutex.
 *
 *   GET    /v1/ping                          {ok, pid}
 *   GET    /v1/containers                    [ContainerView]
 *   POST   /v1/containers                    RunRequest → {id}          (ad-hoc container, like docker run)
 *   GET    /v1/containers/:id/logs?tail=N    {lines}
 *   POST   /v1/containers/:id/start          {}
 *   POST   /v1/containers/:id/stop           {timeoutMs?} → {}
 *   DELETE /v1/containers/:id?force=1        {}
 *   POST   /v1/containers/:id/exec           {argv, timeoutMs?} → {exitCode, stdout, stderr}
 *   GET    /v1/state                         reported state
 *   POST   /v1/commands                      Command → CommandResult    (same commands as from the fleet)
 *
 * Errors: {error: {code, message}} with an HTTP status per BerthError code.
 */
import { chmod, unlink } from 'node:fs/promises';
import * as http from 'node:http';
import * as net from 'node:net';
import { z } from 'zod';
import { NameSchema, ServiceSchema } from '../core/target.js';
import { BerthError, conflict, type ErrorCode, errorMessage, invalidInput, notFound } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { formatIssues } from '../oci/validate.js';
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

export const RunRequestSchema = z
  .object({
    image: z.string().min(1),
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
    ports: z
      .array(
        z.object({
          hostPort: z.number().int().min(1).max(65535).optional(),
          containerPort: z.number().int().min(1).max(65535),
          protocol: z.enum(['tcp', 'udp']).default('tcp'),
        }),
      )
      .default([]),
    networkMode: z.enum(['bridge', 'host', 'none']).default('bridge'),
    memoryBytes: z.number().int().positive().optional(),
    cpus: z.number().positive().optional(),
  })
  .strict();
export type RunRequest = z.input<typeof RunRequestSchema>;

export interface ContainerView {
  id: string;
  image: string;
  status: string;
  app?: string | undefined;
  service?: string | undefined;
  exitCode?: number | undefined;
  startedAt?: number | undefined;
  createdAt?: number | undefined;
  managed: boolean;
}

export const LABEL_ADHOC = 'io.berth.adhoc';

export function containerView(c: EngineContainer): ContainerView {
  return {
    id: c.id,
    image: c.image,
    status: c.status,
    app: c.labels[LABEL_APP],
    service: c.labels[LABEL_SERVICE],
    exitCode: c.exitCode,
    startedAt: c.startedAt,
    createdAt: c.createdAt,
    managed: c.labels[LABEL_APP] !== undefined,
  };
}

const STATUS: Record<ErrorCode, number> = {
  NotFound: 404,
  InvalidInput: 400,
  Conflict: 409,
  Unavailable: 503,
  Corrupt: 500,
  NoSpace: 507,
  Unsupported: 501,
  PermissionDenied: 403,
  Timeout: 504,
  Internal: 500,
};

export interface ApiDeps {
  engine: ContainerEngine;
  images: ImageService;
  store: AgentStore;
  clock: Clock;
  mutex: Mutex;
  log: Logger;
  commands: CommandDeps;
  state: () => Promise<unknown>;
}

const MAX_BODY = 1024 * 1024;

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > MAX_BODY) throw invalidInput('request body larger than 1 MiB');
    chunks.push(c as Buffer);
  }
  if (n === 0) return {};
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw invalidInput('request body is not valid JSON');
  }
}

function parse<T>(schema: z.ZodType<T, z.ZodTypeDef, unknown>, raw: unknown, what: string): T {
  const r = schema.safeParse(raw);
  if (!r.success) throw invalidInput(`invalid ${what}: ${formatIssues(r.error)}`);
  return r.data;
}

let adhocSeq = 0;

export class AgentApi {
  private server: http.Server | undefined;

  constructor(private readonly d: ApiDeps) {}

  private async find(id: string): Promise<EngineContainer> {
    const c = (await this.d.engine.list()).find((x) => x.id === id);
    if (!c) throw notFound(`container ${id} not found`);
    return c;
  }

  private async route(method: string, url: URL, req: http.IncomingMessage): Promise<unknown> {
    const { engine, mutex, store, clock } = this.d;
    const parts = url.pathname.split('/').filter(Boolean);
    if (parts[0] !== 'v1') throw notFound(`no route ${method} ${url.pathname}`);
    const [, res, id, action] = parts;
    if (method === 'GET' && res === 'ping') return { ok: true, pid: process.pid };
    if (method === 'GET' && res === 'state') return this.d.state();
    if (method === 'POST' && res === 'commands') return dispatchCommand(await readJson(req), this.d.commands);
    if (res !== 'containers') throw notFound(`no route ${method} ${url.pathname}`);

    if (!id) {
      if (method === 'GET') return (await engine.list()).map(containerView);
      if (method === 'POST') return this.run(parse(RunRequestSchema, await readJson(req), 'run request'));
      throw notFound(`no route ${method} ${url.pathname}`);
    }
    const c = await this.find(id);
    const managed = c.labels[LABEL_APP] !== undefined;
    if (method === 'GET' && action === 'logs') {
      const tail = Number(url.searchParams.get('tail') ?? '200');
      if (!Number.isInteger(tail) || tail < 1) throw invalidInput('tail must be a positive integer');
      return { lines: await engine.logs(id, { tail }) };
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
    if (method === 'POST' && action === 'exec') {
      const body = parse(
        z
          .object({
            argv: z.array(z.string()).min(1),
            timeoutMs: z.number().int().positive().default(60_000),
          })
          .strict(),
        await readJson(req),
        'exec request',
      );
      if (c.status !== 'running') throw conflict(`container ${id} is not running`);
      return engine.exec(id, body.argv, { timeoutMs: body.timeoutMs });
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

  private async run(r: z.infer<typeof RunRequestSchema>): Promise<{ id: string }> {
    const { engine, images, mutex } = this.d;
    const st = await images.has(r.image);
    if (!st.fetched) throw notFound(`image ${r.image} is not on this device; pull it first`);
    if (!st.unpacked) await images.unpack(r.image);
    const spec = ServiceSchema.parse({
      image: r.image,
      ...(r.command ? { command: r.command } : {}),
      ...(r.entrypoint ? { entrypoint: r.entrypoint } : {}),
      env: r.env,
      volumes: r.volumes.map((v) => ({ type: 'bind', ...v })),
      ports: r.ports,
      networkMode: r.networkMode,
      resources: {
        ...(r.memoryBytes ? { memoryBytes: r.memoryBytes } : {}),
        ...(r.cpus ? { cpus: r.cpus } : {}),
      },
      restart: { policy: 'no' },
    });
    const name = r.name ?? `run-${Date.now().toString(36)}-${(adhocSeq++).toString(36)}`;
    return mutex.run(async () => {
      const { id } = await engine.create({
        name,
        image: r.image,
        spec,
        labels: { [LABEL_ADHOC]: 'true' },
        volumePaths: {},
      });
      await engine.start(id);
      return { id };
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse) {
    const url = new URL(req.url ?? '/', 'http://berth');
    let status = 200;
    let body: unknown;
    try {
      body = await this.route(req.method ?? 'GET', url, req);
    } catch (err) {
      const code: ErrorCode = err instanceof BerthError ? err.code : 'Internal';
      status = STATUS[code];
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
    if (await socketAnswers(socketPath)) throw conflict(`another agent is already serving ${socketPath}`);
    await unlink(socketPath).catch(() => {});
    const server = http.createServer((req, res) => void this.handle(req, res));
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
