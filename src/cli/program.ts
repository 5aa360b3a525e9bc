import { Command, CommanderError } from 'commander';
import { BerthError, errorMessage } from '../lib/errors.js';
import { developmentNative, type NativeSource } from '../lib/native.js';
import { registerAgent } from './agent.js';
import { registerContainers } from './containers.js';
import { CliContext, type GlobalOptions } from './context.js';
import { registerDiagnostics } from './diagnostics.js';
import { registerDockerVerbs } from './docker-verbs.js';
import { registerEvents } from './events.js';
import { registerFleet } from './fleet.js';
import { registerImage } from './image.js';
import { registerInspect } from './inspect.js';
import { registerPull } from './pull.js';
import { registerRuntime } from './runtime.js';
import { registerStats } from './stats.js';
import { registerStorage } from './storage.js';
import { registerTarget } from './target.js';
import { registerVersion } from './version.js';

export type Register = (program: Command, ctx: () => CliContext) => void;

/** Command families, one file each; a new family adds its register function here. */

const FAMILIES: Register[] = [
  registerImage,
  registerStorage,
  registerRuntime,
  registerContainers,
  registerFleet,
  registerAgent,
  registerPull,
  registerDiagnostics,
  registerTarget,
  registerInspect,
  registerStats,
  registerEvents,
  registerDockerVerbs,
];

/**
 * The program and its composition root (CliContext) over the executable's native parts: src/main.ts
 * passes the development ones (native/build, node_modules), src/packaged/main.ts the embedded ones.
 */
export function buildProgram(native: NativeSource = developmentNative): {
  program: Command;
  context: () => CliContext;
} {
  const program = new Command('berth');
  program
    .description(
      'berth: an edge device agent — images over MQTT, btrfs/devmapper/overlay storage, its own OCI runtime',
    )
    .option(
      '--state-dir <dir>',
      'state directory: database, blobs, snapshots (env BERTH_STATE_DIR)',
      undefined,
    )
    .option('--config <file>', 'config file, YAML or JSON (env BERTH_CONFIG)')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent')
    .option(
      '--log-format <format>',
      'auto (human lines on a terminal, else JSON) | json | pretty (env BERTH_LOG_FORMAT)',
    )
    .option(
      '--platform <os/arch[/variant]>',
      'platform to select from multi-arch images (default: this machine)',
    )
    .option('--storage-driver <driver>', 'auto|overlay|btrfs|devmapper')
    .enablePositionalOptions()
    .showHelpAfterError()
    .exitOverride();
  let ctx: CliContext | undefined;
  const context = () => {
    if (!ctx) ctx = new CliContext(program.opts<GlobalOptions>(), native);
    return ctx;
  };
  registerVersion(program, native);
  for (const register of FAMILIES) register(program, context);
  return { program, context: () => ctx ?? context() };
}

/**
 * The exit code for an error: 2 for invalid input and usage errors (unknown command or option, missing
 * argument: the README's promise), 0 for help the user asked for, 1 for everything else.
 */
export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) {
    // `berth runtime` passes the runtime's own exit status through as a CommanderError
    if (!err.code.startsWith('commander.')) return err.exitCode;
    return err.exitCode === 0 ? 0 : 2;
  }
  if (err instanceof BerthError) return err.code === 'InvalidInput' || err.details?.usage === true ? 2 : 1;
  return 1;
}

/** Parse argv, run the command, print a clean error (code + message) and pick an exit code. */
export async function runCli(argv: string[], native: NativeSource = developmentNative): Promise<number> {
  const { program, context } = buildProgram(native);
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  let code = 0;
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    code = exitCodeFor(err);
    if (err instanceof CommanderError) {
      // commander printed its message (and the help) already
    } else if (err instanceof BerthError) {
      process.stderr.write(`berth: ${err.code}: ${err.message}\n`);
    } else {
      process.stderr.write(`berth: ${errorMessage(err)}\n`);
      if (process.env.BERTH_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    }
  } finally {
    await context()
      .close()
      .catch(() => undefined);
  }
  // Commands that pass on a child's status (run, exec) set process.exitCode.
  return code || (typeof process.exitCode === 'number' ? process.exitCode : 0);
}
