/**
 * Problems in a file a person wrote (compose, target JSON, config), reported the way an editor would:
 * every problem at once, each with `file:line:col`, the path in the file's own words
 * (`services.web.ports[0]`) and, for a misspelled key, "did you mean …". Pure: text in, issues out.
 *
 * The YAML library parses JSON too (JSON is YAML), so one parser gives node positions for both.
 */
import { type Document, isMap, isScalar, LineCounter, type Node, parseDocument } from 'yaml';
import { type ZodError, type ZodIssue, ZodObject, type ZodTypeAny } from 'zod';
import { BerthError, invalidInput } from '../lib/errors.js';
import {
  assertDocumentBounded,
  assertValueBounded,
  assertYamlTextBounded,
  type YamlLimits,
} from '../lib/yaml-bounds.js';

export type IssuePath = ReadonlyArray<string | number>;

export interface SourceIssue {
  path: IssuePath;
  message: string;
  /** point at the key itself (an unknown key) rather than its value */
  atKey?: boolean;
  line?: number;
  col?: number;
}

export interface ParsedSource {
  file: string;
  value: unknown;
  /** line and column (1-based) of the node at `path`, or of its nearest existing ancestor */
  locate(path: IssuePath, atKey?: boolean): { line: number; col: number } | undefined;
}

/** `services.web.ports[0]`, `labels["berth.update.strategy"]` */
export function formatPath(path: IssuePath): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(p)) out += out ? `.${p}` : p;
    else out += `[${JSON.stringify(p)}]`;
  }
  return out || '(top level)';
}

/**
 * Parse YAML (or JSON) text from a file a person wrote; a syntax error is InvalidInput naming the file,
 * line and column. Size, nesting and alias expansion are bounded before anything recursive runs
 * (lib/yaml-bounds.ts, steps 1–2 before parsing, 4 before toJS, 5 after).
 */
export function parseSource(text: string, file: string, limits: YamlLimits, what = file): ParsedSource {
  assertYamlTextBounded(text, limits, what);
  const lineCounter = new LineCounter();
  const doc: Document.Parsed = parseDocument(text, {
    lineCounter,
    prettyErrors: true,
    merge: true,
    uniqueKeys: true,
  });
  if (doc.errors.length > 0) {
    const lines = doc.errors.map((e) => {
      const pos = e.linePos?.[0];
      const first = e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
      return `${file}:${pos ? `${pos.line}:${pos.col}` : '?'}: ${first}`;
    });
    throw new BerthError('InvalidInput', `${file} is not valid YAML/JSON:\n  ${lines.join('\n  ')}`, {
      details: { file },
    });
  }
  assertDocumentBounded(doc, limits, what);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw invalidInput(`${file}: ${(err as Error).message}`);
  }
  assertValueBounded(value, limits, what);
  const at = (offset: number) => lineCounter.linePos(offset);
  return {
    file,
    value,
    locate(path, atKey) {
      let node: unknown = doc.contents;
      let last: { line: number; col: number } | undefined = rangeStart(node);
      // a key that is missing is shown at the key of the mapping that lacks it (`web:` for web.image)
      let parentKey: { line: number; col: number } | undefined;
      for (const [i, key] of path.entries()) {
        if (!node || typeof node !== 'object' || !('items' in node)) break;
        const items = (node as { items: unknown[] }).items;
        let next: unknown;
        let keyNode: unknown;
        if (isMap(node)) {
          const pair = (items as Array<{ key: unknown; value: unknown }>).find(
            (p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(key),
          );
          if (!pair) return parentKey ?? last;
          keyNode = pair.key;
          next = pair.value;
        } else if (typeof key === 'number') next = items[key];
        if (next === undefined && keyNode === undefined) break;
        const isLast = i === path.length - 1;
        last = (isLast && atKey && keyNode ? rangeStart(keyNode) : rangeStart(next ?? keyNode)) ?? last;
        parentKey = rangeStart(keyNode) ?? rangeStart(next);
        node = next;
      }
      return last;
    },
  };
  function rangeStart(n: unknown): { line: number; col: number } | undefined {
    const r = (n as Node | undefined)?.range;
    return r ? at(r[0]) : undefined;
  }
}

