/**
 * Client of the agent's local API (src/agent/api.ts) for the CLI. `connectAgent(stateDir)` returns a
 * client when an agent answers on <state-dir>/berth.sock, undefined when none does — then (and only then)
 * the CLI acts on the state dir directly.
 */
import * as http from 'node:http';
import * as path from 'node:path';
import { BerthError, type ErrorCode, ErrorCodes, unavailable } from '../lib/errors.js';
import type { ContainerView, RunRequest } from './api.js';
import type { CommandResult } from './commands.js';
import type { ExecResult } from './ports.js';

export const SOCKET_NAME = 'berth.sock';
export const agentSocketPath = (stateDir: string) => path.join(stateDir, SOCKET_NAME);

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
              const e = (parsed as { error?: { code?: string; message?: string } }).error;
              const code = (ErrorCodes as readonly string[]).includes(e?.code ?? '')
                ? (e!.code as ErrorCode)
                : 'Internal';
              reject(new BerthError(code, e?.message ?? `agent answered ${res.statusCode}`));
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
  start(id: string) {
    return this.request<object>('POST', `/v1/containers/${encodeURIComponent(id)}/start`, {});
  }
  stop(id: string, timeoutMs = 10_000) {
    return this.request<object>('POST', `/v1/containers/${encodeURIComponent(id)}/stop`, { timeoutMs });
  }
  rm(id: string, force = false) {
    return this.request<object>(
      'DELETE',
      `/v1/containers/${encodeURIComponent(id)}${force ? '?force=1' : ''}`,
    );
  }
  exec(id: string, argv: string[], timeoutMs = 60_000) {
    return this.request<ExecResult>('POST', `/v1/containers/${encodeURIComponent(id)}/exec`, {
      argv,
      timeoutMs,
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
  const c = new AgentClient(agentSocketPath(stateDir), timeoutMs);
  try {
    await c.ping();
    return new AgentClient(c.socketPath);
  } catch {
    return undefined;
  }
}
