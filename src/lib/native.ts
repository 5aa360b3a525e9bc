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
 * berth's native parts as one command sees them: where each native program runs from and which SQLite
 * addon opens the database. The composition root (src/cli/context.ts, or a test) makes one and hands it to
 * what needs it — the runtime, the monitor path, the storage helper, openDatabase — as a constructor
 * argument; nothing looks it up through module state.
 */
export interface NativeParts {
  /** The path of a native program, ready to run (the packaged executable extracts it on first use). */
  path(name: NativeProgram): string;
  /** The loaded better-sqlite3 addon for openDatabase's `nativeBinding`; undefined: node_modules' build. */
  sqliteBinding(): unknown;
}

/**
 * Where an executable's native parts come from, given to runCli by the entry point: src/main.ts passes
 * `developmentNative` (native/build, node_modules), src/packaged/main.ts the parts embedded in the
 * executable. The state dir is known only once the config is loaded, and it is one place the packaged
 * parts may be extracted to.
 */
export interface NativeSource {
  parts(stateDir: string | undefined): NativeParts;
  /** name → sha256 of every embedded part, for `berth version` (none in development) */
  embedded(): Record<string, string>;
}

/**
 * A native program as development and tests find it: $BERTH_NATIVE_DIR, then native/build/<arch>/ of the
 * working directory or of the checkout the entry script runs from.
 */
export function developmentNativePath(name: NativeProgram): string {
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
}

/** Development and tests: programs from native/build (developmentNativePath), SQLite from node_modules. */
export const developmentParts: NativeParts = {
  path: developmentNativePath,
  sqliteBinding: () => undefined,
};

export const developmentNative: NativeSource = {
  parts: () => developmentParts,
  embedded: () => ({}),
};
