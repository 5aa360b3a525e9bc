import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { loadConfig } from '../../src/config/load.js';
import { loadTargetText, MAX_TARGET_FILE_BYTES } from '../../src/core/compose.js';
import { didYouMean, editDistance, formatPath } from '../../src/core/source-issues.js';
import type { BerthError } from '../../src/lib/errors.js';

const COMPOSE = `name: demo
services:
  web:
    imag: busybox:1
    ports:
      - "8080:80"
      - "99999:80"
    cpus: lots
    enviroment:
      A: b
    restart: sometimes
  db:
    image: db:1
    depends_on: [cache]
    volumes: [data:/d]
`;

test('compose: every problem at once, in the compose file’s words, each with its line; "did you mean" for typos', (t) => {
  const err = t.throws(() => loadTargetText(COMPOSE, 'compose.yml')) as BerthError;
  t.is(err.code, 'InvalidInput');
  t.deepEqual(err.message.split('\n'), [
    'compose.yml: 8 problems:',
    '  compose.yml:3:3: services.web.image: required (berth does not build images on the device)',
    '  compose.yml:4:5: services.web.imag: unknown key "imag" (did you mean "image"?)',
    '  compose.yml:7:9: services.web.ports[1]: port 99999 out of range (1-65535)',
    '  compose.yml:8:11: services.web.cpus: expected a number (CPUs), got "lots"',
    '  compose.yml:9:5: services.web.enviroment: unknown key "enviroment" (did you mean "environment"?)',
    '  compose.yml:11:14: services.web.restart: invalid restart policy "sometimes" (no, always, unless-stopped, on-failure[:N])',
    '  compose.yml:14:18: services.db.depends_on[0]: depends on unknown service "cache"',
    '  compose.yml:15:15: services.db.volumes[0]: volume "data" is not declared under volumes:',
  ]);
  t.is((err.details!.issues as unknown[]).length, 8, 'the issues as data too');
});

test('compose: what only the target schema finds is still told in compose words', (t) => {
  const text =
    'services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: y\n    depends_on: [a]\n';
  const err = t.throws(() => loadTargetText(text, 'c.yaml', { app: 'demo' }));
  t.regex(err!.message, /^c\.yaml:2:3: services: dependency cycle: a -> b -> a$/);
  const ports = t.throws(() =>
    loadTargetText('services:\n  a:\n    image: x\n    ports: [{ target: 0 }]\n', 'c.yaml', { app: 'd' }),
  );
  t.regex(ports!.message, /c\.yaml:4:23: services\.a\.ports\[0\]\.target: a port must be at least 1/);
  t.notRegex(ports!.message, /containerPort|hostPort/);
});

test('compose keys berth knows but refuses say so; keys nobody knows get a suggestion', (t) => {
  const err = t.throws(() =>
    loadTargetText(
      'services:\n  a:\n    image: x\n    container_name: foo\n    networks: [back]\n    helthcheck: {}\n',
      'c.yaml',
      { app: 'd' },
    ),
  );
  t.regex(err!.message, /c\.yaml:4:5: services\.a\.container_name: unsupported key: berth names containers/);
  t.regex(err!.message, /c\.yaml:5:16: services\.a\.networks\[0\]: network "back" is not declared/);
  t.regex(
    err!.message,
    /c\.yaml:6:5: services\.a\.helthcheck: unknown key "helthcheck" \(did you mean "healthcheck"\?\)/,
  );
});

test('YAML syntax errors name the file, line and column', (t) => {
  const err = t.throws(() =>
    loadTargetText('services:\n  web:\n    image: [x\n', 'compose.yml'),
  ) as BerthError;
  t.is(err.code, 'InvalidInput');
  t.regex(err.message, /^compose\.yml is not valid YAML\/JSON:\n {2}compose\.yml:\d+:\d+: /);
  t.throws(() => loadTargetText('x'.repeat(MAX_TARGET_FILE_BYTES + 1), 'big.yml'), {
    message: /^big\.yml: 4194305 bytes exceeds 4194304$/,
  });
  t.throws(() => loadTargetText('{"version": 1, "apps": {', 'broken.json'), {
    message: /^broken\.json:1:25: not valid JSON: /,
  });
});

test('target JSON: every schema problem with its line, unknown keys with a suggestion', (t) => {
  const json = `{
  "version": 1,
  "apps": {
    "web": {
      "services": {
        "api": { "imgae": "x", "ports": [{ "containerPort": 99999 }] },
        "db": { "image": "y", "resources": { "cpus": -1 } }
      }
    }
  }
}`;
  const err = t.throws(() => loadTargetText(json, 'target.json'));
  t.deepEqual(err!.message.split('\n'), [
    'target.json: 4 problems:',
    '  target.json:6:9: apps.web.services.api.image: Required',
    '  target.json:6:18: apps.web.services.api.imgae: unknown key "imgae" (did you mean "image"?)',
    '  target.json:6:61: apps.web.services.api.ports[0].containerPort: Number must be less than or equal to 65535',
    '  target.json:7:54: apps.web.services.db.resources.cpus: Number must be greater than 0',
  ]);
});

test('config: a YAML error and every invalid key name the file and line; env values name the variable’s key', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'berth-issues-'));
  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(bad, 'storage:\n  driver: btrfs\nnetwork: [\n');
  t.throws(() => loadConfig({ file: bad, env: {} }), {
    message: new RegExp(`^${bad} is not valid YAML/JSON:\\n {2}${bad}:4:1: `),
  });
  const typo = path.join(dir, 'typo.yaml');
  writeFileSync(typo, 'storage:\n  drvier: btrfs\n');
  const err = t.throws(() => loadConfig({ file: typo, env: { BERTH_RUNTIME: 'zzz' } }));
  t.regex(
    err!.message,
    new RegExp(`storage\\.drvier: unknown key "drvier" \\(did you mean "driver"\\?\\) \\(${typo}:2:3\\)`),
  );
  t.regex(err!.message, /runtime\.name: Invalid enum value/);
});

test('helpers: edit distance, suggestions only when close, paths in compose words', (t) => {
  t.is(editDistance('imag', 'image'), 1);
  t.is(didYouMean('enviroment', ['environment', 'entrypoint']), 'environment');
  t.is(didYouMean('working-dir', ['working_dir']), 'working_dir');
  t.is(didYouMean('zzzzzz', ['image', 'ports']), undefined);
  t.is(formatPath(['services', 'web', 'ports', 0]), 'services.web.ports[0]');
  t.is(
    formatPath(['services', 'web', 'labels', 'berth.update.strategy']),
    'services.web.labels["berth.update.strategy"]',
  );
});
