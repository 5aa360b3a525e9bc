import * as path from 'node:path';
import { versionExtras } from '../cli/version.js';
import { setSqliteNativeBindingLoader } from '../db/database.js';
import { notFound } from '../lib/errors.js';
import { nativeHints, nativeLocator } from '../lib/native.js';
import { candidateDirs, extractPayload, loadAddon } from './extract.js';
import type { EmbeddedPayload } from './payload.js';

/**
 * Point berth's native lookups at the payload of the packaged executable: `nativePath()` and the SQLite
 * binding get the extracted, sha256-checked copies; `berth version` lists the embedded hashes.
 * BERTH_NATIVE_DIR still wins for native programs (to try a freshly built runtime without repackaging).
 */
export function installPackagedRuntime(payload: EmbeddedPayload): void {
  let dir: string | undefined;
  const extracted = (): string => {
    dir ??= extractPayload(payload, { candidates: candidateDirs(nativeHints.stateDir) });
    return dir;
  };
  versionExtras.native = () =>
    Object.fromEntries([payload.sqlite, ...payload.native].map((f) => [f.name, f.sha256]));
  const development = nativeLocator.locate;
  nativeLocator.locate = (name) => {
    if (process.env.BERTH_NATIVE_DIR) return development(name);
    const file = payload.native.find((f) => f.name === `berth-${name}`);
    if (!file) {
      const have = payload.native.map((f) => f.name).join(', ') || 'none';
      throw notFound(
        `this berth executable (${payload.arch}) was built without berth-${name} (embedded: ${have})`,
      );
    }
    return path.join(extracted(), file.name);
  };
  setSqliteNativeBindingLoader(() => loadAddon(path.join(extracted(), payload.sqlite.name)));
}
