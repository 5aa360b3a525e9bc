/**
 * Routes live in the URL fragment (`#/devices?status=failed`, `#/devices/<id>`): the server serves one page
 * at `/`, and a reload or a shared link lands on the same view with the same filters.
 */
import { useEffect, useState } from 'preact/hooks';

export interface Route {
  /** path segments after `#/`, decoded */
  parts: string[];
  query: URLSearchParams;
}

export function parseHash(hash: string): Route {
  const raw = hash.replace(/^#\/?/, '');
  const q = raw.indexOf('?');
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const parts = path
    .split('/')
    .filter(Boolean)
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
  return { parts, query: new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '') };
}

export function href(parts: string[], query?: Record<string, string | undefined>): string {
  const path = parts.map(encodeURIComponent).join('/');
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== '') p.set(k, v);
  const s = p.toString();
  return `#/${path}${s ? `?${s}` : ''}`;
}

export function go(parts: string[], query?: Record<string, string | undefined>, replace = false): void {
  const h = href(parts, query);
  if (replace) history.replaceState(null, '', h);
  else location.hash = h;
  if (replace) window.dispatchEvent(new HashChangeEvent('hashchange'));
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseHash(location.hash));
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}
