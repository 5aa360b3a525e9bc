/**
 * `berth agent` and the docker-like commands never load fleet-server code (the fleet HTTP API and its
 * framework, the aedes broker, the fleet stores and services, the web console's assets): on a small
 * device that is memory and start-up time for nothing. Checked on the bundle's module graph as esbuild
 * builds it (the same entry points as scripts/build.mjs and scripts/packaging/bundle.mjs): from the entry,
 * every static import and require is loaded at start, and every dynamic import may be, except the ones
 * that only fleet commands reach (LAZY_DYNAMIC below). Nothing forbidden may be reachable that way.
 */
import * as path from 'node:path';
import test from 'ava';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(import.meta.dirname, '..', '..');

/** What only the fleet server uses. */
const FORBIDDEN: RegExp[] = [
  /^src\/fleet\//,
  /^src\/cli\/fleet[^/]*\.ts$/,
  /^src\/console\//,
  /(^|\/)node_modules\/(fastify|@fastify\/[^/]+|hono|@hono\/[^/]+|aedes|aedes-[^/]+)\//,
  /\.(html|css|svg|woff2?)$/,
];

/**
 * Dynamic imports that only fleet commands execute: the fleet command family itself (cli/families.ts
 * FAMILY_LOADERS) and the fleet registry behind `berth fleet push` (cli/push.ts is shared with
 * `berth image import`).
 */
const LAZY_DYNAMIC: Array<{ from: string; to: RegExp }> = [
  { from: 'src/cli/families.ts', to: /^src\/cli\/fleet\.ts$/ },
  { from: 'src/cli/push.ts', to: /^src\/fleet\// },
];

type Metafile = esbuild.Metafile;

async function graphOf(entry: string, format: 'esm' | 'cjs'): Promise<Metafile> {
  const r = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format,
    write: false,
    metafile: true,
    outfile: path.join(ROOT, 'dist', 'module-graph-probe.js'),
    // as scripts/build.mjs: native addon and packages that load files relative to themselves
    external: ['better-sqlite3'],
    define: { __BERTH_BUILD__: JSON.stringify({ version: '0', commit: 'test' }) },
    logLevel: 'silent',
  });
  return r.metafile;
}

/**
 * Modules a start of `entry` may load, each with the chain that reaches it. `skip` tells which dynamic
 * imports the command never makes (default: the fleet-only ones).
 */
function startupClosure(
  meta: Metafile,
  entry: string,
  skip: (from: string, to: string) => boolean = (from, to) =>
    LAZY_DYNAMIC.some((l) => l.from === from && l.to.test(to)),
): Map<string, string[]> {
  const reached = new Map<string, string[]>([[entry, [entry]]]);
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.shift()!;
    for (const imp of meta.inputs[file]?.imports ?? []) {
      if (imp.external || reached.has(imp.path)) continue;
      if (imp.kind === 'dynamic-import' && skip(file, imp.path)) continue;
      reached.set(imp.path, [...reached.get(file)!, imp.path]);
      queue.push(imp.path);
    }
  }
  return reached;
}

function offenders(reached: Map<string, string[]>): string[] {
  return [...reached]
    .filter(([file]) => FORBIDDEN.some((re) => re.test(file)))
    .map(([, chain]) => chain.join(' → '));
}

for (const [entry, format] of [
  ['src/main.ts', 'esm'],
  ['src/packaged/main.ts', 'cjs'],
] as const) {
  test(`${entry}: agent and docker-like commands reach no fleet, HTTP or console module`, async (t) => {
    const meta = await graphOf(entry, format);
    const reached = startupClosure(meta, entry);
    // the graph is the real one: the agent's wiring and the fleet family are both in the bundle
    t.true(reached.has('src/agent/adapters/device-agent.ts'));
    t.true(reached.has('src/agent/adapters/images.ts'));
    t.truthy(meta.inputs['src/cli/fleet.ts'], 'the fleet family is in the bundle, behind a dynamic import');
    t.deepEqual(offenders(reached), []);
  });
}

