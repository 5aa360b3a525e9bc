import * as path from 'node:path';
import { notFound } from '../lib/errors.js';
import { developmentNativePath, type NativeParts, type NativeSource } from '../lib/native.js';
import { candidateDirs, extractPayload, loadAddon } from './extract.js';
import type { EmbeddedFile, EmbeddedPayload } from './payload.js';

/**
 * The native parts of the packaged executable: programs and the SQLite addon come from the payload,
 * extracted (sha256-checked) on first use into the first usable candidate dir (the state dir's is the
 * first); `berth version` lists the embedded hashes. BERTH_NATIVE_DIR still wins for native programs (to
 * try a freshly built runtime without repackaging). The entry point hands this to runCli, which hands it
 * to the composition root (CliContext): nothing here is module state.
 */
export function packagedNative(payload: EmbeddedPayload): NativeSource {
  let dir: string | undefined;
  const checked = new Set<string>();
  let addon: unknown;
  return {
    embedded: () => Object.fromEntries([payload.sqlite, ...payload.native].map((f) => [f.name, f.sha256])),
    parts(stateDir: string | undefined): NativeParts {
      // the addon and the native programs (which run one another) are each written or re-checked once,
      // when first needed: `berth ps` hashes the addon only
      const extracted = (files: readonly EmbeddedFile[]): string => {
        const todo = files.filter((f) => !checked.has(f.name));
        if (!dir || todo.length > 0) {
          const candidates = dir ? [path.dirname(dir)] : candidateDirs(stateDir);
          dir = extractPayload(payload, { candidates, files: todo });
          for (const f of todo) checked.add(f.name);
        }
        return dir;
      };
      return {
        path(name) {
          if (process.env.BERTH_NATIVE_DIR) return developmentNativePath(name);
          const file = payload.native.find((f) => f.name === `berth-${name}`);
          if (!file) {
            const have = payload.native.map((f) => f.name).join(', ') || 'none';
            throw notFound(
              `this berth executable (${payload.arch}) was built without berth-${name} (embedded: ${have})`,
            );
          }
          return path.join(extracted(payload.native), file.name);
        },
        sqliteBinding() {
          addon ??= loadAddon(path.join(extracted([payload.sqlite]), payload.sqlite.name));
          return addon;
        },
      };
    },
  };
}
