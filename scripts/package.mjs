// Build the single-file executables dist/berth-linux-<arch> (and a .deb each), offline:
//   npm run package                         all arches in arch/, with .debs
//   npm run package -- --arch arm64 [--arch ppc64le ...] [--no-deb] [--jobs 2] [--out dist]
// Per arch: the npm node package (arch/<arch>.json), better-sqlite3 built for it (cached), the native parts
// from `make -C native ARCH=<arch>` (every native/build/<arch>/berth-* present), an esbuild CJS bundle
// with those embedded, then pkg (SEA mode) or Node SEA + postject, a dynamic-symbol guard, a start-up
// check of the result (under qemu-user for foreign arches) and the .deb. See packaging/README.md.
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { buildAddon } from './packaging/addon.mjs';
import { appendPayload, buildInfo, bundleApp } from './packaging/bundle.mjs';
import {
  loadArch,
  loadArches,
  log,
  mapLimit,
  ROOT,
  run,
  runnerFor,
  sha256File,
} from './packaging/common.mjs';
import { buildDeb } from './packaging/deb.mjs';
import { nodeDistFor } from './packaging/node-dist.mjs';
import { buildPkg } from './packaging/pkg.mjs';
import { buildSea } from './packaging/sea.mjs';

const { values } = parseArgs({
  options: {
    arch: { type: 'string', multiple: true },
    deb: { type: 'boolean', default: true },
    'no-deb': { type: 'boolean', default: false },
    jobs: { type: 'string', default: '2' },
    out: { type: 'string', default: path.join(ROOT, 'dist') },
    packager: { type: 'string' },
    // test builds (the self-update tests): another version number, fault variants (src/faults.ts)
    version: { type: 'string' },
    fault: { type: 'string', multiple: true },
  },
});
const faults = (values.fault ?? []).flatMap((f) => f.split(',')).filter(Boolean);
const arches = values.arch
  ? values.arch.flatMap((a) => a.split(',')).map((a) => loadArch(a.trim()))
  : loadArches();
const withDeb = values.deb && !values['no-deb'];
const outDir = path.resolve(values.out);
const jobs = Math.max(1, Number(values.jobs) || 2);

async function nativeParts(def) {
  if (existsSync(path.join(ROOT, 'native', 'Makefile'))) {
    await run('make', ['-s', '-C', path.join(ROOT, 'native'), `ARCH=${def.arch}`, '-j2']);
  }
  const dir = path.join(ROOT, 'native', 'build', def.arch);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /^berth-[a-z0-9-]+$/.test(f) && statSync(path.join(dir, f)).isFile())
    .sort()
    .map((f) => path.join(dir, f));
}

/** Start the executable once (qemu-user for foreign arches) and check it reports its arch and payload. */
async function smokeTest(def, exe, payload) {
  const runner = runnerFor(def);
  const out = runner.file
    ? await run(runner.file, [...runner.prefix, exe, 'version', '--json'])
    : await run(exe, ['version', '--json']);
  const v = JSON.parse(out);
  if (v.arch !== def.nodeArch) throw new Error(`${exe} reports arch ${v.arch}, expected ${def.nodeArch}`);
  for (const p of payload) {
    if (v.native[p.name] !== p.sha256) throw new Error(`${exe} does not report ${p.name} ${p.sha256}`);
  }
  return v;
}

async function packageArch(def) {
  const t0 = Date.now();
  const packager = values.packager ?? def.packager;
  const work = path.join(outDir, '.package', def.arch);
  mkdirSync(work, { recursive: true });
  const [nodeDir, addon, natives] = await Promise.all([nodeDistFor(def), buildAddon(def), nativeParts(def)]);
  const tParts = Date.now();
  const {
    outfile: bundle,
    payload,
    appended,
  } = await bundleApp(def, {
    addon,
    natives,
    outfile: path.join(work, 'berth.cjs'),
    version: values.version,
    faults,
  });
  const output = path.join(outDir, `berth-linux-${def.arch}`);
  const build = packager === 'pkg' ? buildPkg : buildSea;
  let built;
  try {
    built = await build(def, { nodeDir, bundle, work, output });
  } catch (err) {
    for (const f of readdirSync(outDir)) {
      if (f.startsWith(`berth-linux-${def.arch}.tmp-`)) rmSync(path.join(outDir, f), { force: true });
    }
    throw err;
  }
  const { tmp, base } = built;
  // the native parts go after the executable's end, not into the JS bundle (src/packaged/appended.ts)
  appendPayload(tmp, appended);
  chmodSync(tmp, 0o755);
  renameSync(tmp, output);
  const v = await smokeTest(def, output, payload);
  const manifest = {
    arch: def.arch,
    ociPlatform: def.ociPlatform,
    packager,
    node: `${def.node.package}@${def.node.version}`,
    version: v.version,
    commit: v.commit,
    database: v.database,
    config: v.config,
    ...(faults.length ? { faults } : {}),
    size: statSync(output).size,
    baseNodeSize: statSync(base).size,
    bundleSize: statSync(bundle).size,
    sha256: await sha256File(output),
    embedded: payload,
    buildSeconds: { parts: (tParts - t0) / 1000, total: (Date.now() - t0) / 1000 },
  };
  if (withDeb) {
    manifest.deb = path.basename(await buildDeb(def, { exe: output, version: v.version, work, outDir }));
  }
  manifest.buildSeconds.total = (Date.now() - t0) / 1000;
  writeFileSync(`${output}.json`, `${JSON.stringify(manifest, null, 2)}\n`);
  const mib = (n) => (n / 1048576).toFixed(1);
  log(
    `${def.arch}: ${path.relative(process.cwd(), output)} ${mib(manifest.size)} MiB (node ${mib(manifest.baseNodeSize)} MiB + ` +
      `${mib(manifest.size - manifest.baseNodeSize)} MiB) via ${packager} in ${manifest.buildSeconds.total.toFixed(1)} s` +
      (manifest.deb ? `, ${manifest.deb}` : ''),
  );
  return manifest;
}

const t0 = Date.now();
log(
  `berth ${buildInfo(values.version).version} (${buildInfo().commit})${faults.length ? ` faults ${faults}` : ''} for ${arches.map((a) => a.arch).join(', ')}`,
);
const results = await mapLimit(arches, jobs, packageArch);
log(`done: ${results.length} executable(s) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