test('the check sees a fleet module reached through a static import', async (t) => {
  const meta = await graphOf('src/main.ts', 'esm');
  // as if program.ts imported the fleet family statically again
  const inputs = structuredClone(meta.inputs);
  for (const imp of inputs['src/cli/families.ts']!.imports)
    if (imp.path === 'src/cli/fleet.ts') imp.kind = 'import-statement';
  const found = offenders(startupClosure({ ...meta, inputs }, 'src/main.ts'));
  t.true(
    found.some((c) => c.endsWith('src/fleet/server.ts')),
    found.join('\n'),
  );
});

/**
 * `berth version` loads no command family (src/cli/families.ts: the program registers only `version` when
 * argv names it) and so none of the heavy libraries: no schema library, no MQTT, logger, YAML, SQLite or
 * system-information code, no composition root. Its start-up closure: the static imports from the entry,
 * plus every dynamic import except the family loaders and program.ts's (the composition root, loaded
 * with the families).
 */
const VERSION_FORBIDDEN: RegExp[] = [
  /(^|\/)node_modules\/(zod|mqtt|mqtt-packet|pino|yaml|better-sqlite3|systeminformation|ws|tar-stream)\//,
  /^src\/cli\/context\.ts$/,
  /^src\/config\/schema\.ts$/,
];

function familyModules(meta: Metafile): string[] {
  return meta.inputs['src/cli/families.ts']!.imports.filter((i) => i.kind === 'dynamic-import').map(
    (i) => i.path,
  );
}

function versionClosure(meta: Metafile, entry: string): Map<string, string[]> {
  return startupClosure(
    meta,
    entry,
    (from) => from === 'src/cli/families.ts' || from === 'src/cli/program.ts',
  );
}

function versionOffenders(meta: Metafile, reached: Map<string, string[]>): string[] {
  const families = familyModules(meta);
  return [...reached]
    .filter(([file]) => families.includes(file) || VERSION_FORBIDDEN.some((re) => re.test(file)))
    .map(([, chain]) => chain.join(' → '));
}

for (const [entry, format] of [
  ['src/main.ts', 'esm'],
  ['src/packaged/main.ts', 'cjs'],
] as const) {
  test(`${entry}: \`berth version\` reaches no command family, zod, mqtt, pino, yaml or SQLite`, async (t) => {
    const meta = await graphOf(entry, format);
    const families = familyModules(meta);
    // every family is a dynamic import of families.ts (13 of them, fleet included)
    t.true(
      families.includes('src/cli/containers.ts') && families.includes('src/cli/fleet.ts'),
      families.join(),
    );
    t.true(families.length >= 13, families.join());
    const reached = versionClosure(meta, entry);
    t.true(reached.has('src/cli/version.ts'));
    t.true(reached.has('src/cli/program.ts'));
    t.deepEqual(versionOffenders(meta, reached), []);
  });
}

test('the version check sees zod reached through a static import', async (t) => {
  const meta = await graphOf('src/packaged/main.ts', 'cjs');
  const inputs = structuredClone(meta.inputs);
  // as if version.ts took the config format from the schema module again
  inputs['src/cli/version.ts']!.imports.push({ path: 'src/config/schema.ts', kind: 'import-statement' });
  const found = versionOffenders(meta, versionClosure({ ...meta, inputs }, 'src/packaged/main.ts'));
  t.true(
    found.some((c) => /src\/cli\/version\.ts → src\/config\/schema\.ts → .*node_modules\/zod\//.test(c)),
    found.join('\n'),
  );
  // and a family imported statically by program.ts
  const inputs2 = structuredClone(meta.inputs);
  inputs2['src/cli/program.ts']!.imports.push({ path: 'src/cli/containers.ts', kind: 'import-statement' });
  const found2 = versionOffenders(meta, versionClosure({ ...meta, inputs: inputs2 }, 'src/packaged/main.ts'));
  t.true(
    found2.some((c) => c.endsWith('src/cli/program.ts → src/cli/containers.ts')),
    found2.join('\n'),
  );
});
