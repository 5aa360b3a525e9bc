/**
 * The HTTP transport: a fleet server's API (`/api/v1`) with an API token, over node's http/https (a
 * private CA for a self-signed server, streamed uploads with progress). Non-2xx answers become the
 * BerthError the server named ({code, message, details}).
 */

import { createReadStream, promises as fsp } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { Readable } from 'node:stream';
import { BerthError, errorFromWire, invalidInput, unavailable, withContext } from '../../lib/errors.js';
import type { RolloutAbortBody } from '../api/schemas.js';
import type {
  DeviceListQuery,
  FleetClient,
  MetricListQuery,
  RolloutDeviceListQuery,
  RolloutListQuery,
} from './client.js';

export interface HttpClientOptions {
  /** https://fleet.example:8080 */
  server: string;
  token: string;
  /** PEM CA for a server certificate no public CA signed */
  ca?: Buffer | undefined;
  /** answers larger than this are refused (default 64 MiB) */
  maxResponse?: number;
}

type Query = Record<string, string | number | boolean | string[] | undefined>;

export class HttpFleetClient implements FleetClient {
  readonly where: string;
  private readonly base: URL;
  private readonly agent: http.Agent;

  constructor(private readonly o: HttpClientOptions) {
    let u: URL;
    try {
      u = new URL(o.server);
    } catch {
      throw invalidInput(`server ${o.server}: not a URL (expected https://host:port)`);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:')
      throw invalidInput(`server ${o.server}: expected an http:// or https:// URL`);
    this.base = u;
    this.where = u.origin;
    this.agent =
      u.protocol === 'https:'
        ? new https.Agent({ keepAlive: true, ...(o.ca ? { ca: o.ca } : {}) })
        : new http.Agent({ keepAlive: true });
  }

  /** One API call; `body` is JSON, or a stream for uploads (`contentType` then says what it is). */
  async request<T>(
    method: string,
    path: string,
    o: { query?: Query; body?: unknown; stream?: Readable; contentType?: string; length?: number } = {},
  ): Promise<T> {
    const url = new URL(`${this.base.pathname.replace(/\/$/, '')}/api/v1${path}`, this.base);
    for (const [k, v] of Object.entries(o.query ?? {})) {
      if (v === undefined) continue;
      for (const one of Array.isArray(v) ? v : [v]) url.searchParams.append(k, String(one));
    }
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.session) {
      headers.cookie = this.session.cookie;
      if (this.session.csrf) headers['x-csrf-token'] = this.session.csrf;
    } else if (this.o.token) headers.authorization = `Bearer ${this.o.token}`;
    let payload: Buffer | undefined;
    if (o.body !== undefined) {
      payload = Buffer.from(JSON.stringify(o.body));
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    } else if (o.stream) {
      headers['content-type'] = o.contentType ?? 'application/octet-stream';
      if (o.length !== undefined) headers['content-length'] = String(o.length);
    }
    const lib = url.protocol === 'https:' ? https : http;
    const max = this.o.maxResponse ?? 64 * 1024 * 1024;
    const { status, text, setCookie } = await new Promise<{
      status: number;
      text: string;
      setCookie?: string[];
    }>((resolve, reject) => {
      const req = lib.request(url, { method, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        let n = 0;
        res.on('data', (c: Buffer) => {
          n += c.length;
          if (n > max) {
            req.destroy(unavailable(`${this.where}: answer larger than ${max} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            text: Buffer.concat(chunks).toString('utf8'),
            setCookie: res.headers['set-cookie'],
          }),
        );
        res.on('error', reject);
      });
      req.on('error', (err) =>
        reject(
          err instanceof BerthError
            ? err
            : unavailable(`cannot reach the fleet server ${this.where}: ${err.message}`, err),
        ),
      );
      if (o.stream) {
        o.stream.on('error', (err) => req.destroy(err));
        o.stream.pipe(req);
      } else req.end(payload);
    });
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      throw unavailable(`${this.where}: answer ${status} is not JSON (is this a berth fleet server?)`);
    }
    if (status >= 200 && status < 300) {
      const cookie = setCookie?.[0]?.split(';')[0];
      if (cookie && path === '/session' && method === 'POST')
        this.session = { cookie, csrf: (json as { csrfToken?: string }).csrfToken ?? '' };
      return json as T;
    }
    const e = json as { code?: string; message?: string; details?: Record<string, unknown> } | undefined;
    const err = errorFromWire(e, `${method} ${path}: HTTP ${status}`);
    throw new BerthError(err.code, err.message, { details: e?.details });
  }

  /** cookie session (only `loginAndMakeToken` uses one) */
  private session: { cookie: string; csrf: string } | undefined;

  /**
   * Password login for a CLI: open a session, make an API token with the user's role for this machine,
   * end the session. The password never leaves this call; the token is what gets saved.
   */
  async loginAndMakeToken(
    name: string,
    password: string,
    o: { name: string; expiresAt: string },
  ): Promise<{ token: string; id: string }> {
    const s = await this.request<{ role: string }>('POST', '/session', { body: { name, password } });
    try {
      const made = await this.request<{ token: string; info: { id: string } }>('POST', '/tokens', {
        body: { name: o.name, role: s.role, expiresAt: o.expiresAt },
      });
      return { token: made.token, id: made.info.id };
    } finally {
      await this.request('DELETE', '/session').catch(() => undefined);
      this.session = undefined;
    }
  }

  whoami() {
    return this.request<Awaited<ReturnType<FleetClient['whoami']>>>('GET', '/session');
  }

  devices(q: DeviceListQuery) {
    return this.request<Awaited<ReturnType<FleetClient['devices']>>>('GET', '/devices', {
      query: q as Query,
    });
  }
  device(id: string) {
    return this.request<Awaited<ReturnType<FleetClient['device']>>>(
      'GET',
      `/devices/${encodeURIComponent(id)}`,
    );
  }
  events(q: Parameters<FleetClient['events']>[0]) {
    return this.request<Awaited<ReturnType<FleetClient['events']>>>('GET', '/events', { query: q as Query });
  }
  metrics(deviceId: string, q: MetricListQuery) {
    return this.request<Awaited<ReturnType<FleetClient['metrics']>>>(
      'GET',
      `/devices/${encodeURIComponent(deviceId)}/metrics`,
      { query: q as Query },
    );
  }
  async images() {
    return (await this.request<{ items: Awaited<ReturnType<FleetClient['images']>> }>('GET', '/images'))
      .items;
  }
  deployments(q: Parameters<FleetClient['deployments']>[0]) {
    return this.request<Awaited<ReturnType<FleetClient['deployments']>>>('GET', '/deployments', {
      query: q as Query,
    });
  }

  setLabels(deviceId: string, patch: Parameters<FleetClient['setLabels']>[1]) {
    return this.request<Awaited<ReturnType<FleetClient['setLabels']>>>(
      'PATCH',
      `/devices/${encodeURIComponent(deviceId)}/labels`,
      { body: patch },
    );
  }
  revokeDevice(deviceId: string) {
    return this.request<Awaited<ReturnType<FleetClient['revokeDevice']>>>(
      'POST',
      `/devices/${encodeURIComponent(deviceId)}/revoke`,
    );
  }

  /** Upload an archive file as the request body (streamed, never read whole). */
  async pushImage(source: string, tag: string, onProgress?: (bytes: number, total: number) => void) {
    const st = await fsp.stat(source).catch((err: NodeJS.ErrnoException) => {
      throw withContext(`cannot read image source ${source}`, err);
    });
    if (!st.isFile())
      throw invalidInput(
        `${source}: a remote push takes an oci-archive or docker-archive file (make one: skopeo copy oci:${source} oci-archive:x.tar)`,
      );
    const stream = createReadStream(source);
    if (onProgress) {
      let n = 0;
      stream.on('data', (b) => {
        n += (b as Buffer).length;
        onProgress(n, st.size);
      });
    }
    return this.request<Awaited<ReturnType<FleetClient['pushImage']>>>('POST', '/images', {
      query: { tag },
      stream,
      contentType: 'application/x-tar',
      length: st.size,
    });
  }
  async deleteImage(name: string) {
    await this.request('DELETE', `/images/${encodeURIComponent(name)}`);
  }

  async releases() {
    return (await this.request<{ items: Awaited<ReturnType<FleetClient['releases']>> }>('GET', '/releases'))
      .items;
  }
  release(version: string) {
    return this.request<Awaited<ReturnType<FleetClient['release']>>>(
      'GET',
      `/releases/${encodeURIComponent(version)}`,
    );
  }
  async deleteRelease(version: string) {
    await this.request('DELETE', `/releases/${encodeURIComponent(version)}`);
  }

  validateDeployment(req: Parameters<FleetClient['deploy']>[0]) {
    return this.request<Awaited<ReturnType<FleetClient['validateDeployment']>>>(
      'POST',
      '/deployments/validate',
      {
        body: req,
      },
    );
  }
  deploy(req: Parameters<FleetClient['deploy']>[0]) {
    return this.request<Awaited<ReturnType<FleetClient['deploy']>>>('POST', '/deployments', { body: req });
  }
  clearOverride(deviceId: string) {
    return this.request<Awaited<ReturnType<FleetClient['clearOverride']>>>(
      'DELETE',
      `/devices/${encodeURIComponent(deviceId)}/target`,
    );
  }
  redeploy(deploymentId: number, req: Parameters<FleetClient['redeploy']>[1]) {
    return this.request<Awaited<ReturnType<FleetClient['redeploy']>>>(
      'POST',
      `/deployments/${deploymentId}/redeploy`,
      { body: req },
    );
  }
  progress(deploymentId: number) {
    return this.request<Awaited<ReturnType<FleetClient['progress']>>>(
      'GET',
      `/deployments/${deploymentId}/progress`,
    );
  }

  validateRollout(req: Parameters<FleetClient['validateRollout']>[0]) {
    return this.request<Awaited<ReturnType<FleetClient['validateRollout']>>>('POST', '/rollouts/validate', {
      body: req,
    });
  }
  createRollout(req: Parameters<FleetClient['createRollout']>[0]) {
    return this.request<Awaited<ReturnType<FleetClient['createRollout']>>>('POST', '/rollouts', {
      body: req,
    });
  }
  rollouts(q: RolloutListQuery) {
    return this.request<Awaited<ReturnType<FleetClient['rollouts']>>>('GET', '/rollouts', {
      query: q as Query,
    });
  }
  rollout(id: number) {
    return this.request<Awaited<ReturnType<FleetClient['rollout']>>>('GET', `/rollouts/${id}`);
  }
  rolloutDevices(id: number, q: RolloutDeviceListQuery) {
    return this.request<Awaited<ReturnType<FleetClient['rolloutDevices']>>>(
      'GET',
      `/rollouts/${id}/devices`,
      {
        query: q as Query,
      },
    );
  }
  rolloutAction(id: number, action: Parameters<FleetClient['rolloutAction']>[1], body?: RolloutAbortBody) {
    return this.request<Awaited<ReturnType<FleetClient['rolloutAction']>>>(
      'POST',
      `/rollouts/${id}/${action}`,
      {
        ...(action === 'abort' ? { body: body ?? {} } : {}),
      },
    );
  }

  async enrollmentTokens() {
    return (
      await this.request<{ items: Awaited<ReturnType<FleetClient['enrollmentTokens']>> }>(
        'GET',
        '/enrollment-tokens',
      )
    ).items;
  }
  createEnrollmentToken(req: Parameters<FleetClient['createEnrollmentToken']>[0]) {
    return this.request<Awaited<ReturnType<FleetClient['createEnrollmentToken']>>>(
      'POST',
      '/enrollment-tokens',
      {
        body: req,
      },
    );
  }
  async revokeEnrollmentToken(id: string) {
    await this.request('DELETE', `/enrollment-tokens/${encodeURIComponent(id)}`);
  }

  command(deviceId: string, req: Parameters<FleetClient['command']>[1]) {
    return this.request<Awaited<ReturnType<FleetClient['command']>>>(
      'POST',
      `/devices/${encodeURIComponent(deviceId)}/commands`,
      { body: req },
    );
  }

  async users() {
    return (await this.request<{ items: Awaited<ReturnType<FleetClient['users']>> }>('GET', '/users')).items;
  }
  addUser(u: Parameters<FleetClient['addUser']>[0]) {
    return this.request<Awaited<ReturnType<FleetClient['addUser']>>>('POST', '/users', { body: u });
  }
  updateUser(name: string, patch: Parameters<FleetClient['updateUser']>[1]) {
    return this.request<Awaited<ReturnType<FleetClient['updateUser']>>>(
      'PATCH',
      `/users/${encodeURIComponent(name)}`,
      {
        body: patch,
      },
    );
  }
  async deleteUser(name: string) {
    await this.request('DELETE', `/users/${encodeURIComponent(name)}`);
  }

  async tokens() {
    return (await this.request<{ items: Awaited<ReturnType<FleetClient['tokens']>> }>('GET', '/tokens'))
      .items;
  }
  createToken(req: Parameters<FleetClient['createToken']>[0]) {
    return this.request<Awaited<ReturnType<FleetClient['createToken']>>>('POST', '/tokens', { body: req });
  }
  revokeToken(id: string) {
    return this.request<Awaited<ReturnType<FleetClient['revokeToken']>>>(
      'DELETE',
      `/tokens/${encodeURIComponent(id)}`,
    );
  }

  audit(q: Parameters<FleetClient['audit']>[0]) {
    return this.request<Awaited<ReturnType<FleetClient['audit']>>>('GET', '/audit', { query: q as Query });
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }
}
