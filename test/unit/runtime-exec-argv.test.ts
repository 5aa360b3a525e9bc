import test from 'ava';
import { OciCliRuntime } from '../../src/runtime/runtime.js';

test('execArgv: runc-style exec argv with overrides, the id before the command', (t) => {
  const rt = new OciCliRuntime('berth', '/x/berth-runtime', '/state/rt');
  const a = rt.execArgv('c1', ['sh', '-c', 'echo --env'], {
    cwd: '/tmp',
    user: { uid: 1000, gid: 5 },
    env: { A: '1', B: 'x=y' },
    detach: true,
    pidFile: '/p',
  });
  t.deepEqual(a, {
    file: '/x/berth-runtime',
    args: [
      '--root',
      '/state/rt',
      'exec',
      '--detach',
      '--pid-file',
      '/p',
      '--cwd',
      '/tmp',
      '--user',
      '1000:5',
      '--env',
      'A=1',
      '--env',
      'B=x=y',
      'c1',
      'sh',
      '-c',
      'echo --env',
    ],
  });
  // --process: the command comes from the file
  t.deepEqual(
    new OciCliRuntime('runc', 'runc', '/r').execArgv('c2', ['ignored'], { processFile: '/f.json' })?.args,
    ['--root', '/r', 'exec', '--process', '/f.json', 'c2'],
  );
});

test('execArgv: undefined for a runtime without exec (the caller falls back to nsenter); ids checked', (t) => {
  t.is(new OciCliRuntime('youki-like', '/bin/y', '/r').execArgv('c', ['true']), undefined);
  t.throws(() => new OciCliRuntime('runc', 'runc', '/r').execArgv('../evil', ['true']));
});
