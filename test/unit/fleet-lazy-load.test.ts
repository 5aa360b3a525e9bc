/**
 * The fleet server's HTTP side (hono, the API routes, zod v4 schemas) must never load in `berth agent`
 * or the docker-like commands: it is reachable from the entry point only through dynamic imports. The
 * bundle's own import graph (esbuild metafile, the same bundler the build uses) is walked along static
 * edges only.
 */
import test from 'ava';
import * as esbuild from 'esbuild';

test('hono and src/fleet/api are reachable from src/main.ts only through dynamic import()', async (t) => {
  const r = await esbuild.build({
    entryPoints: ['src/main.ts'],
    bundle: true,
    platform: 'node',
    format: 'esm',
    write: false,
    metafile: true,
    outfile: 'out.mjs',
    external: ['better-sqlite3', 'pino', 'thread-stream', 'systeminformation'],
    logLevel: 'silent',
  });
  const inputs = r.metafile.inputs;
  const walk = (followDynamic: boolean) => {
    const seen = new Set<string>(['src/main.ts']);
    const todo = ['src/main.ts'];
    while (todo.length) {
      const file = todo.pop()!;
      for (const imp of inputs[file]?.imports ?? []) {
        if (imp.external || seen.has(imp.path)) continue;
        if (imp.kind === 'dynamic-import' && !followDynamic) continue;
        seen.add(imp.path);
        todo.push(imp.path);
      }
    }
    return [...seen];
  };
  const lazy = (p: string) =>
    p.includes('node_modules/hono/') || p.includes('node_modules/@hono/') || p.startsWith('src/fleet/api/');
  const eager = walk(false);
  t.deepEqual(eager.filter(lazy), [], 'loaded at start by every command');
  const all = walk(true);
  t.true(
    all.some((p) => p.includes('node_modules/hono/')),
    'hono is in the bundle (via fleet serve)',
  );
  t.true(all.includes('src/fleet/api/index.ts'));
});