/** Levenshtein distance, for "did you mean". */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length]!;
}

/** The closest candidate when it is close enough to be a typo (or differs only in - vs _ and case). */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = norm(c) === norm(word) ? 0 : editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  const limit = word.length <= 4 ? 1 : word.length <= 8 ? 2 : 3;
  return bestD <= limit ? best : undefined;
}

export function unknownKeyMessage(key: string, allowed: readonly string[]): string {
  const hint = didYouMean(key, allowed);
  return `unknown key ${JSON.stringify(key)}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ''}`;
}

/** The schema a path leads to inside `schema` (objects, records, arrays, defaults, optionals, effects). */
function schemaAt(schema: ZodTypeAny, path: IssuePath): ZodTypeAny | undefined {
  let s: ZodTypeAny | undefined = schema;
  const unwrap = (x: ZodTypeAny): ZodTypeAny => {
    const def = x._def as { innerType?: ZodTypeAny; schema?: ZodTypeAny; typeName?: string };
    if (def.innerType) return unwrap(def.innerType);
    if (def.typeName === 'ZodEffects' && def.schema) return unwrap(def.schema);
    return x;
  };
  for (const p of path) {
    if (!s) return undefined;
    s = unwrap(s);
    const def = s._def as { typeName?: string; valueType?: ZodTypeAny; type?: ZodTypeAny };
    if (s instanceof ZodObject) s = (s.shape as Record<string, ZodTypeAny>)[String(p)];
    else if (def.typeName === 'ZodRecord') s = def.valueType;
    else if (def.typeName === 'ZodArray') s = def.type;
    else return undefined;
  }
  return s ? unwrap(s) : undefined;
}

/**
 * A zod error as source issues (all of them), unknown keys one issue each with a suggestion from the
 * schema's own keys. `rename` maps a schema path back to the words of the file (compose → target).
 */
export function zodSourceIssues(
  err: ZodError,
  schema: ZodTypeAny,
  rename: (path: IssuePath) => IssuePath = (p) => p,
): SourceIssue[] {
  const out: SourceIssue[] = [];
  for (const i of err.issues as ZodIssue[]) {
    if (i.code === 'unrecognized_keys') {
      const at = schemaAt(schema, i.path);
      const allowed = at instanceof ZodObject ? Object.keys(at.shape as object) : [];
      for (const k of i.keys)
        out.push({ path: rename([...i.path, k]), message: unknownKeyMessage(k, allowed), atKey: true });
    } else {
      out.push({ path: rename(i.path), message: i.message });
    }
  }
  return out;
}

/**
 * Throw InvalidInput listing every issue as `file:line:col: path: message` (sorted by position), with
 * the issues in `details` for callers that want them as data.
 */
export function throwIssues(
  src: ParsedSource | { file: string; locate?: undefined },
  issues: SourceIssue[],
): never {
  const located = issues.map((i) => {
    const pos = i.line !== undefined ? { line: i.line, col: i.col ?? 1 } : src.locate?.(i.path, i.atKey);
    return { ...i, ...(pos ? { line: pos.line, col: pos.col } : {}) };
  });
  located.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.col ?? 0) - (b.col ?? 0));
  const lines = located.map(
    (i) =>
      `${src.file}${i.line !== undefined ? `:${i.line}:${i.col}` : ''}: ${formatPath(i.path)}: ${i.message}`,
  );
  const n = located.length;
  throw new BerthError(
    'InvalidInput',
    n === 1 ? lines[0]! : `${src.file}: ${n} problems:\n  ${lines.join('\n  ')}`,
    { details: { file: src.file, issues: located.map((i) => ({ ...i, path: formatPath(i.path) })) } },
  );
}
