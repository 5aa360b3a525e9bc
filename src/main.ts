/**
 * Composition root of the berth executable. Everything that opens files, sockets or databases is built
 * here or by the command that needs it (src/cli/context.ts); no module does so at import time.
 */
import { runCli } from './cli/program.js';

async function main(): Promise<void> {
  const code = await runCli(process.argv.slice(2));
  process.exitCode = code;
}

void main();
