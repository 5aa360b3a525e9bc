/**
 * Entry point of the packaged (single-file) executable: the same CLI as src/main.ts over the native parts
 * embedded in the executable (packagedNative). The payload module is replaced at bundle time by
 * scripts/package.mjs.
 */
import { runCli } from '../cli/program.js';
import { packagedNative } from './install.js';
import { PAYLOAD } from './payload.js';

async function main(): Promise<void> {
  // A single-executable app sees argv as [exe, exe, ...args].
  process.exitCode = await runCli(process.argv.slice(2), PAYLOAD ? packagedNative(PAYLOAD) : undefined);
}

void main();
