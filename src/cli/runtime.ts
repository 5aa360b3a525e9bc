import { spawn } from 'node:child_process';
import { type Command, CommanderError } from 'commander';
import { BerthError } from '../lib/errors.js';
import type { CliContext } from './context.js';

/** Signals a wrapper must hand on so `berth runtime run` behaves like the native runtime itself. */
const FORWARDED: NodeJS.Signals[] = [
  'SIGINT',
  'SIGTERM',
  'SIGHUP',
  'SIGQUIT',
  'SIGUSR1',
  'SIGUSR2',
  'SIGWINCH',
];

/**
 * Run berth-runtime with the caller's stdio and return its exit status (128+n when killed by signal n).
 * This does not go through lib/exec: an OCI runtime's stdio belongs to the container (and its terminal),
 * so it is inherited, never captured.
 */
export function runNativeRuntime(args: readonly string[], binary: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { stdio: 'inherit' });
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    for (const sig of FORWARDED) process.on(sig, forward);
    const cleanup = () => {
      for (const sig of FORWARDED) process.off(sig, forward);
    };
    child.on('error', (e) => {
      cleanup();
      reject(new BerthError('Unavailable', `cannot run ${binary}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      cleanup();
      if (code !== null) resolve(code);
      else resolve(128 + (signal ? signalNumber(signal) : 0));
    });
  });
}

function signalNumber(sig: NodeJS.Signals): number {
  const table: Partial<Record<NodeJS.Signals, number>> = {
    SIGHUP: 1,
    SIGINT: 2,
    SIGQUIT: 3,
    SIGKILL: 9,
    SIGTERM: 15,
  };
  return table[sig] ?? 0;
}

/**
 * `berth runtime <verb> …`: the embedded OCI runtime, arguments passed through untouched (global
 * options like --root included), exit code preserved, so `berth runtime` can be given to OCI tooling
 * (containerd shims, podman --runtime, conformance suites) as its runtime binary.
 */
export function registerRuntime(program: Command, ctx: () => CliContext): void {
  program
    .command('runtime')
    .description('the embedded OCI runtime (berth-runtime): create, start, state, kill, delete, run')
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .passThroughOptions()
    .argument('[args...]', 'arguments for berth-runtime, e.g. --root /run/x create <id> --bundle <dir>')
    .action(async (args: string[]) => {
      const code = await runNativeRuntime(args, ctx().native.path('runtime'));
      if (code !== 0) throw new CommanderError(code, 'berth.runtime.exit', '');
    });
}
