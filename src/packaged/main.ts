/**
 * Entry point of the packaged (single-file) executable: wires the embedded native parts in before any
 * command runs, then hands over to the same CLI as src/main.ts. The payload module is replaced at bundle
 * time by scripts/package.mjs.
 */
import { runCli } from '../cli/program.js';
import { installPackagedRuntime } from './install.js';
import { PAYLOAD } from './payload.js';

async function main(): Promise<void> {
  if (PAYLOAD) installPackagedRuntime(PAYLOAD);
  // A single-executable app sees argv as [exe, exe, ...args].
  process.exitCode = await runCli(process.argv.slice(2));
}

void main();
