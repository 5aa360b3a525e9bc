/**
 * The command families and which top-level commands each registers, so a run loads only the family its
 * command needs (by dynamic import): `berth ps` compiles and evaluates the container commands and what
 * they use, not the image import, compose conversion, runtime pass-through or fleet code, and `berth
 * version` loads no family at all. test/unit/command-table.test.ts loads every family and checks this
 * table against what they really register, so it cannot go stale.
 */
import type { Command } from 'commander';
import type { CliContext } from './context.js';
import { DOCKER_VERBS } from './docker-verb-hints.js';

export type Register = (program: Command, ctx: () => CliContext) => void;

/** Every family, in registration order (the order of `berth --help`'s command list). */
export const FAMILY_LOADERS = {
  image: () => import('./image.js').then((m) => m.registerImage),
  storage: () => import('./storage.js').then((m) => m.registerStorage),
  runtime: () => import('./runtime.js').then((m) => m.registerRuntime),
  containers: () => import('./containers.js').then((m) => m.registerContainers),
  agent: () => import('./agent.js').then((m) => m.registerAgent),
  pull: () => import('./pull.js').then((m) => m.registerPull),
  diagnostics: () => import('./diagnostics.js').then((m) => m.registerDiagnostics),
  target: () => import('./target.js').then((m) => m.registerTarget),
  inspect: () => import('./inspect.js').then((m) => m.registerInspect),
  stats: () => import('./stats.js').then((m) => m.registerStats),
  events: () => import('./events.js').then((m) => m.registerEvents),
  'docker-verbs': () => import('./docker-verbs.js').then((m): Register => m.registerDockerVerbs),
  // the fleet server's family (HTTP API, broker, stores, console assets): a placeholder stands in for it
  // in the full command list (program.ts), so `berth --help` does not load it either
  fleet: () => import('./fleet.js').then((m) => m.registerFleet),
} satisfies Record<string, () => Promise<Register>>;

export type Family = keyof typeof FAMILY_LOADERS;
export const FAMILIES = Object.keys(FAMILY_LOADERS) as Family[];

/**
 * Top-level command → the families that register or extend it (storage adds `image unpack`). The docker
 * verbs berth lacks answer only where no family has the command.
 */
export const COMMAND_FAMILIES: Readonly<Record<string, readonly Family[]>> = {
  ...Object.fromEntries(Object.keys(DOCKER_VERBS).map((verb) => [verb, ['docker-verbs'] as const])),
  image: ['image', 'storage'],
  images: ['image'],
  storage: ['storage'],
  runtime: ['runtime'],
  run: ['containers'],
  ps: ['containers'],
  logs: ['containers'],
  restart: ['containers'],
  stop: ['containers'],
  start: ['containers'],
  kill: ['containers'],
  rm: ['containers'],
  exec: ['containers'],
  agent: ['agent'],
  pull: ['pull'],
  'db-check': ['diagnostics'],
  'native-path': ['diagnostics'],
  'mqtt-ping': ['diagnostics'],
  target: ['target'],
  inspect: ['inspect'],
  stats: ['stats'],
  top: ['stats'],
  events: ['events'],
  fleet: ['fleet'],
};

/** A global option of the root program: its flags and whether it takes a value. */
export interface GlobalFlag {
  long?: string | undefined;
  short?: string | undefined;
  takesValue: boolean;
}

/**
 * What a command line needs loaded: the families of the command it names, or 'all' for everything that
 * lists commands or suggests one — no command (`berth`), help (`berth --help`, `berth help …`), an
 * unknown command or an unknown global option (commander's error shows the full help), `--`. Global
 * options and their values before the command are skipped.
 */
export function familiesFor(argv: readonly string[], globals: readonly GlobalFlag[]): Family[] | 'all' {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return 'all';
    if (arg.startsWith('-') && arg !== '-') {
      const eq = arg.indexOf('=');
      const name = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
      const flag = globals.find((g) => g.long === name || g.short === name);
      if (!flag) return 'all';
      if (flag.takesValue && name === arg) i++;
      continue;
    }
    if (arg === 'version') return [];
    const families = Object.hasOwn(COMMAND_FAMILIES, arg) ? COMMAND_FAMILIES[arg] : undefined;
    return families ? FAMILIES.filter((f) => families.includes(f)) : 'all';
  }
  return 'all';
}
