import type { Command } from 'commander';
import { CONFIG_FORMAT, MIN_CONFIG_FORMAT } from '../config/format.js';
import { MIN_MIGRATABLE_SCHEMA, releaseMigrations } from '../db/migrations.js';
import { developmentNative, type NativeSource } from '../lib/native.js';
import { BUILD } from '../version.js';
import { printJson } from './output.js';

export interface VersionInfo {
  version: string;
  commit: string;
  arch: string;
  platform: string;
  node: string;
  native: Record<string, string>;
  /** what a release manifest records: the database schema it migrates to and from, the config format */
  database: { schema: number; minSchema: number };
  config: { format: number; minFormat: number };
}

/** `native`: the executable's embedded parts (name → sha256; none in development). */
export function versionInfo(native: Pick<NativeSource, 'embedded'> = developmentNative): VersionInfo {
  return {
    version: BUILD.version,
    commit: BUILD.commit,
    arch: process.arch,
    platform: process.platform,
    node: process.version,
    native: native.embedded(),
    database: { schema: releaseMigrations().length, minSchema: MIN_MIGRATABLE_SCHEMA },
    config: { format: CONFIG_FORMAT, minFormat: MIN_CONFIG_FORMAT },
  };
}

export function registerVersion(program: Command, native: NativeSource): void {
  program
    .command('version')
    .description('print version, commit, architecture, Node version and embedded native parts')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }) => {
      const v = versionInfo(native);
      if (opts.json) return printJson(v);
      process.stdout.write(`berth ${v.version}\ncommit: ${v.commit}\narch: ${v.arch}\nnode: ${v.node}\n`);
      for (const [name, hash] of Object.entries(v.native)) process.stdout.write(`native ${name}: ${hash}\n`);
    });
}
