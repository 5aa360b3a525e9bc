// The app as one CommonJS file for a single-executable app (SEA main scripts are CommonJS): src/packaged/
// main.ts with every dependency bundled and, generated in place of src/packaged/payload.ts, the index
// (name, size, sha256, offset) of the arch's payload (SQLite addon + native programs), appended to the executable.
import { execFileSync } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as esbuild from 'esbuild';
import { buildConsole, consolePlugin } from '../console-build.mjs';
import { ROOT, sha256File } from './common.mjs';

/** Faults a test build may carry (src/faults.ts); release builds define every one as false. */
export const FAULTS = ['exit-at-start', 'never-connect', 'migrate'];

export function faultDefines(faults = []) {
  for (const f of faults)
    if (!FAULTS.includes(f)) throw new Error(`unknown fault ${f} (known: ${FAULTS.join(', ')})`);
  return Object.fromEntries(
    FAULTS.map((f) => [
      `__BERTH_FAULT_${f.toUpperCase().replaceAll('-', '_')}__`,
      String(faults.includes(f)),
    ]),
  );
}

/** Version (package.json, or `version` for test builds of other versions) and commit. */
export function buildInfo(version) {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  let commit = process.env.BERTH_COMMIT ?? 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .toString()
      .trim();
  } catch {
    /* not a git checkout */
  }
  return { version: version ?? pkg.version, commit };
}

/** Must match src/packaged/appended.ts. */
const APPENDED_MAGIC = 'BERTH-PAYLOAD-v1';

/**
 * The native parts go after the end of the executable (src/packaged/appended.ts), not into the bundle:
 * the bundle carries only their names, sizes, sha256 and offsets.
 */
function collector() {
  const chunks = [];
  let offset = 0;
  return {
    async embed(file, name) {
      const bytes = readFileSync(file);
      const entry = { name, sha256: await sha256File(file), size: bytes.length, offset };
      chunks.push(bytes);
      offset += bytes.length;
      return entry;
    },
    data: () => Buffer.concat(chunks),
  };
}

/** Append the parts (and the footer that finds them) to a built executable. */
export function appendPayload(exe, data) {
  const footer = Buffer.alloc(24);
  footer.write(APPENDED_MAGIC, 0, 'latin1');
  footer.writeBigUInt64LE(BigInt(data.length), 16);
  appendFileSync(exe, Buffer.concat([data, footer]));
}

/**
 * @param {import('./common.mjs').ArchDef} def
 * @param {{ addon: string, natives: string[], outfile: string, version?: string, faults?: string[] }} parts
 * @returns {Promise<{ outfile: string, payload: { name: string, sha256: string, size: number }[], appended: Buffer }>}
 */
export async function bundleApp(def, { addon, natives, outfile, version, faults = [] }) {
  const parts = collector();
  const sqlite = await parts.embed(addon, 'better_sqlite3.node');
  const native = [];
  for (const f of natives) native.push(await parts.embed(f, path.basename(f)));
  const payload = { arch: def.arch, sqlite, native };
  const payloadModule = path.join(ROOT, 'src', 'packaged', 'payload.ts');
  /** @type {esbuild.Plugin} */
  const payloadPlugin = {
    name: 'berth-payload',
    setup(build) {
      build.onResolve({ filter: /\/payload\.js$/ }, (args) => {
        const resolved = path.resolve(args.resolveDir, args.path.replace(/\.js$/, '.ts'));
        return resolved === payloadModule ? { path: 'payload', namespace: 'berth-payload' } : undefined;
      });
      build.onLoad({ filter: /.*/, namespace: 'berth-payload' }, () => ({
        contents: `exports.PAYLOAD = ${JSON.stringify(payload)};`,
        loader: 'js',
      }));
    },
  };
  await esbuild.build({
    entryPoints: [path.join(ROOT, 'src', 'packaged', 'main.ts')],
    bundle: true,
    platform: 'node',
    target: `node${def.node.version.split('.')[0]}`,
    format: 'cjs',
    outfile,
    minify: true,
    legalComments: 'none',
    plugins: [payloadPlugin, consolePlugin(await buildConsole(), 'cjs')],
    define: { __BERTH_BUILD__: JSON.stringify(buildInfo(version)), ...faultDefines(faults) },
    logLevel: 'warning',
  });
  const list = [payload.sqlite, ...payload.native].map(({ name, sha256, size }) => ({ name, sha256, size }));
  return { outfile, payload: list, appended: parts.data() };
}
