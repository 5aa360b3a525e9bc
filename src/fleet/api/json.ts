/**
 * Request bodies are bounded before they are parsed: a byte cap while reading, a nesting-depth scan
 * before JSON.parse (a deep `[[[[…` costs the parser stack, not bytes), then the route's schema.
 */
import type { IncomingMessage } from 'node:http';
import { invalidInput } from '../../lib/errors.js';

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

/** Throws when `text` nests arrays/objects deeper than `max` (strings skipped). */
export function assertJsonDepth(text: string, max = MAX_JSON_DEPTH): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 0x5c) i++;
      else if (ch === 0x22) inString = false;
    } else if (ch === 0x22) inString = true;
    else if (ch === 0x7b || ch === 0x5b) {
      if (++depth > max) throw invalidInput(`body: nested deeper than ${max} levels`);
    } else if (ch === 0x7d || ch === 0x5d) depth--;
  }
}

export function parseJsonBody(buf: Buffer): unknown {
  if (buf.length === 0) return {};
  const text = buf.toString('utf8');
  assertJsonDepth(text);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalidInput(`body: malformed JSON (${(err as Error).message})`);
  }
}
