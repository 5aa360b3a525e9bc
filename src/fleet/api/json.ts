/**
 * Request bodies are bounded before they are parsed: a byte cap while reading, then berth's bounded JSON
 * parse (encoding, nesting depth before JSON.parse — a deep `[[[[…` costs the stack, not bytes), then the
 * route's schema.
 */
import type { IncomingMessage } from 'node:http';
import { invalidInput } from '../../lib/errors.js';
import { parseJsonOrThrow } from '../../lib/json-bounds.js';

export const DEFAULT_MAX_BODY = 1024 * 1024;
export const MAX_JSON_DEPTH = 32;

export async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) throw tooLarge(max);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > max) throw tooLarge(max);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks, n);
}

function tooLarge(max: number) {
  return invalidInput(`body: larger than the ${max} byte limit`);
}

/** A request body as JSON, bounded (src/lib/json-bounds.ts: UTF-8, depth, no non-finite numbers or
 * `__proto__` keys); an empty body is `{}`. */
export function parseJsonBody(buf: Buffer): unknown {
  if (buf.length === 0) return {};
  return parseJsonOrThrow(buf, { maxBytes: buf.length, maxDepth: MAX_JSON_DEPTH }, 'body');
}
