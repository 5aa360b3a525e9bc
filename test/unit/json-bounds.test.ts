/**
 * Bounded parsing of JSON and YAML from outside (issue 15, item 1): nothing deep, huge, non-finite or
 * badly encoded reaches a recursive walker, and nothing here throws where it promises a reason.
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { parse, stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { composeToApp, loadTargetText } from '../../src/core/compose.js';
import { jsonNestingDepth, parseJsonBounded, plainJsonProblem } from '../../src/lib/json-bounds.js';
import { parseYamlBounded, yamlNestingBound } from '../../src/lib/yaml-bounds.js';
import { ImageConfigSchema, parseJsonDoc } from '../../src/oci/types.js';
import {
  CommandResultSchema,
  decodeJson,
  MAX_CONTROL_BYTES,
  MAX_TARGET_BYTES,
  ReplySchema,
  RequestSchema,
  SignedCommandSchema,
  SignedTargetSchema,
  StatusSchema,
  type Target,
} from '../../src/transport/messages.js';
import { generateFleetKey, loadPrivateKey } from '../../src/transport/signing.js';
import { signTarget } from '../../src/transport/targets.js';

const targetOf = (apps: unknown): Target => ({
  v: 1,
  fleet: 'f',
  scope: { kind: 'device', id: 'd' },
  version: 1,
  issuedAt: new Date(0).toISOString(),
  images: [],
  apps,
});

const nestedArrays = (n: number) => '['.repeat(n) + ']'.repeat(n);
const nestedObjects = (n: number) => '{"a":'.repeat(n) + '1' + '}'.repeat(n);

/** The reproduction of issue 15: an unsigned target whose `apps` is nested `n` deep. */
function poisonTarget(apps: string): Buffer {
  return Buffer.from(
    `{"v":1,"target":{"v":1,"fleet":"f","scope":{"kind":"device","id":"d"},"version":7,` +
      `"issuedAt":"2024-01-01T00:00:00Z","images":[],"apps":${apps}},` +
      `"signature":{"alg":"ed25519","keyId":"0123456789abcdef","sig":"AA=="}}`,
  );
}

test('the 3 KB poison target (1,500 nested arrays, and 100,000) is refused with a reason, not a stack overflow', (t) => {
  for (const n of [1_500, 100_000]) {
    for (const apps of [nestedArrays(n), nestedObjects(n)]) {
      const payload = poisonTarget(apps);
      const r = decodeJson(SignedTargetSchema, payload, MAX_TARGET_BYTES);
      t.false(r.ok);
      if (!r.ok) t.regex(r.reason, /nested deeper than 32 levels/);
    }
  }
  t.true(poisonTarget(nestedArrays(1_500)).length < 3_300);
});

test('every message schema refuses deep input on every topic kind without throwing', (t) => {
  const deep = Buffer.from(nestedArrays(100_000));
  const deepInside = (prefix: string) => Buffer.from(`${prefix}${nestedObjects(5_000)}}`);
  const schemas = [
    SignedTargetSchema,
    SignedCommandSchema,
    StatusSchema,
    RequestSchema,
    ReplySchema,
    CommandResultSchema,
  ];
  for (const s of schemas) {
    for (const payload of [
      deep,
      deepInside('{"v":1,"kind":"resolve","x":'),
      deepInside('{"id":"a","kind":"logs","ok":true,"result":'),
    ]) {
      const r = decodeJson(s as never, payload, 4 * MAX_TARGET_BYTES);
      t.false(r.ok);
    }
  }
});

