import {
  type Alias,
  CST,
  type Document,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  Lexer,
  type Node,
  type Pair,
  parseDocument,
} from 'yaml';
import { invalidInput } from './errors.js';
import { DEFAULT_MAX_DEPTH, plainJsonProblem } from './json-bounds.js';

/**
 * YAML from outside (compose files, config files), bounded before the yaml library's recursive parts
 * run. Its lexer is an iterative state machine; its CST parser recurses once per level on a dedent and
 * its composer and toJS once per level everywhere, so 1,500 nested `[` are a stack overflow (sometimes
 * caught and reported, sometimes not, and 20,000 once took the process down with a fatal OOM in our
 * tries). Aliases make it worse: `&a [*b]` chains nest deeper than the text, and the "billion laughs"
 * (each anchor aliasing the previous one ten times) makes a kilobyte expand to billions of values.
 *
 * So, in this order:
 *   1. size of the text;
 *   2. a nesting bound from the lexer's tokens alone (no recursion, see `yamlNestingBound`);
 *   3. parseDocument (composer recursion is now bounded by 2), its errors refused;
 *   4. the depth and size of the value it stands for *with aliases expanded*, computed over the document's
 *      nodes with an explicit stack (aliases resolved to the anchor before them, memoised, cycles refused);
 *   5. toJS, then the plain-JSON walk of json-bounds (finite numbers, no `__proto__`, depth, count).
 */
export interface YamlLimits {
  maxBytes: number;
  maxDepth?: number;
  /** values in the expanded tree (aliases counted each time they are used) */
  maxNodes?: number;
}

/** 500,000 values: twice what a 1 MiB target can hold, far below what hurts. */
export const DEFAULT_MAX_YAML_NODES = 500_000;

/**
 * An upper bound on the nesting depth of the YAML text, from the lexer's tokens, without recursion. Flow
 * collections (`[`, `{`) are counted exactly; block nesting is bounded by the columns at which block
 * nodes start: a nested block node starts at a greater column than its parent's, except a sequence that
 * is a mapping value, which may share its key's column (and cannot nest again without indenting). So
 * block depth ≤ 2 × the number of strictly increasing start columns still open. Quoted and block
 * scalars are single tokens, so brackets inside them never count.
 */
export function yamlNestingBound(
  text: string,
  limit = Number.POSITIVE_INFINITY,
): { depth: number; line: number } {
  const cols: number[] = [];
  let col = 0;
  let line = 1;
  let flow = 0;
  let lineStart = true;
  let afterIndicator = false;
  let scalarNext = false;
  let max = 0;
  const advance = (tok: string) => {
    const nl = tok.lastIndexOf('\n');
    if (nl < 0) {
      col += tok.length;
      return;
    }
    for (let i = 0; i < tok.length; i++) if (tok.charCodeAt(i) === 10) line++;
    col = tok.length - nl - 1;
    lineStart = col === 0;
    afterIndicator = false;
  };
  for (const tok of new Lexer().lex(text)) {
    if (tok === CST.SCALAR) {
      scalarNext = true; // the next token is scalar text, whatever it looks like
      continue;
    }
    const type = scalarNext ? 'scalar' : CST.tokenType(tok);
    scalarNext = false;
    switch (type) {
      case 'newline':
        line++;
        col = 0;
        lineStart = true;
        afterIndicator = false;
        continue;
      case 'space':
      case 'comment':
        advance(tok);
        continue;
      case 'doc-mode':
      case 'flow-error-end':
      case 'byte-order-mark':
        continue; // control tokens: no source text
      default:
        break;
    }
    if (flow === 0 && (lineStart || afterIndicator)) {
      while (cols.length > 0 && cols[cols.length - 1]! > col) cols.pop();
      if (cols.length === 0 || cols[cols.length - 1]! < col) cols.push(col);
    }
    if (type === 'flow-map-start' || type === 'flow-seq-start') flow++;
    else if ((type === 'flow-map-end' || type === 'flow-seq-end') && flow > 0) flow--;
    afterIndicator = flow === 0 && (type === 'seq-item-ind' || type === 'explicit-key-ind');
    lineStart = false;
    const depth = 2 * cols.length + flow;
    if (depth > max) {
      max = depth;
      if (max > limit) return { depth: max, line };
    }
    advance(tok);
  }
  return { depth: max, line };
}

type Measured = { depth: number; nodes: number };

/**
 * Depth and value count of a parsed document's contents with every alias expanded, by an explicit-stack
 * post-order walk. An alias stands for the last node anchored with its name before it (YAML's rule);
 * its measure is that node's, memoised, so a billion laughs costs one pass over the text's nodes.
 */
