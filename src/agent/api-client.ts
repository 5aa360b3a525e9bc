/**
 * Client of the agent's local API (src/agent/api.ts) for the CLI. `connectAgent(stateDir)` returns a
 * client when an agent answers on <state-dir>/berth.sock, undefined when none does — then (and only then)
 * the CLI acts on the state dir directly.
 */
import { lstatSync } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { ImageRecord } from '../content/images.js';
import { BerthError, errorFromWire, unavailable } from '../lib/errors.js';
import type { BerthEvent, EventStreamOptions } from '../runtime/events.js';
import type { ContainerView, RunRequest } from './api.js';
import type { CommandResult } from './commands.js';
import type { ContainerStats, ExecResult, LogLine, LogStreamOptions } from './ports.js';

export const SOCKET_NAME = 'berth.sock';
export const agentSocketPath = (stateDir: string) => path.join(stateDir, SOCKET_NAME);

interface ApiError {
  code?: string;
  message?: string;
}

function toBerthError(e: ApiError | undefined, status: number | undefined): BerthError {
  return errorFromWire(e, `agent answered ${status}`);
}

export class AgentClient {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 120_000,
  ) {}

  request<T>(method: string, urlPath: string, body?: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
        {
          socketPath: this.socketPath,
          method,
          path: urlPath,
          timeout: this.timeoutMs,
          headers: data
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) }
            : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            let parsed: unknown;
            try {
              parsed = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
            } catch {
              reject(unavailable(`agent at ${this.socketPath} answered ${res.statusCode} with invalid JSON`));
              return;
            }
            if ((res.statusCode ?? 500) >= 400) {
              reject(toBerthError((parsed as { error?: ApiError }).error, res.statusCode));
            } else resolve(parsed as T);
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(new BerthError('Timeout', `agent at ${this.socketPath} did not answer in time`)),
      );
      req.on('error', (err) =>
        reject(
          err instanceof BerthError ? err : unavailable(`agent at ${this.socketPath}: ${err.message}`, err),
        ),
      );
      if (data) req.write(data);
      req.end();
    });
  }

  ping() {
    return this.request<{ ok: boolean; pid: number }>('GET', '/v1/ping');
  }
  ps() {
    return this.request<ContainerView[]>('GET', '/v1/containers');
  }
  run(r: RunRequest) {
    return this.request<{ id: string }>('POST', '/v1/containers', r);
  }
  logs(id: string, tail = 200) {
    return this.request<{ lines: string[] }>(
      'GET',
      `/v1/containers/${encodeURIComponent(id)}/logs?tail=${tail}`,
    );
  }
  /** the output as NDJSON lines (LogLine), live with `follow` until the container stops or `signal` aborts */
  streamLogs(id: string, opts: LogStreamOptions, emit: (line: LogLine) => void): Promise<void> {
    const q = new URLSearchParams({
      stream: '1',
      follow: opts.follow ? '1' : '0',
      tail: opts.tail === undefined ? 'all' : String(opts.tail),
      ...(opts.since !== undefined ? { since: String(opts.since) } : {}),
      ...(opts.until !== undefined ? { until: String(opts.until) } : {}),
    });
    return this.ndjson(`/v1/containers/${encodeURIComponent(id)}/logs?${q}`, opts.signal, emit);
  }

  /** the event log as NDJSON (BerthEvent): stored ones in [since, until], then live ones with `follow` */
  events(opts: EventStreamOptions, emit: (e: BerthEvent) => void): Promise<void> {
    const q = new URLSearchParams({
      follow: opts.follow ? '1' : '0',
      ...(opts.since !== undefined ? { since: String(opts.since) } : {}),
      ...(opts.until !== undefined ? { until: String(opts.until) } : {}),
    });
    return this.ndjson(`/v1/events?${q}`, opts.signal, emit);
  }

  /** GET an NDJSON stream; a last line `{error}` (the stream had started) rejects with that error */
  private ndjson<T>(urlPath: string, signal: AbortSignal | undefined, emit: (v: T) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = http.request(
        { socketPath: this.socketPath, method: 'GET', path: urlPath, ...(signal ? { signal } : {}) },
        (res) => {
          let buf = '';
          let failed: BerthError | undefined;
          const lines = (text: string) => {
            for (const l of text.split('\n')) {
              if (!l) continue;
              const j = JSON.parse(l) as T & { error?: { code?: string; message?: string } };
              if (j.error) failed = toBerthError(j.error, res.statusCode);
              else emit(j);
            }
          };
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            buf += c;
            const i = buf.lastIndexOf('\n');
            if (i < 0) return;
            lines(buf.slice(0, i));
            buf = buf.slice(i + 1);
          });
          res.on('end', () => {
            try {
              lines(buf);
            } catch {
              failed ??= unavailable(`agent at ${this.socketPath} sent a bad stream`);
            }
            if (failed) reject(failed);
            else resolve();
          });
          res.on('error', (err) => (signal?.aborted ? resolve() : reject(err)));
        },
      );
      req.on('error', (err) =>
        signal?.aborted ? resolve() : reject(unavailable(`agent at ${this.socketPath}: ${err.message}`, err)),
      );
      req.end();
    });
  }
  inspect(id: string) {
    return this.request<unknown>('GET', `/v1/containers/${encodeURIComponent(id)}`);
  }
  stats(id: string) {
    return this.request<ContainerStats & { at: number }>(
      'GET',
      `/v1/containers/${encodeURIComponent(id)}/stats`,
    );
  }
  top(id: string) {
    return this.request<{ titles: string[]; processes: string[][] }>(
      'GET',
      `/v1/containers/${encodeURIComponent(id)}/top`,
    );
  }
  restart(id: string, timeoutMs = 10_000) {
    return this.request<object>('POST', `/v1/containers/${encodeURIComponent(id)}/restart`, { timeoutMs });
  }
  images() {
    return this.request<ImageRecord[]>('GET', '/v1/images');
  }
  image(ref: string) {
    return this.request<Record<string, unknown>>('GET', `/v1/images/${encodeURIComponent(ref)}`);
  }
  start(id: string) {
    return this.request<object>('POST', `/v1/containers/${encodeURIComponent(id)}/start`, {});
  }
  stop(id: string, timeoutMs = 10_000) {
    return this.request<object>('POST', `/v1/containers/${encodeURIComponent(id)}/stop`, { timeoutMs });
  }
  kill(id: string, signal = 'SIGKILL') {
    return this.request<object>('POST', `/v1/containers/${encodeURIComponent(id)}/kill`, { signal });
  }
  rm(id: string, force = false) {
    return this.request<object>(
      'DELETE',
      `/v1/containers/${encodeURIComponent(id)}${force ? '?force=1' : ''}`,
    );
  }
  exec(
    id: string,
    argv: string[],
    opts: { timeoutMs?: number; env?: Record<string, string>; cwd?: string; input?: string } = {},
  ) {
    return this.request<ExecResult>('POST', `/v1/containers/${encodeURIComponent(id)}/exec`, {
      argv,
      timeoutMs: opts.timeoutMs ?? 60_000,
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      ...(opts.input !== undefined ? { input: opts.input } : {}),
    });
  }
  state() {
    return this.request<unknown>('GET', '/v1/state');
  }
  command(c: Record<string, unknown>) {
    return this.request<CommandResult>('POST', '/v1/commands', c);
  }
}

/** A client if an agent answers on the state dir's socket, else undefined (the CLI then works directly). */
export async function connectAgent(stateDir: string, timeoutMs = 1000): Promise<AgentClient | undefined> {
  // no socket, no agent: answer without an HTTP request (its connection set-up costs a cold `berth ps`)
  if (!isSocket(agentSocketPath(stateDir))) return undefined;
  const c = new AgentClient(agentSocketPath(stateDir), timeoutMs);
  try {
    await c.ping();
    return new AgentClient(c.socketPath);
  } catch {
    return undefined;
  }
}

function isSocket(file: string): boolean {
  try {
    return lstatSync(file).isSocket();
  } catch {
    return false;
  }
}