test('huge numbers, bad UTF-8, truncated JSON, __proto__ keys and non-bytes are refused with a reason', (t) => {
  const cases: Array<[Buffer, RegExp]> = [
    [poisonTarget('{"x":1e400}'), /not finite/],
    [poisonTarget('[-1e400]'), /not finite/],
    [
      Buffer.from(`{"v":1,"deviceId":"d","state":"online","at":"x","target":{"device":${'9'.repeat(400)}}}`),
      /not finite/,
    ],
    [
      Buffer.concat([Buffer.from('{"v":1,"deviceId":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]),
      /UTF-8/,
    ],
    [poisonTarget('{"a":[1,2').subarray(0, 90), /not valid JSON/],
    [poisonTarget('{"__proto__":{"polluted":true}}'), /__proto__/],
    [Buffer.from(`"${'x'.repeat(MAX_CONTROL_BYTES)}"`), /exceeds 65536/],
  ];
  for (const [payload, reason] of cases) {
    const r = decodeJson(StatusSchema.or(SignedTargetSchema as never), payload, MAX_CONTROL_BYTES);
    t.false(r.ok, reason.source);
    if (!r.ok) t.regex(r.reason, reason);
  }
  t.false(decodeJson(StatusSchema, 'text' as unknown as Buffer, 100).ok);
  t.is(({} as Record<string, unknown>).polluted, undefined);
});

test('a huge flat array and a long string within the cap parse; the cap is checked before parsing', (t) => {
  const big = Buffer.from(`[${Array(200_000).fill('0').join(',')}]`);
  const r = parseJsonBounded(big, { maxBytes: MAX_TARGET_BYTES, maxDepth: 32 });
  t.true(r.ok);
  if (r.ok) t.is((r.value as unknown[]).length, 200_000);
  const long = Buffer.from(`{"s":"${'y'.repeat(900_000)}"}`);
  t.true(parseJsonBounded(long, { maxBytes: MAX_TARGET_BYTES, maxDepth: 32 }).ok);
  const over = parseJsonBounded(Buffer.alloc(MAX_TARGET_BYTES + 1, 0x20), {
    maxBytes: MAX_TARGET_BYTES,
    maxDepth: 32,
  });
  t.false(over.ok);
});

test('a signed target at the depth limit is accepted; one level more is refused', (t) => {
  const key = loadPrivateKey(generateFleetKey().privateKeyPem);
  // envelope(1) → target(2) → apps(3): apps itself may nest 29 more levels
  let apps: unknown = 1;
  for (let i = 0; i < 30; i++) apps = [apps];
  const mk = (a: unknown) => Buffer.from(JSON.stringify(signTarget(targetOf(a), key)));
  const atLimit = mk(apps);
  t.true(decodeJson(SignedTargetSchema, atLimit, MAX_TARGET_BYTES).ok);
  const deeper = JSON.parse(atLimit.toString());
  deeper.target.apps = [deeper.target.apps];
  const r = decodeJson(SignedTargetSchema, Buffer.from(JSON.stringify(deeper)), MAX_TARGET_BYTES);
  t.false(r.ok);
  if (!r.ok) t.regex(r.reason, /nested deeper than 32 levels/);
  // the fleet cannot sign what the agent would drop: the same limit refuses it before signing
  t.throws(() => mk([apps]), { message: /nested deeper than 30 levels/ });
});

test('the depth scanner ignores brackets in strings and escaped quotes, and stops at the limit', (t) => {
  const b = (s: string) => Buffer.from(s);
  t.is(jsonNestingDepth(b('1')).depth, 0);
  t.is(jsonNestingDepth(b('[]')).depth, 1);
  t.is(jsonNestingDepth(b('{"a":[{"b":[]}]}')).depth, 4);
  t.is(jsonNestingDepth(b('["[[[[", "\\"[[[", {"k":"]]]"}]')).depth, 2);
  t.deepEqual(jsonNestingDepth(b(nestedArrays(10)), 3), { depth: 4, at: 3 });
});

test('the tree walk is iterative: a 100,000-deep value built in code is refused, not overflowed', (t) => {
  let v: unknown = 0;
  for (let i = 0; i < 100_000; i++) v = { a: [v] };
  t.regex(plainJsonProblem(v, 64) ?? '', /nested deeper than 64/);
  t.regex(plainJsonProblem({ f: () => 1 }, 64) ?? '', /function is not a JSON value/);
  t.regex(plainJsonProblem(new Map(), 64) ?? '', /not a plain object/);
  t.regex(plainJsonProblem(Array(11).fill(0), 64, 10) ?? '', /more than 10 values/);
  t.is(plainJsonProblem({ a: [1, 'x', null, true, { b: -0.5 }] }, 64), undefined);
  // and the message schemas use it: a deep value given to the schema in code is refused, not a crash
  const r = SignedTargetSchema.safeParse({
    v: 1,
    target: targetOf(v),
    signature: { alg: 'ed25519', keyId: 'k', sig: 'AA==' },
  });
  t.false(r.success);
});

test('image manifests and configs (written by image authors) are bounded in depth too', (t) => {
  const config = `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Labels":{},"x":${nestedArrays(100_000)}}}`;
  t.throws(() => parseJsonDoc(ImageConfigSchema, Buffer.from(config), 'config'), {
    message: /config: JSON nested deeper than 64/,
  });
});

test('YAML: deep flow, compact and indented nesting are refused from the lexer, before the parser recurses', (t) => {
  const lim = { maxBytes: 4 * 1024 * 1024 };
  const deep = [
    `a: ${nestedArrays(20_000)}\n`,
    `a: ${'{a: '.repeat(20_000)}1${'}'.repeat(20_000)}\n`,
    `${'- '.repeat(200_000)}x\n`,
    `${Array.from({ length: 1_200 }, (_, i) => `${' '.repeat(i)}k:`).join('\n')} 1\nz: 2\n`,
  ];
  for (const text of deep)
    t.throws(() => parseYamlBounded(text, lim, 'compose file'), {
      message: /compose file: nested deeper than 64 levels/,
    });
  t.deepEqual(parseYamlBounded('a: [[1]]\nb:\n  - c: {d: e}\n', lim, 'x'), {
    a: [[1]],
    b: [{ c: { d: 'e' } }],
  });
});

test('YAML: a billion laughs and an alias chain deeper than its text are refused before toJS', (t) => {
  const lim = { maxBytes: 1024 * 1024 };
  const names = 'abcdefghij';
  const laughs = [
    'a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]',
    ...Array.from(
      { length: 9 },
      (_, i) => `${names[i + 1]}: &${names[i + 1]} [${Array(9).fill(`*${names[i]}`).join(', ')}]`,
    ),
  ].join('\n');
  t.true(laughs.length < 1_000);
  t.throws(() => parseYamlBounded(laughs, lim, 'compose file'), {
    message: /more than 500000 values \(aliases expanded\)/,
  });
  const chain = [
    'a0: &a0 [[[[[[[[1]]]]]]]]',
    ...Array.from({ length: 20 }, (_, i) => `a${i + 1}: &a${i + 1} [[[[[[[[*a${i}]]]]]]]]`),
  ].join('\n');
  t.throws(() => parseYamlBounded(chain, lim, 'x'), {
    message: /nested deeper than 64 levels \(aliases expanded\)/,
  });
  // ordinary anchors and merge keys still work
  const merged = parseYamlBounded('x: &d {a: 1}\ny:\n  <<: *d\n  b: 2\n', lim, 'x', { merge: true });
  t.deepEqual(merged, { x: { a: 1 }, y: { a: 1, b: 2 } });
});

test('YAML: non-finite numbers, __proto__ keys and oversize text are refused', (t) => {
  const lim = { maxBytes: 1024 };
  t.throws(() => parseYamlBounded('a: .inf\n', lim, 'x'), { message: /not finite/ });
  t.throws(() => parseYamlBounded('__proto__: {x: 1}\n', lim, 'x'), { message: /__proto__/ });
  t.throws(() => parseYamlBounded(`a: ${'x'.repeat(2000)}\n`, lim, 'x'), { message: /exceeds 1024/ });
});

test('YAML nesting bound is never below the real depth (1,000 random documents in every style)', (t) => {
  let seed = 42;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const gen = (d: number): unknown => {
    const r = rand();
    if (d === 0 || r < 0.2) return rand() < 0.5 ? 'x [y] {z}' : 1;
    const n = 1 + Math.floor(rand() * 3);
    if (r < 0.6) return Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, gen(d - 1)]));
    return Array.from({ length: n }, () => gen(d - 1));
  };
  const depth = (v: unknown): number =>
    v && typeof v === 'object' ? 1 + Math.max(0, ...Object.values(v).map(depth)) : 0;
  const styles = ['any', 'block', 'flow'] as const;
  const under: string[] = [];
  let deepest = 0;
  for (let i = 0; i < 1_000; i++) {
    const text = stringify(gen(8), { collectionStyle: styles[i % 3], indentSeq: i % 2 === 0 });
    const actual = depth(parse(text));
    deepest = Math.max(deepest, actual);
    const bound = yamlNestingBound(text).depth;
    if (bound < actual) under.push(`bound ${bound} < depth ${actual} for ${JSON.stringify(text)}`);
  }
  t.deepEqual(under, [], 'the token bound never under-counts the parsed depth');
  t.true(deepest >= 4, `the generator made nested documents (deepest ${deepest})`);
});

test('compose, target and config files go through the bounds', async (t) => {
  t.throws(() => composeToApp(`services: ${nestedArrays(5_000)}\n`), {
    message: /compose file: nested deeper/,
  });
  t.throws(() => loadTargetText(`{"version":1,"apps":${nestedArrays(100_000)}}`, 't.json'), {
    message: /t\.json: JSON nested deeper than 64/,
  });
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-cfg-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'config.yml');
  await fsp.writeFile(file, `storage: ${nestedArrays(20_000)}\n`);
  t.throws(() => loadConfig({ file, env: {} }), { message: /config file .*nested deeper than 64/ });
});
