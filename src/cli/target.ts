import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { loadTargetText } from '../core/compose.js';
import { specHash, targetImages } from '../core/target.js';
import { invalidInput, withContext } from '../lib/errors.js';
import type { CliContext } from './context.js';
import { columnsOf, FORMAT_HELP, printJson, printListing } from './output.js';

interface TargetOpts {
  app?: string;
  targetVersion?: string;
  json?: boolean;
  format?: string;
}

async function load(file: string, opts: TargetOpts) {
  const text = await readFile(file, 'utf8').catch((err: unknown) => {
    throw withContext(`cannot read ${file}`, err);
  });
  let version: number | undefined;
  if (opts.targetVersion !== undefined) {
    version = Number(opts.targetVersion);
    if (!Number.isInteger(version) || version < 0)
      throw invalidInput('--target-version must be a non-negative integer');
  }
  return loadTargetText(text, file, {
    ...(opts.app ? { app: opts.app } : {}),
    ...(version !== undefined ? { version } : {}),
  });
}

/** `berth target validate|convert`: check a target JSON or docker-compose file, or turn compose into a target. */
export function registerTarget(program: Command, _ctx: () => CliContext): void {
  const target = program
    .command('target')
    .description('target state files: validate, convert from docker-compose');
  target
    .command('validate <file>')
    .description('validate a target JSON or a docker-compose file (unsupported keys are named)')
    .option('--app <name>', 'app name for a compose file (default: its name: key)')
    .option('--format <format>', FORMAT_HELP)
    .option('--json', 'print JSON')
    .action(async (file: string, opts: TargetOpts) => {
      const t = await load(file, opts);
      const rows = Object.entries(t.apps).flatMap(([app, a]) =>
        Object.entries(a.services).map(([svc, s]) => ({
          app,
          service: svc,
          image: s.image,
          strategy: s.update.strategy,
          restart: s.restart.policy,
          spec: specHash(s).slice(0, 12),
        })),
      );
      if (opts.json) return printJson({ version: t.version, images: targetImages(t), services: rows });
      printListing(rows, columnsOf('app', 'service', 'image', 'strategy', 'restart', 'spec'), opts);
    });
  target
    .command('convert <compose-file>')
    .description('print the target JSON for a docker-compose file')
    .option('--app <name>', 'app name (default: the compose file name: key)')
    .option('--target-version <n>', 'target version', '0')
    .action(async (file: string, opts: TargetOpts) => {
      printJson(await load(file, opts));
    });
}
