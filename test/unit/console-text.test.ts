/** The console's pure text helpers: search box → API query, log tails merged, where a server error points. */
import test from 'ava';
import { jsonLine, lineOf, problemsOf, yamlLine } from '../../src/fleet/console/web/lineof.js';
import {
  clip,
  mergeTail,
  retryText,
  searchQuery,
  seriesLabel,
  statusTone,
} from '../../src/fleet/console/web/text.js';

test('the search box: an id prefix, labels as key=value or a key alone', (t) => {
  t.deepEqual(searchQuery(''), {});
  t.deepEqual(searchQuery('  edge-00 '), { prefix: 'edge-00' });
  t.deepEqual(searchQuery('site=berlin tier= label:gpu edge'), {
    prefix: 'edge',
    label: ['site=berlin', 'tier', 'gpu'],
  });
});

test('a newer log tail appends only the lines after the overlap', (t) => {
  t.deepEqual(mergeTail([], ['a', 'b']), ['a', 'b']);
  t.deepEqual(mergeTail(['a', 'b', 'c'], ['b', 'c', 'd', 'e']), ['a', 'b', 'c', 'd', 'e']);
  t.deepEqual(mergeTail(['a', 'b'], ['a', 'b']), ['a', 'b'], 'nothing new');
  // a repeated line is matched as a block, not line by line
  t.deepEqual(mergeTail(['x', 'tick', 'tick'], ['tick', 'tick', 'y']), ['x', 'tick', 'tick', 'y']);
  t.deepEqual(mergeTail(['a'], ['z']), ['a', 'z'], 'no overlap: the tail moved on past what we had');
});

const COMPOSE = [
  'name: hello',
  'services:',
  '  db:',
  '    image: db:1',
  '    restart: always',
  '  web:',
  '    image: sample:v1',
  '    restart: bogus',
  '    ports:',
  '      - "8080:80"',
  '      - "abc"',
  '',
].join('\n');

test('a path in a compose error points at the line of its key', (t) => {
  t.is(yamlLine(COMPOSE, ['services', 'web', 'restart']), 8, 'not the db service’s restart');
  t.is(yamlLine(COMPOSE, ['services', 'web', 'ports', '1']), 11);
  t.is(yamlLine(COMPOSE, ['services', 'nope']), 2, 'the deepest key found');
  t.is(lineOf('compose file: services.web.restart: invalid restart policy "bogus"', COMPOSE, true), 8);
  t.is(lineOf('compose file: services.web.ports[1]: invalid port "abc"', COMPOSE, true), 11);
  t.is(lineOf('something else went wrong', COMPOSE, true), undefined);
});

test('a YAML syntax error names its line; one past the text names none', (t) => {
  t.is(lineOf('Flow sequence … at line 4, column 1:', COMPOSE, true), 4);
  t.is(lineOf('at line 400, column 1', COMPOSE, true), undefined);
});

test('several problems in one message are split, each with its line', (t) => {
  const p = problemsOf(
    'compose file: services.web.restart: bad; compose file: services.db.image: missing',
    COMPOSE,
    true,
  );
  t.deepEqual(
    p.map((x) => x.line),
    [8, 4],
  );
});

test('a path in a target JSON error points at its key', (t) => {
  const json =
    '{\n  "apps": {\n    "web": {\n      "services": {\n        "main": { "image": "x" }\n      }\n    }\n  }\n}';
  t.is(jsonLine(json, ['apps', 'web', 'services', 'main', 'image']), 5);
  t.is(lineOf('body.apps.web.services: expected object', json, false), 4);
});

test('metric series names as a chart legend says them; a status has its colour family', (t) => {
  t.is(seriesLabel('cpuPercent'), 'device');
  t.is(seriesLabel('service.hello.web.cpuPercent'), 'hello/web');
  t.is(seriesLabel('service.my.app.web.memoryBytes'), 'my.app/web');
  t.is(seriesLabel('memory.usedBytes'), 'used');
  t.is(seriesLabel('disk.totalBytes'), 'total');
  t.is(seriesLabel('net.rxBytes'), 'net.rxBytes');
  t.is(statusTone('converged'), 'ok');
  t.is(statusTone('rolled-back'), 'warn');
  t.is(statusTone('failed'), 'bad');
  t.is(statusTone('applying'), 'info');
  t.is(statusTone('unknown'), 'muted');
});

test('a located error (file:line:column) points at its line, before any path it names', (t) => {
  const text = 'name: hello\nservices:\n  web:\n    image: sample:v1\n    restart: bogus\n';
  t.deepEqual(
    problemsOf(
      'compose.yml:5:14: services.web.restart: invalid restart policy "bogus"; compose.yml:4: services.web.image: unknown',
      text,
      true,
    ).map((p) => p.line),
    [5, 4],
  );
  t.is(lineOf('compose.yml:99:1: out of the text', text, true), undefined);
});

test('a pending retry reads as a countdown with its attempt; due once its time passed', (t) => {
  const now = Date.parse('2026-12-06T09:00:00.000Z');
  const at = (ms: number) => new Date(now + ms).toISOString();
  t.is(retryText(at(41_200), 9, now), 'retry in 42 s (attempt 9)', 'rounded up: never "in 0 s" early');
  t.is(retryText(at(119_000), 2, now), 'retry in 119 s (attempt 2)');
  t.is(retryText(at(600_000), 3, now), 'retry in 10 min (attempt 3)');
  t.is(retryText(at(3 * 3600_000), 3, now), 'retry in 3 h (attempt 3)');
  t.is(retryText(at(0), 1, now), 'retry due (attempt 1)');
  t.is(retryText(at(-5000), 1, now), 'retry due (attempt 1)', "the device's next report says how it went");
  t.is(retryText('not a time', 4, now), 'retry pending (attempt 4)');
});

test('clip: a long device text is cut to its bound with an ellipsis, by characters', (t) => {
  t.deepEqual(clip('short', 10), { text: 'short', cut: false });
  t.deepEqual(clip('x'.repeat(10), 10), { text: 'x'.repeat(10), cut: false });
  const long = clip('y'.repeat(4096), 300);
  t.is([...long.text].length, 300);
  t.true(long.cut && long.text.endsWith('…'));
  t.is(clip('🙂'.repeat(5), 3).text, '🙂🙂…', 'no surrogate pair split');
});
