/**
 * Label selectors, as operators write them: `site=berlin,tier!=lab` — requirements separated by commas,
 * every one must hold (AND). Pure: the parser turns text into requirements, `matches` judges one device's
 * labels; the rollout store turns requirements into SQL.
 *
 *   key=value   key==value   the label is set to value
 *   key!=value               the label is not value (a device without the key matches, as in Kubernetes)
 *   key in (a,b)             one of the values
 *   key notin (a,b)          none of them (a device without the key matches)
 *   key                      the key is set (any value)
 *   !key                     the key is not set
 *
 * Keys and values use the alphabet of device labels (src/fleet/store/devices.ts `checkLabel`); anything else
 * is refused with the position and what was expected there.
 */
import { invalidInput } from '../../lib/errors.js';

export type Requirement =
  | { key: string; op: 'in'; values: string[] }
  | { key: string; op: 'notin'; values: string[] }
  | { key: string; op: 'exists' }
  | { key: string; op: 'absent' };

export const MAX_SELECTOR = 1024;
const MAX_REQUIREMENTS = 32;
const MAX_VALUES = 64;
const KEY = /^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}/;
const VALUE = /^[A-Za-z0-9_.:/@+-]{0,128}/;

/** Parse `text`; throws InvalidInput naming the position and what was expected. */
export function parseSelector(text: string): Requirement[] {
  if (typeof text !== 'string') throw invalidInput('selector: expected text such as site=berlin,tier!=lab');
  if (text.length > MAX_SELECTOR) throw invalidInput(`selector: longer than ${MAX_SELECTOR} characters`);
  let i = 0;
  const fail = (what: string): never => {
    const near = text.slice(i, i + 12);
    throw invalidInput(
      `selector ${JSON.stringify(text)}: at position ${i + 1}${near ? ` (${JSON.stringify(near)})` : ' (the end)'}: ${what}`,
    );
  };
  const spaces = () => {
    while (text[i] === ' ') i++;
  };
  const key = (): string => {
    const m = KEY.exec(text.slice(i));
    if (!m) return fail('expected a label key (1-63 of [A-Za-z0-9_./-], starting with a letter or digit)');
    i += m[0].length;
    return m[0];
  };
  const value = (): string => {
    const m = VALUE.exec(text.slice(i))!;
    i += m[0].length;
    return m[0];
  };
  const list = (): string[] => {
    spaces();
    if (text[i] !== '(') fail('expected "(" and a list of values, e.g. (a,b)');
    i++;
    const values: string[] = [];
    for (;;) {
      spaces();
      const start = i;
      const v = value();
      if (v === '' && start === i) fail('expected a value (up to 128 of [A-Za-z0-9_.:/@+-])');
      values.push(v);
      spaces();
      if (text[i] === ',') {
        i++;
        continue;
      }
      if (text[i] === ')') {
        i++;
        break;
      }
      fail('expected "," or ")" in the list of values');
    }
    if (values.length > MAX_VALUES) fail(`at most ${MAX_VALUES} values in a list`);
    return values;
  };

  const out: Requirement[] = [];
  spaces();
  if (i === text.length) throw invalidInput('selector: empty (expected e.g. site=berlin,tier!=lab)');
  for (;;) {
    spaces();
    if (text[i] === '!') {
      i++;
      spaces();
      out.push({ key: key(), op: 'absent' });
    } else {
      const k = key();
      spaces();
      const rest = text.slice(i);
      if (rest.startsWith('!=')) {
        i += 2;
        spaces();
        out.push({ key: k, op: 'notin', values: [value()] });
      } else if (rest.startsWith('==') || rest.startsWith('=')) {
        i += rest.startsWith('==') ? 2 : 1;
        spaces();
        out.push({ key: k, op: 'in', values: [value()] });
      } else if (/^in[ (]/.test(rest)) {
        i += 2;
        out.push({ key: k, op: 'in', values: list() });
      } else if (/^notin[ (]/.test(rest)) {
        i += 5;
        out.push({ key: k, op: 'notin', values: list() });
      } else out.push({ key: k, op: 'exists' });
    }
    spaces();
    if (i === text.length) break;
    if (text[i] !== ',')
      fail('expected "," between requirements, or one of =, ==, !=, in (…), notin (…) after a key');
    i++;
    if (out.length >= MAX_REQUIREMENTS) fail(`at most ${MAX_REQUIREMENTS} requirements`);
  }
  return out;
}

/** Whether a device with these labels satisfies every requirement. */
export function matches(reqs: readonly Requirement[], labels: Readonly<Record<string, string>>): boolean {
  return reqs.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    if (r.op === 'exists') return has;
    if (r.op === 'absent') return !has;
    if (r.op === 'in') return has && r.values.includes(labels[r.key]!);
    return !has || !r.values.includes(labels[r.key]!);
  });
}

/** The canonical text of parsed requirements (stored and shown). */
export function formatSelector(reqs: readonly Requirement[]): string {
  return reqs
    .map((r) => {
      if (r.op === 'exists') return r.key;
      if (r.op === 'absent') return `!${r.key}`;
      if (r.op === 'in')
        return r.values.length === 1 ? `${r.key}=${r.values[0]}` : `${r.key} in (${r.values.join(',')})`;
      return r.values.length === 1 ? `${r.key}!=${r.values[0]}` : `${r.key} notin (${r.values.join(',')})`;
    })
    .join(',');
}
