/**
 * docker verbs berth does not have. Users come from docker and balena: instead of commander's bare
 * "unknown command", each answers with what to do in berth (hidden from --help, exit 2 as a usage error).
 */
import type { Command } from 'commander';
import { BerthError } from '../lib/errors.js';
import { DOCKER_VERBS } from './docker-verb-hints.js';

export function registerDockerVerbs(program: Command): void {
  for (const [verb, hint] of Object.entries(DOCKER_VERBS)) {
    if (program.commands.some((c) => c.name() === verb || c.aliases().includes(verb))) continue;
    program
      .command(verb, { hidden: true })
      .allowUnknownOption()
      .allowExcessArguments()
      .helpOption(false)
      .argument('[args...]')
      .action(() => {
        throw new BerthError('Unsupported', `berth ${verb}: ${hint}`, { details: { usage: true } });
      });
  }
}
