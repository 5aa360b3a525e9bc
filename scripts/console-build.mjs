// The web console's assets (src/fleet/console/web/): bundled for browsers by esbuild, in memory, then
// embedded in the berth bundle in place of src/fleet/console/embedded.ts (consolePlugin), so the one
// executable serves the whole console with no CDN and no files beside it. Tests call buildConsole() too.
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WEB = path.join(ROOT, 'src', 'fleet', 'console', 'web');
const EMBEDDED = path.join(ROOT, 'src', 'fleet', 'console', 'embedded.ts');

const TYPES = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
};

const ICON =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#1d4f91"/>' +
  '<path d="M6 21h20l-3 5H9z" fill="#fff"/><path d="M10 9h12v9H10z" fill="#9fc3f0"/></svg>';

/**
 * @typedef {{ path: string, type: string, gzip: string, sha256: string, size: number, immutable: boolean }} EmbeddedAsset
 * gzip: base64 of the gzipped body; size: bytes before gzip
 */

/**
 * Bundle the console. Entry chunks and their CSS get content-hashed names under /assets/ (cached for good);
 * index.html names them and is revalidated every time.
 * @param {{ minify?: boolean }} [o]
 * @returns {Promise<EmbeddedAsset[]>}
 */
export async function buildConsole(o = {}) {
  const result = await esbuild.build({
    entryPoints: { app: path.join(WEB, 'main.tsx') },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome100', 'firefox100', 'safari15'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    minify: o.minify ?? true,
    legalComments: 'none',
    write: false,
    outdir: '/assets',
    entryNames: '[name]-[hash]',
    chunkNames: '[name]-[hash]',
    assetNames: '[name]-[hash]',
    metafile: true,
    define: { 'process.env.NODE_ENV': '"production"' },
    logLevel: 'warning',
  });
  /** @type {EmbeddedAsset[]} */
  const files = [];
  let js = '';
  let css = '';
  for (const f of result.outputFiles) {
    const name = `/assets/${path.basename(f.path)}`;
    if (name.endsWith('.map')) continue;
    if (/^\/assets\/app-[^/]*\.js$/.test(name)) js = name;
    if (/^\/assets\/app-[^/]*\.css$/.test(name)) css = name;
    files.push(asset(name, Buffer.from(f.contents), true));
  }
  if (!js || !css) throw new Error('console build: no app entry chunk or stylesheet came out');
  files.push(asset('/assets/icon.svg', Buffer.from(ICON), false));
  const html =
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n' +
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n' +
    '<meta name="referrer" content="no-referrer">\n<title>berth console</title>\n' +
    `<link rel="icon" href="/assets/icon.svg" type="image/svg+xml">\n<link rel="stylesheet" href="${css}">\n` +
    `<script type="module" src="${js}"></script>\n</head>\n<body>\n<div id="app"></div>\n` +
    '<noscript>The berth console needs JavaScript.</noscript>\n</body>\n</html>\n';
  files.push(asset('/', Buffer.from(html), false));
  return files;
}

/** @returns {EmbeddedAsset} */
function asset(name, body, immutable) {
  const ext = path.extname(name) || '.html';
  return {
    path: name,
    type: TYPES[ext] ?? 'application/octet-stream',
    gzip: gzipSync(body, { level: 9 }).toString('base64'),
    sha256: createHash('sha256').update(body).digest('hex'),
    size: body.length,
    immutable,
  };
}

/**
 * esbuild plugin: src/fleet/console/embedded.ts becomes the built console.
 * @param {EmbeddedAsset[]} files
 * @param {'esm' | 'cjs'} format
 * @returns {esbuild.Plugin}
 */
export function consolePlugin(files, format) {
  return {
    name: 'berth-console',
    setup(build) {
      build.onResolve({ filter: /\/embedded\.js$/ }, (args) => {
        const resolved = path.resolve(args.resolveDir, args.path.replace(/\.js$/, '.ts'));
        return resolved === EMBEDDED ? { path: 'console', namespace: 'berth-console' } : undefined;
      });
      build.onLoad({ filter: /.*/, namespace: 'berth-console' }, () => ({
        contents:
          format === 'cjs'
            ? `exports.EMBEDDED_CONSOLE = ${JSON.stringify(files)};`
            : `export const EMBEDDED_CONSOLE = ${JSON.stringify(files)};`,
        loader: 'js',
      }));
    },
  };
}
