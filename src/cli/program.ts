import { Command, CommanderError } from 'commander';
import { BerthError, errorMessage } from '../lib/errors.js';
import { developmentNative, type NativeSource } from '../lib/native.js';
import { registerAgent } from './agent.js';
import { registerContainers } from './containers.js';
import { CliContext, type GlobalOptions, invocation } from './context.js';
import { registerDiagnostics } from './diagnostics.js';
import { registerDockerVerbs } from './docker-verbs.js';
import { registerEvents } from './events.js';
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
/**
 * Families loaded only when one of their commands runs: the fleet server's code (HTTP API, broker,
 * stores, console assets) stays out of `berth agent` and the docker-like commands, which never import
 * it (test/unit/module-graph.test.ts checks the bundle). Until then the family is a placeholder command
 * with the same name and description; invoking it (its help included) loads the family and parses again.
 */
const LAZY_FAMILIES: Record<string, { description: string; load: () => Promise<Register> }> = {
  fleet: {
    description: 'fleet server: images, devices, signed targets, enrollment, blob service over MQTT',
    load: () => import('./fleet.js').then((m) => m.registerFleet),
  },
};

/** Thrown by a lazy family's placeholder: runCli loads the family and parses again. */
class LoadFamily extends Error {
  constructor(readonly family: string) {
    super(`command family ${family} is not loaded`);
  }
}

export function buildProgram(
  native: NativeSource = developmentNative,
  loaded: ReadonlyMap<string, Register> = new Map(),
): {
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
  for (const [name, family] of Object.entries(LAZY_FAMILIES)) {
    const register = loaded.get(name);
    if (register) register(program, context);
    else {
      const placeholder = program
        .command(name)
        .description(family.description)
        .helpOption(false)
        .allowUnknownOption()
        .allowExcessArguments()
        .argument('[args...]')
        .action(() => {
          throw new LoadFamily(name);
        });
      // `berth help <family>` prints the subcommand's help without running it: load the family first
      placeholder.outputHelp = () => {
        throw new LoadFamily(name);
      };
    }
  }
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
  let { program, context } = buildProgram(native);
  invocation.argv = [...argv];
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  let code = 0;
  try {
    try {
      await program.parseAsync(argv, { from: 'user' });
    } catch (err) {
      if (!(err instanceof LoadFamily)) throw err;
      const family = LAZY_FAMILIES[err.family];
      if (!family) throw err;
      ({ program, context } = buildProgram(native, new Map([[err.family, await family.load()]])));
      program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
      await program.parseAsync(argv, { from: 'user' });
    }
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
