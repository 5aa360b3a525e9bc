/**
 * The argv that runs this berth again (for commands a monitor runs later, e.g. `berth rm -f <id>` after a
 * `--rm` container exits): the packaged executable alone, or node + the script it runs.
 */
import * as path from 'node:path';

export function selfCommand(): string[] | undefined {
  if ((process as { pkg?: unknown }).pkg) return [process.execPath];
  const script = process.argv[1];
  return script ? [process.execPath, path.resolve(script)] : undefined;
}

/** `berth --state-dir D [--config C] rm -f <id>`, or undefined when berth cannot name itself. */
export function autoRemoveCommand(stateDir: string, config?: string): ((id: string) => string[]) | undefined {
  const self = selfCommand();
  if (!self) return undefined;
  const cfg = config ? ['--config', path.resolve(config)] : [];
  return (id) => [...self, '--state-dir', stateDir, ...cfg, 'rm', '-f', id];
}
