import { Command, CommanderError } from 'commander';
import { BerthError, errorMessage } from '../lib/errors.js';
import { developmentNative, type NativeSource } from '../lib/native.js';
import type { CliContext, GlobalOptions } from './context.js';
import { FAMILIES, FAMILY_LOADERS, type Family, familiesFor, type Register } from './families.js';
import { invocation } from './invocation.js';
import { registerVersion } from './version.js';

export type { Register };

/** The fleet family's stand-in in the full command list: the same name and description. */
const FLEET_DESCRIPTION = 'fleet server: images, devices, signed targets, enrollment, blob service over MQTT';

/** Thrown by the fleet placeholder: runCli loads the family and parses again. */
class LoadFamily extends Error {
  constructor(readonly family: Family) {
    super(`command family ${family} is not loaded`);
  }
}

/** The root program with its global options and `version`, no family yet. */
function rootProgram(native: NativeSource): Command {
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
  registerVersion(program, native);
  return program;
}

export interface Program {
  program: Command;
  /** The composition root of the command that runs, if one was made. */
  context: () => CliContext | undefined;
}

/**
 * The program and its composition root (CliContext) over the executable's native parts: src/main.ts
 * passes the development ones (native/build, node_modules), src/packaged/main.ts the embedded ones.
 *
 * Only the command families `argv` names are loaded (src/cli/families.ts): `berth version` loads none,
 * `berth ps` the container commands. A command line that lists or suggests commands (help, no command, an
 * unknown one) loads every family but fleet, which stands in as a placeholder with its name and
 * description; invoking that (`berth help fleet`) loads the family and parses again. `load` forces
 * families (tests; the fleet after its placeholder ran).
 */
export async function buildProgram(
  argv: readonly string[],
  native: NativeSource = developmentNative,
  load?: readonly Family[],
): Promise<Program> {
  const program = rootProgram(native);
  const wanted =
    load ??
    familiesFor(
      argv,
      program.options.map((o) => ({ long: o.long, short: o.short, takesValue: o.required || o.optional })),
    );
  if (wanted !== 'all' && wanted.length === 0) return { program, context: () => undefined };
  // The long-running agent keeps V8's young generation small (src/agent/memory.ts): set before its modules
  // load and run, or new space has already grown to 8 MiB by the time the agent starts (measured).
  if (wanted !== 'all' && wanted.includes('agent'))
    (await import('../agent/memory.js')).keepYoungGenerationSmall();
  const families = wanted === 'all' ? FAMILIES.filter((f) => f !== 'fleet') : wanted;
  const [registers, { CliContext }] = await Promise.all([
    Promise.all(families.map((f) => FAMILY_LOADERS[f]())),
    import('./context.js'),
  ]);
  let ctx: CliContext | undefined;
  const context = () => {
    ctx ??= new CliContext(program.opts<GlobalOptions>(), native);
    return ctx;
  };
  for (const register of registers) register(program, context);
  if (wanted === 'all') {
    const placeholder = program
      .command('fleet')
      .description(FLEET_DESCRIPTION)
      .helpOption(false)
      .allowUnknownOption()
      .allowExcessArguments()
      .argument('[args...]')
      .action(() => {
        throw new LoadFamily('fleet');
      });
    // `berth help fleet` prints the subcommand's help without running it: load the family first
    placeholder.outputHelp = () => {
      throw new LoadFamily('fleet');
    };
  }
  return { program, context: () => ctx };
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
  invocation.argv = [...argv];
  let built: Program | undefined;
  let code = 0;
  try {
    try {
      built = await buildProgram(argv, native);
      built.program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
      await built.program.parseAsync(argv, { from: 'user' });
    } catch (err) {
      if (!(err instanceof LoadFamily)) throw err;
      built = await buildProgram(argv, native, [err.family]);
      built.program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
      await built.program.parseAsync(argv, { from: 'user' });
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
    await built
      ?.context()
      ?.close()
      .catch(() => undefined);
  }
  // Commands that pass on a child's status (run, exec) set process.exitCode.
  return code || (typeof process.exitCode === 'number' ? process.exitCode : 0);
}
