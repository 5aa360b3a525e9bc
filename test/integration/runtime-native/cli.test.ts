/** `berth runtime …` passes its arguments to berth-runtime untouched and keeps the exit code. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { runCli } from '../../../src/cli/program.js';
import { runNativeRuntime } from '../../../src/cli/runtime.js';
import { berthRuntimeBinary, buildNativeRuntime } from '../../helpers/runtime-native.js';

test.before(async () => {
  await buildNativeRuntime();
});

test('runNativeRuntime returns the native exit code', async (t) => {
  t.is(await runNativeRuntime(['--version'], berthRuntimeBinary()), 0);
  t.is(await runNativeRuntime(['no-such-verb'], berthRuntimeBinary()), 2);
});

test('berth runtime passes global options and verbs through, exit code preserved', async (t) => {
  const root = await mkdtemp(path.join(tmpdir(), 'berth-cli-rt-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  process.env.BERTH_NATIVE_DIR = path.dirname(berthRuntimeBinary());
  t.is(await runCli(['runtime', '--version']), 0);
  t.is(await runCli(['runtime', '--root', root, 'state', 'missing-container']), 1);
  t.is(await runCli(['runtime', '--root', root, 'list']), 0);
  t.is(await runCli(['runtime', '--root', root, 'kill', 'x', 'NOSUCHSIG']), 1);
});
