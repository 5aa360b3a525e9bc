/**
 * Where in the text a validation error points: the server names either a line (`compose.yml:5:14: …` or
 * `at line 4, column 1` from the YAML parser) or a path into the document (`services.web.restart: Invalid option…`). For a path, walk the
 * YAML by indentation (or the JSON by key order) to the line that holds the last key found. Pure.
 */

export interface Problem {
  /** 1-based, or undefined when the message names no place in the text */
  line: number | undefined;
  message: string;
}

const LINE_RE = /\bline (\d+)(?:, column (\d+))?/i;
/** `compose.yml:5:14: services.web.restart: …` (the compose reader's located errors) */
const FILE_POS_RE = /^\s*[^\s:]+:(\d+)(?::\d+)?:\s/;
const PATH_RE =
  /(?:^|:\s|file:\s)((?:[A-Za-z0-9_-]+)(?:\.[A-Za-z0-9_-]+)+|services|apps|volumes|networks)\s*:/;

export function problemsOf(message: string, text: string, isYaml: boolean): Problem[] {
  return message
    .split(/;\s+(?=\S)/)
    .filter(Boolean)
    .map((m) => ({ line: lineOf(m, text, isYaml), message: m.trim() }));
}

export function lineOf(message: string, text: string, isYaml: boolean): number | undefined {
  const l = FILE_POS_RE.exec(message) ?? LINE_RE.exec(message);
  if (l) {
    const n = Number(l[1]);
    const count = text.split('\n').length;
    return n >= 1 && n <= count ? n : undefined;
  }
  const p = PATH_RE.exec(message.replace(/\[(\d+)\]/g, '.$1'));
  if (!p) return undefined;
  const path = p[1]!.split('.').filter((s) => !/^(body|file|text|compose)$/.test(s));
  return isYaml ? yamlLine(text, path) : jsonLine(text, path);
}

/** The line of the deepest key of `path` found in a block-style YAML document. */
export function yamlLine(text: string, path: string[]): number | undefined {
  const lines = text.split('\n');
  let found: number | undefined;
  let depth = 0;
  let minIndent = -1;
  for (let i = 0; i < lines.length && depth < path.length; i++) {
    const line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    const indent = line.length - line.trimStart().length;
    if (indent <= minIndent) break; // left the block of the last key found
    const want = path[depth]!;
    const key = /^\s*(?:-\s+)?["']?([^"':#]+?)["']?\s*:(?:\s|$)/.exec(line)?.[1];
    const isIndex = /^\d+$/.test(want);
    if (key === want || (isIndex && /^\s*-\s/.test(line) && seqIndex(lines, i, indent) === Number(want))) {
      found = i + 1;
      depth++;
      minIndent = indent;
    }
  }
  return found;
}

function seqIndex(lines: string[], at: number, indent: number): number {
  let n = 0;
  for (let i = at - 1; i >= 0; i--) {
    const l = lines[i]!;
    if (/^\s*(#|$)/.test(l)) continue;
    const ind = l.length - l.trimStart().length;
    if (ind < indent) break;
    if (ind === indent && /^\s*-\s/.test(l)) n++;
  }
  return n;
}

/** The line of the deepest key of `path` in a JSON text (keys matched in order, as they appear). */
export function jsonLine(text: string, path: string[]): number | undefined {
  let from = 0;
  let found: number | undefined;
  for (const key of path) {
    if (/^\d+$/.test(key)) continue;
    const at = text.indexOf(JSON.stringify(key), from);
    if (at < 0) break;
    from = at + 1;
    found = text.slice(0, at).split('\n').length;
  }
  return found;
}
