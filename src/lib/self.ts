/**
 * The argv that runs this berth again (for commands a monitor runs later, e.g. `berth rm -f <id>` after a
 * `--rm` container exits): the packaged executable alone, or node + the script it runs.
 */
import * as path from 'node:path';

export function selfCommand(): string[] | undefined {
  const script = process.argv[1];
  // A single-executable app (pkg or Node SEA) sees argv as [exe, exe, ...args].
  if ((process as { pkg?: unknown }).pkg || (script && path.resolve(script) === process.execPath))
    return [process.execPath];
  return script ? [process.execPath, path.resolve(script)] : undefined;
}

/** The argv that runs this berth again exactly as it runs now (Node flags included): the launcher. */
export function selfLauncherCommand(): string[] | undefined {
  const self = selfCommand();
  if (!self) return undefined;
  return self.length === 1 ? self : [self[0]!, ...process.execArgv, ...self.slice(1)];
}

/** `berth --state-dir D [--config C] rm -f <id>`, or undefined when berth cannot name itself. */
export function autoRemoveCommand(stateDir: string, config?: string): ((id: string) => string[]) | undefined {
  const self = selfCommand();
  if (!self) return undefined;
  const cfg = config ? ['--config', path.resolve(config)] : [];
  return (id) => [...self, '--state-dir', stateDir, ...cfg, 'rm', '-f', id];
}
