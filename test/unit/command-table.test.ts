/**
 * The command table of src/cli/families.ts (top-level command → the families that register or extend it)
 * is what a run loads; it must say exactly what the families really register. The families are loaded
 * here, all of them, in order, onto one program, and who made or changed each top-level command is
 * recorded: a family that adds, renames or drops a command without the table following fails here. A
 * command built from its own families alone must also be the one the full program has (same help).
 */
import test from 'ava';
import { Command } from 'commander';
import {
  COMMAND_FAMILIES,
  FAMILIES,
  FAMILY_LOADERS,
  type Family,
  familiesFor,
  type GlobalFlag,
} from '../../src/cli/families.js';
import { buildProgram } from '../../src/cli/program.js';

/** A command's shape: its options, arguments and subcommands (recursively), as help would list them. */
function shape(cmd: Command): string {
  return JSON.stringify({
    name: cmd.name(),
    aliases: cmd.aliases(),
    description: cmd.description(),
    options: cmd.options.map((o) => o.flags),
    args: cmd.registeredArguments.map((a) => a.name()),
    commands: cmd.commands.map((c) => shape(c)),
  });
}

/** Every family registered in order onto a bare program; top-level command → families that touched it. */
async function whoRegistersWhat(): Promise<Map<string, Family[]>> {
  const program = new Command('berth').enablePositionalOptions();
  const owners = new Map<string, Family[]>();
  const noContext = () => {
    throw new Error('registering a family must not build the composition root');
  };
  for (const family of FAMILIES) {
    const before = new Map(program.commands.map((c) => [c, shape(c)]));
    (await FAMILY_LOADERS[family]())(program, noContext);
    for (const cmd of program.commands) {
      if (before.get(cmd) === shape(cmd)) continue;
      const name = cmd.name();
      owners.set(name, [...(owners.get(name) ?? []), family]);
    }
  }
  return owners;
}

test('the command table is what the families register (every family loaded, compared)', async (t) => {
  const owners = await whoRegistersWhat();
  const table = new Map(Object.entries(COMMAND_FAMILIES).map(([k, v]) => [k, [...v]]));
  t.deepEqual(
    Object.fromEntries([...owners].sort(([a], [b]) => a.localeCompare(b))),
    Object.fromEntries([...table].sort(([a], [b]) => a.localeCompare(b))),
  );
  // every family owns something, and storage really extends `image` (the one shared command)
  t.deepEqual([...new Set([...owners.values()].flat())].sort(), [...FAMILIES].sort());
  t.deepEqual(owners.get('image'), ['image', 'storage']);
});

test('a command built from its own families is the one the full program has', async (t) => {
  const full = await buildProgram([], undefined, FAMILIES);
  for (const cmd of full.program.commands) {
    const name = cmd.name();
    const { program } = await buildProgram([name]);
    const alone = program.commands.find((c) => c.name() === name);
    t.truthy(alone, name);
    t.is(shape(alone!), shape(cmd), name);
    t.is(alone!.helpInformation(), cmd.helpInformation(), name);
  }
  t.true(full.program.commands.length > 60, 'the docker verbs are there too');
});

test('`berth version` builds only `version`; help and unknown commands build every family', async (t) => {
  const version = await buildProgram(['--state-dir', '/nonexistent', 'version', '--json']);
  t.deepEqual(
    version.program.commands.map((c) => c.name()),
    ['version'],
  );
  t.is(version.context(), undefined);
  for (const argv of [[], ['--help'], ['help', 'ps'], ['nosuch']]) {
    const { program } = await buildProgram(argv);
    const names = program.commands.map((c) => c.name());
    for (const command of Object.keys(COMMAND_FAMILIES))
      t.true(names.includes(command), `${argv}: ${command}`);
  }
});

const GLOBALS: GlobalFlag[] = [
  { long: '--state-dir', takesValue: true },
  { long: '--log-level', takesValue: true },
  { long: '--verbose', short: '-v', takesValue: false },
];

test('familiesFor skips global options and their values to find the command', (t) => {
  const cases: Array<[string[], Family[] | 'all']> = [
    [['ps'], ['containers']],
    [['--state-dir', '/s', 'ps', '-a'], ['containers']],
    [
      ['--state-dir=/s', 'image', 'ls'],
      ['image', 'storage'],
    ],
    [['--log-level', 'ps', 'pull', 'x:1'], ['pull']],
    [['-v', 'top', 'c'], ['stats']],
    [['--verbose', 'fleet', 'serve'], ['fleet']],
    [['version'], []],
    [['--state-dir', '/s', 'version', '--json'], []],
    [['build', '.'], ['docker-verbs']],
    [[], 'all'],
    [['--help'], 'all'],
    [['-h'], 'all'],
    [['help', 'ps'], 'all'],
    [['nosuch'], 'all'],
    [['pss'], 'all'],
    [['--bogus', 'ps'], 'all'],
    [['--state-dir'], 'all'],
    [['--', 'ps'], 'all'],
    [['toString'], 'all'],
  ];
  for (const [argv, want] of cases) t.deepEqual(familiesFor(argv, GLOBALS), want, argv.join(' '));
});