function measureExpanded(root: unknown, stopAt: Measured): Measured | string {
  // anchors in document order: a pre-order walk, children in source order
  const resolved = new Map<Alias, unknown>();
  const anchors = new Map<string, unknown>();
  const order: unknown[] = [root];
  while (order.length > 0) {
    const n = order.pop();
    if (isAlias(n)) {
      const target = anchors.get(n.source);
      if (target === undefined) return `alias *${n.source} names no anchor before it`;
      resolved.set(n, target);
      continue;
    }
    if ((isMap(n) || isSeq(n) || isScalar(n)) && n.anchor) anchors.set(n.anchor, n);
    const kids = childrenOf(n);
    for (let i = kids.length - 1; i >= 0; i--) order.push(kids[i]);
  }

  const memo = new Map<unknown, Measured>();
  const onPath = new Set<unknown>();
  const stack: Array<{ n: unknown; expanded: boolean }> = [{ n: root, expanded: false }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (memo.has(top.n)) {
      stack.pop();
      continue;
    }
    const kids = isAlias(top.n) ? [resolved.get(top.n)] : childrenOf(top.n);
    if (!top.expanded) {
      top.expanded = true;
      onPath.add(top.n);
      for (const k of kids) {
        if (onPath.has(k)) return 'an alias refers to a node that contains it';
        if (!memo.has(k)) stack.push({ n: k, expanded: false });
      }
      continue;
    }
    let depth = 0;
    let nodes = isAlias(top.n) ? 0 : 1;
    for (const k of kids) {
      const m = memo.get(k)!;
      depth = Math.max(depth, m.depth);
      nodes += m.nodes;
    }
    if (isMap(top.n) || isSeq(top.n)) depth++;
    if (depth > stopAt.depth) return `nested deeper than ${stopAt.depth} levels (aliases expanded)`;
    if (nodes > stopAt.nodes) return `more than ${stopAt.nodes} values (aliases expanded)`;
    memo.set(top.n, { depth, nodes });
    onPath.delete(top.n);
    stack.pop();
  }
  return memo.get(root) ?? { depth: 0, nodes: 0 };
}

function childrenOf(n: unknown): unknown[] {
  if (isMap(n) || isSeq(n)) return (n.items as unknown[]).filter((x) => x !== null && x !== undefined);
  if (isPair(n)) return [(n as Pair).key, (n as Pair).value].filter((x) => x !== null && x !== undefined);
  return [];
}

/**
 * Steps 1–2 on the text, before any parser of the yaml library sees it: size, then the lexer's nesting
 * bound. Callers that parse the document themselves (for line numbers, say) call this first…
 */
export function assertYamlTextBounded(text: string, limits: YamlLimits, what: string): void {
  const maxDepth = limits.maxDepth ?? DEFAULT_MAX_DEPTH;
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > limits.maxBytes) throw invalidInput(`${what}: ${bytes} bytes exceeds ${limits.maxBytes}`);
  const bound = yamlNestingBound(text, maxDepth);
  if (bound.depth > maxDepth)
    throw invalidInput(`${what}: nested deeper than ${maxDepth} levels (line ${bound.line})`);
}

/** …and step 4 on the parsed document, before `toJS`, and step 5 on the value after it. */
export function assertDocumentBounded(doc: Document, limits: YamlLimits, what: string): void {
  const m = measureExpanded(doc.contents as Node | null, {
    depth: limits.maxDepth ?? DEFAULT_MAX_DEPTH,
    nodes: limits.maxNodes ?? DEFAULT_MAX_YAML_NODES,
  });
  if (typeof m === 'string') throw invalidInput(`${what}: ${m}`);
}

export function assertValueBounded(value: unknown, limits: YamlLimits, what: string): void {
  const problem = plainJsonProblem(
    value === undefined ? null : value,
    limits.maxDepth ?? DEFAULT_MAX_DEPTH,
    limits.maxNodes ?? DEFAULT_MAX_YAML_NODES,
  );
  if (problem) throw invalidInput(`${what}: ${problem}`);
}

/**
 * Parse untrusted YAML (or JSON, its subset) into plain JSON values within `limits`; InvalidInput naming
 * `what` and the reason otherwise. `merge` turns on `<<` merge keys (compose files use them).
 */
export function parseYamlBounded(
  text: string,
  limits: YamlLimits,
  what: string,
  opts: { merge?: boolean } = {},
): unknown {
  assertYamlTextBounded(text, limits, what);
  const doc = parseDocument(text, { prettyErrors: true, merge: opts.merge ?? false, uniqueKeys: true });
  if (doc.errors.length > 0) throw invalidInput(`${what} is not valid YAML: ${doc.errors[0]!.message}`);
  assertDocumentBounded(doc, limits, what);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw invalidInput(`${what} is not valid YAML: ${(err as Error).message}`);
  }
  assertValueBounded(value, limits, what);
  return value;
}
