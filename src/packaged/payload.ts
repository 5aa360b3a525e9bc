/**
 * What the packaged executable carries besides the app: the better-sqlite3 addon and the native programs
 * built for its arch. scripts/package.mjs replaces this module with a generated one at bundle time; in
 * development there is no payload and everything comes from node_modules and native/build.
 */
export interface EmbeddedFile {
  /** File name once extracted: `better_sqlite3.node`, `berth-runtime`, ... */
  name: string;
  /** sha256 (hex) of the bytes, computed at build time. */
  sha256: string;
  size: number;
  /**
   * Where the bytes are, read only when the file must be (re)written: at `offset` in the data appended to
   * the executable (src/packaged/appended.ts), which keeps ~5 MiB out of the JS source every start reads
   * and compiles; or base64 here (tests).
   */
  offset?: number;
  base64?: string;
}

export interface EmbeddedPayload {
  /** berth's arch name (x64, arm64, armv7, ppc64le) the payload was built for. */
  arch: string;
  sqlite: EmbeddedFile;
  native: EmbeddedFile[];
}

export const PAYLOAD: EmbeddedPayload | null = null;
