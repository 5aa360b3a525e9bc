/**
 * Serving the web console next to the API on the same listener: `/` is the app, `/assets/…` its bundled
 * files, everything under `/api/v1` stays the API's. The console is a static single-page app that speaks the
 * public API only (session cookie + CSRF header, SSE); these handlers add nothing but files and headers:
 *
 * - a strict Content-Security-Policy: scripts, styles, images and connections from this origin only, no
 *   inline script or style, no framing, no plugins, forms and <base> locked;
 * - gzip bodies as embedded (gunzipped once for a client that does not take gzip), strong ETags;
 * - content-hashed files cached for a year, the page itself revalidated on every load.
 */
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';

/** One file of the built console (scripts/console-build.mjs writes these). */
export interface EmbeddedAsset {
  path: string;
  type: string;
  /** base64 of the gzipped body */
  gzip: string;
  /** sha256 hex of the body */
  sha256: string;
  /** bytes before gzip */
  size: number;
  /** content-hashed name: cache for good */
  immutable: boolean;
}

export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "font-src 'self'",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "object-src 'none'",
].join('; ');

/** Headers every console response carries. */
export const CONSOLE_HEADERS: Record<string, string> = {
  'content-security-policy': CONSOLE_CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), usb=(), serial=()',
};

interface Served {
  asset: EmbeddedAsset;
  gzip: Buffer;
  plain?: Buffer;
  etag: string;
}

export class ConsoleAssets {
  private readonly files = new Map<string, Served>();

  constructor(assets: EmbeddedAsset[]) {
    for (const asset of assets) {
      const gzip = Buffer.from(asset.gzip, 'base64');
      const sha = createHash('sha256').update(gunzipSync(gzip)).digest('hex');
      if (sha !== asset.sha256) throw new Error(`console asset ${asset.path} does not match its sha256`);
      this.files.set(asset.path, { asset, gzip, etag: `"${asset.sha256.slice(0, 32)}"` });
    }
  }

  get size(): number {
    return this.files.size;
  }

  /** The console's answer to a GET/HEAD outside /api, or undefined when it has no such file. */
  respond(method: string, pathname: string, headers: Headers): Response | undefined {
    if (method !== 'GET' && method !== 'HEAD') return undefined;
    // the app routes in the fragment (#/devices/x), so every page is `/`; index.html is an alias
    const file = this.files.get(pathname === '/index.html' ? '/' : pathname);
    if (!file) return undefined;
    const h = new Headers(CONSOLE_HEADERS);
    h.set('content-type', file.asset.type);
    h.set('etag', file.etag);
    h.set('vary', 'accept-encoding');
    h.set('cache-control', file.asset.immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
    if (headers.get('if-none-match') === file.etag) return new Response(null, { status: 304, headers: h });
    let body: Buffer;
    if (/\bgzip\b/.test(headers.get('accept-encoding') ?? '')) {
      h.set('content-encoding', 'gzip');
      body = file.gzip;
    } else {
      file.plain ??= gunzipSync(file.gzip);
      body = file.plain;
    }
    h.set('content-length', String(body.length));
    return new Response(method === 'HEAD' ? null : new Uint8Array(body), { status: 200, headers: h });
  }
}
