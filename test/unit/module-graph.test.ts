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
 * Dynamic imports that only fleet commands execute: the fleet command family itself (program.ts
 * LAZY_FAMILIES) and the fleet registry behind `berth fleet push` (cli/push.ts is shared with
 * `berth image import`).
 */
const LAZY_DYNAMIC: Array<{ from: string; to: RegExp }> = [
  { from: 'src/cli/program.ts', to: /^src\/cli\/fleet\.ts$/ },
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

/** Modules a start of `entry` may load, each with the chain that reaches it. */
function startupClosure(meta: Metafile, entry: string): Map<string, string[]> {
  const reached = new Map<string, string[]>([[entry, [entry]]]);
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.shift()!;
    for (const imp of meta.inputs[file]?.imports ?? []) {
      if (imp.external || reached.has(imp.path)) continue;
      if (imp.kind === 'dynamic-import' && LAZY_DYNAMIC.some((l) => l.from === file && l.to.test(imp.path)))
        continue;
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
  for (const imp of inputs['src/cli/program.ts']!.imports)
    if (imp.path === 'src/cli/fleet.ts') imp.kind = 'import-statement';
  const found = offenders(startupClosure({ ...meta, inputs }, 'src/main.ts'));
  t.true(
    found.some((c) => c.endsWith('src/fleet/server.ts')),
    found.join('\n'),
  );
});
