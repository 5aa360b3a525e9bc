import { createHash } from 'node:crypto';
import { invalidInput } from '../lib/errors.js';

/** Only sha256 digests: what every OCI producer berth meets writes, and what the content store keys by. */
export type Digest = `sha256:${string}`;

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export function isDigest(s: unknown): s is Digest {
  return typeof s === 'string' && DIGEST_RE.test(s);
}

export function parseDigest(s: unknown, what = 'digest'): Digest {
  if (!isDigest(s)) {
    throw invalidInput(`invalid ${what} ${JSON.stringify(s)}: expected sha256:<64 lowercase hex>`);
  }
  return s;
}

export function digestHex(d: Digest): string {
  return d.slice('sha256:'.length);
}

export function sha256Digest(data: string | Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/**
 * ChainID of a stack of layers (image-spec config.md): ChainID(L0) = DiffID(L0);
 * ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
 */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const d of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? d : sha256Digest(`${prev} ${d}`));
  }
  return out;
}
