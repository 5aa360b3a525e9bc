/**
 * The console's only way to the fleet: the public API under /api/v1, as a browser calls it — the session
 * cookie (HttpOnly, set by POST /session, never visible here) plus the CSRF token from the session answer in
 * the X-CSRF-Token header of every changing call — and the SSE stream for live updates. The CSRF token is
 * kept in memory only (no storage), so a reload asks GET /session again.
 */
import type { Role } from '../../identity/roles.js';

export const API = '/api/v1';

export interface SessionInfo {
  user: string;
  role: Role;
  via: 'session' | 'token';
  csrfToken: string | null;
  expiresAt: string | null;
}

/** An error the API answered ({code, message, details}) or the network failed with. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

let csrf: string | null = null;
let onUnauthenticated: (() => void) | undefined;

export function setCsrf(token: string | null): void {
  csrf = token;
}

/** Called when a call answers 401 (session ended): the app shows the login page. */
export function whenUnauthenticated(fn: () => void): void {
  onUnauthenticated = fn;
}

type Query = Record<string, string | number | boolean | undefined | null | string[]>;

export function qs(q: Query | undefined): string {
  if (!q) return '';
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) for (const one of v) p.append(k, one);
    else p.append(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

/** Path segments are always encoded: an id never changes the path it is put in. */
export function seg(s: string): string {
  return encodeURIComponent(s);
}

export async function call<T>(
  method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE',
  path: string,
  o: { query?: Query; body?: unknown; signal?: AbortSignal } = {},
): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (method !== 'GET' && csrf) headers['x-csrf-token'] = csrf;
  if (o.body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(API + path + qs(o.query), {
      method,
      headers,
      credentials: 'same-origin',
      body: o.body === undefined ? null : JSON.stringify(o.body),
      signal: o.signal ?? null,
    });
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err;
    throw new ApiError(0, 'Unavailable', `the fleet server did not answer (${(err as Error).message})`);
  }
  return answer<T>(res, path);
}

async function answer<T>(res: Response, path: string): Promise<T> {
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    throw new ApiError(res.status, 'Internal', `the server answered ${res.status} with something not JSON`);
  }
  if (!res.ok) {
    const e = (body ?? {}) as { code?: string; message?: string; details?: Record<string, unknown> };
    const err = new ApiError(res.status, e.code ?? 'Internal', e.message ?? `HTTP ${res.status}`, e.details);
    if (res.status === 401 && path !== '/session') onUnauthenticated?.();
    throw err;
  }
  return body as T;
}

/**
 * A streamed upload with progress (fetch cannot report upload progress): the raw file as the body.
 */
export function upload<T>(
  path: string,
  query: Query,
  file: Blob,
  contentType: string,
  onProgress: (sent: number, total: number) => void,
  signal?: AbortSignal,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', API + path + qs(query));
    xhr.setRequestHeader('content-type', contentType);
    if (csrf) xhr.setRequestHeader('x-csrf-token', csrf);
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(new ApiError(0, 'Unavailable', 'the upload was cut off'));
    xhr.onabort = () => reject(new ApiError(0, 'Aborted', 'upload cancelled'));
    xhr.onload = () => {
      const res = new Response(xhr.status === 204 ? null : xhr.responseText, { status: xhr.status });
      answer<T>(res, path).then(resolve, reject);
    };
    signal?.addEventListener('abort', () => xhr.abort(), { once: true });
    xhr.send(file);
  });
}

// ---- live updates --------------------------------------------------------------------------------

export interface LiveEvent {
  type: string;
  at: number;
  deviceId?: string;
  [k: string]: unknown;
}

type Listener = (e: LiveEvent) => void;

/**
 * One EventSource for the whole app; pages subscribe to the event types they show. A `resync` (this client
 * fell behind and events were dropped) or a reconnect is passed on as a `resync` event: re-read everything.
 */
export class LiveStream {
  private es: EventSource | undefined;
  private readonly listeners = new Set<Listener>();
  private readonly known = new Set<string>();
  private statusFns = new Set<(s: 'open' | 'connecting' | 'closed') => void>();
  status: 'open' | 'connecting' | 'closed' = 'closed';
  private everOpened = false;

  start(): void {
    if (this.es) return;
    const es = new EventSource(`${API}/events/stream`, { withCredentials: true });
    this.es = es;
    this.setStatus('connecting');
    es.onopen = () => {
      this.setStatus('open');
      if (this.everOpened) this.emit({ type: 'resync', at: Date.now() });
      this.everOpened = true;
    };
    es.onerror = () => this.setStatus(es.readyState === EventSource.CLOSED ? 'closed' : 'connecting');
    for (const t of [
      'device.online',
      'device.offline',
      'device.state',
      'device.event',
      'deployment',
      'deployment.progress',
      'device.revoked',
      'device.enrolled',
      'rollout',
      'rollout.progress',
      'resync',
    ])
      this.listen(t);
  }

  /** Event types beyond the ones above (added by later API versions). */
  listen(type: string): void {
    if (!this.es || this.known.has(type)) return;
    this.known.add(type);
    this.es.addEventListener(type, (m) => {
      try {
        const data = JSON.parse((m as MessageEvent<string>).data) as LiveEvent;
        this.emit({ ...data, type });
      } catch {
        /* a frame that is not JSON: ignore */
      }
    });
  }

  stop(): void {
    this.es?.close();
    this.es = undefined;
    this.known.clear();
    this.everOpened = false;
    this.setStatus('closed');
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onStatus(fn: (s: 'open' | 'connecting' | 'closed') => void): () => void {
    this.statusFns.add(fn);
    return () => this.statusFns.delete(fn);
  }

  private setStatus(s: 'open' | 'connecting' | 'closed'): void {
    this.status = s;
    for (const fn of this.statusFns) fn(s);
  }

  private emit(e: LiveEvent): void {
    for (const fn of this.listeners) fn(e);
  }
}

export const live = new LiveStream();
