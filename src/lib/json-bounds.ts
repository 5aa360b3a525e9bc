import { isUtf8 } from 'node:buffer';
import { invalidInput } from './errors.js';

/**
 * JSON from outside (MQTT payloads, local API bodies, deploy and target files, image manifests and
 * configs), bounded before anything recursive touches it.
 *
 * V8's JSON.parse is iterative, but nearly everything after it is not: zod's recursive schemas,
 * JSON.stringify, canonical JSON for signatures, pino. A 3 KB payload of 1,500 nested arrays parses
 * fine and then overflows the stack in whatever walks it next (issue 15, item 1). So, in this order,
 * none of it recursive:
 *
 *   1. size: the byte length against the caller's cap;
 *   2. encoding: bytes must be valid UTF-8 (toString would quietly turn bad bytes into U+FFFD);
 *   3. depth: one pass over the bytes counts `[`/`{` nesting outside strings and stops at the limit;
 *   4. JSON.parse;
 *   5. the tree: an explicit-stack walk refuses non-finite numbers (`1e400` parses to Infinity, which no
 *      canonical encoding can sign) and `__proto__` keys (harmless to JSON.parse, not to Object.assign),
 *      and re-checks depth for values that did not come from text (YAML, code).
 *
 * Anything refused gets a reason naming what was wrong; `parseJsonBounded` never throws.
 */

/** Nesting berth's own documents never come near (a target is ~10 deep); generous for image configs. */
export const DEFAULT_MAX_DEPTH = 64;

export interface JsonLimits {
  /** byte length of the text */
  maxBytes: number;
  /** arrays/objects inside each other; a scalar is depth 0, `[]` depth 1 */
  maxDepth: number;
  /** values visited by the tree walk (YAML aliases can make a small text a huge tree); default: no cap */
  maxNodes?: number;
}

export type Bounded<T> = { ok: true; value: T } | { ok: false; reason: string };

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b;
const OPEN_OBJECT = 0x7b;
const CLOSE_ARRAY = 0x5d;
const CLOSE_OBJECT = 0x7d;

/**
 * The deepest nesting of arrays and objects in JSON text (outside strings), scanning once without
 * recursion. Stops as soon as the depth passes `limit` and returns that depth with its byte offset.
 * Malformed text is JSON.parse's business: this only promises it never walks deeper than it counts.
 */
export function jsonNestingDepth(
  bytes: Uint8Array,
  limit = Number.POSITIVE_INFINITY,
): { depth: number; at: number } {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
      continue;
    }
    if (c === QUOTE) inString = true;
    else if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      depth++;
      if (depth > max) {
        max = depth;
        if (max > limit) return { depth: max, at: i };
      }
    } else if ((c === CLOSE_ARRAY || c === CLOSE_OBJECT) && depth > 0) depth--;
  }
  return { depth: max, at: -1 };
}

/**
 * What makes `value` not plain, bounded JSON, or undefined when it is: only null, booleans, finite
 * numbers, strings, arrays and plain objects, at most `maxDepth` deep and `maxNodes` values in all.
 * An explicit stack, so a value of any depth is safe to give it. Only containers get a stack frame
 * (scalars are checked in place) and a frame keeps its parent and key, so the path of a problem is
 * spelled out only when there is one: a 1 MiB array of numbers costs one pass, no allocation per element.
 */
export function plainJsonProblem(
  value: unknown,
  maxDepth: number,
  maxNodes = Number.POSITIVE_INFINITY,
): string | undefined {
  type Frame = { v: object; depth: number; parent: Frame | undefined; key: string | number };
  const where = (f: Frame | undefined, key?: string | number): string => {
    const parts: Array<string | number> = key === undefined ? [] : [key];
    for (let x = f; x?.parent; x = x.parent) parts.push(x.key);
    return `(root)${parts
      .reverse()
      .map((k) => (typeof k === 'number' ? `[${k}]` : `.${k.slice(0, 64)}`))
      .join('')}`;
  };
  let nodes = 0;
  const scalarProblem = (v: unknown, f: Frame | undefined, key?: string | number): string | undefined => {
    if (typeof v === 'number')
      return Number.isFinite(v) ? undefined : `${where(f, key)}: number out of range (not finite)`;
    return `${where(f, key)}: a ${typeof v} is not a JSON value`;
  };
  const stack: Frame[] = [];
  const visit = (
    v: unknown,
    depth: number,
    parent: Frame | undefined,
    key: string | number,
  ): string | undefined => {
    if (++nodes > maxNodes) return `more than ${maxNodes} values`;
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return undefined;
    if (typeof v !== 'object') return scalarProblem(v, parent, parent ? key : undefined);
    if (depth + 1 > maxDepth)
      return `nested deeper than ${maxDepth} levels (at ${where(parent, parent ? key : undefined)})`;
    stack.push({ v, depth: depth + 1, parent, key });
    return undefined;
  };
  const first = visit(value, 0, undefined, '');
  if (first) return first;
  while (stack.length > 0) {
    const f = stack.pop()!;
    const v = f.v;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const p = visit(v[i], f.depth, f, i);
        if (p) return p;
      }
      continue;
    }
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) return `${where(f)}: not a plain object`;
    for (const k of Object.keys(v)) {
      if (k === '__proto__') return `${where(f)}: key "__proto__" is not allowed`;
      const p = visit((v as Record<string, unknown>)[k], f.depth, f, k);
      if (p) return p;
    }
  }
  return undefined;
}

/** Size, encoding, depth, then JSON.parse, then the tree (see the file comment). Never throws. */
export function parseJsonBounded(input: Uint8Array | string, limits: JsonLimits): Bounded<unknown> {
  try {
    const bytes = typeof input === 'string' ? Buffer.from(input, 'utf8') : input;
    if (!(bytes instanceof Uint8Array)) return { ok: false, reason: 'payload is not bytes' };
    if (bytes.length > limits.maxBytes)
      return { ok: false, reason: `payload of ${bytes.length} bytes exceeds ${limits.maxBytes}` };
    if (typeof input !== 'string' && !isUtf8(bytes))
      return { ok: false, reason: 'payload is not valid UTF-8' };
    const scan = jsonNestingDepth(bytes, limits.maxDepth);
    if (scan.depth > limits.maxDepth)
      return {
        ok: false,
        reason: `JSON nested deeper than ${limits.maxDepth} levels (at byte ${scan.at})`,
      };
    let raw: unknown;
    try {
      raw = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8'));
    } catch (err) {
      return { ok: false, reason: `not valid JSON: ${(err as Error).message.slice(0, 200)}` };
    }
    const problem = plainJsonProblem(raw, limits.maxDepth, limits.maxNodes);
    if (problem) return { ok: false, reason: problem };
    return { ok: true, value: raw };
  } catch (err) {
    // Nothing above should throw; if something does (memory), the payload is refused, not the process.
    return { ok: false, reason: `refused: ${(err as Error)?.message ?? String(err)}` };
  }
}

/** parseJsonBounded for callers that throw: InvalidInput naming `what`. */
export function parseJsonOrThrow(input: Uint8Array | string, limits: JsonLimits, what: string): unknown {
  const r = parseJsonBounded(input, limits);
  if (!r.ok) throw invalidInput(`${what}: ${r.reason}`);
  return r.value;
}
