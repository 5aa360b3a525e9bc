import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { agentOptionsFromConfig } from '../../src/agent/adapters/device-agent.js';
import { loadConfig } from '../../src/config/load.js';

const tmp = () => mkdtempSync(path.join(tmpdir(), 'berth-config-'));

test('defaults apply when nothing is given', (t) => {
  const c = loadConfig({ env: {} });
  t.is(c.stateDir, '/var/lib/berth');
  t.is(c.storage.driver, 'auto');
  t.is(c.runtime.name, 'berth');
});

test('file < environment < flags', (t) => {
  const file = path.join(tmp(), 'berth.yaml');
  writeFileSync(file, 'stateDir: /from/file\nstorage:\n  driver: btrfs\nlogLevel: debug\n');
  const c = loadConfig({
    file,
    env: { BERTH_STATE_DIR: '/from/env', BERTH_STORAGE_DRIVER: 'overlay' },
    flags: { stateDir: '/from/flag' },
  });
  t.is(c.stateDir, '/from/flag');
  t.is(c.storage.driver, 'overlay');
  t.is(c.logLevel, 'debug');
});

test('an invalid value names the key and what was expected', (t) => {
  const err = t.throws(() => loadConfig({ env: { BERTH_STORAGE_DRIVER: 'zfs' } }));
  t.regex(err!.message, /storage\.driver/);
  t.regex(err!.message, /overlay/);
  t.is((err as { code?: string }).code, 'InvalidInput');
});

test('an unknown key in the file is rejected by name', (t) => {
  const file = path.join(tmp(), 'berth.json');
  writeFileSync(file, JSON.stringify({ storage: { drvier: 'btrfs' } }));
  const err = t.throws(() => loadConfig({ file, env: {} }));
  t.regex(err!.message, /storage\.drvier/);
});

test('a config file that is not a mapping is rejected', (t) => {
  const file = path.join(tmp(), 'berth.yaml');
  writeFileSync(file, '- a\n- b\n');
  t.throws(() => loadConfig({ file, env: {} }), { message: /expected a mapping/ });
});

test('agent section: timings and caps reach the agent; defaults as before; bad values name the key', (t) => {
  const defaults = agentOptionsFromConfig(loadConfig({ env: {}, flags: {} }).agent);
  t.deepEqual(defaults, {
    reconciler: {
      healthWindowMs: 60_000,
      minDelayMs: 1000,
      maxDelayMs: 60_000,
      idleIntervalMs: 10_000,
      reserveBytes: 32 * 1024 * 1024,
    },
    metricsIntervalMs: 60_000,
    outbox: { maxBytes: 8 * 1024 * 1024, maxAgeMs: 7 * 24 * 3600_000 },
  });
  const set = agentOptionsFromConfig(
    loadConfig({ env: {}, flags: { agent: { healthWindowMs: 5000, retryMaxMs: 2000 } } }).agent,
  );
  t.is(set.reconciler?.healthWindowMs, 5000);
  t.is(set.reconciler?.maxDelayMs, 2000);
  const bad = t.throws(() =>
    loadConfig({ env: {}, flags: { agent: { retryMinMs: 5000, retryMaxMs: 1000 } } }),
  );
  t.regex(bad!.message, /agent.*retryMinMs must not exceed retryMaxMs/);
  const unknown = t.throws(() => loadConfig({ env: {}, flags: { agent: { healthWindow: 5 } } }));
  t.regex(unknown!.message, /healthWindow/);
});
