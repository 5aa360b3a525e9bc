import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { notFound } from './errors.js';

/** Native programs berth runs (built from native/<name>/ as berth-<name>). */
export type NativeProgram = 'runtime' | 'monitor' | 'storage';

/** Node's process.arch → the arch names used by native/Makefile, arch/ and dist/. */
export function nativeArch(nodeArch: string = process.arch): string {
  switch (nodeArch) {
    case 'arm':
      return 'armv7';
    case 'ppc64':
      return 'ppc64le';
    default:
      return nodeArch;
  }
}

/**
 * What the packaged executable needs to know to pick an extraction directory; the CLI context sets
 * `stateDir` once the config is loaded (see src/packaged/extract.ts).
 */
export const nativeHints: { stateDir?: string } = {};

/**
 * Where native programs are found. The packaged executable replaces `locate` with one that extracts the
 * embedded, sha256-checked copies (src/packaged); in development they come from native/build/<arch>/.
 */
export const nativeLocator: { locate: (name: NativeProgram) => string } = {
  locate: (name) => {
    const dirs = [
      process.env.BERTH_NATIVE_DIR,
      path.resolve(process.cwd(), 'native', 'build', nativeArch()),
      path.resolve(path.dirname(process.argv[1] ?? '.'), '..', 'native', 'build', nativeArch()),
    ].filter((d): d is string => Boolean(d));
    for (const dir of dirs) {
      const file = path.join(dir, `berth-${name}`);
      if (existsSync(file)) return file;
    }
    throw notFound(
      `native program berth-${name} not found (looked in ${dirs.join(', ')}); run \`make -C native\``,
    );
  },
};

export function nativePath(name: NativeProgram): string {
  return nativeLocator.locate(name);
}
