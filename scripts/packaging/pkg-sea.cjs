// @yao-pkg/pkg's plain SEA mode called as a library, run by the build host's Node 22 (pkg needs Node >= 22):
//   node pkg-sea.cjs '<json: { entry, output, nodeRange, arch, nodePath?, useCodeCache }>'
// pkg's CLI (`pkg file.js --sea`) passes no SEA config; its `sea(entry, opts)` takes `opts.seaConfig`
// (useCodeCache: V8's code cache of the main script, made by the blob generator) and `opts.nodePath` (the
// base binary to use instead of its download cache). scripts/packaging/pkg.mjs decides both.
const { default: sea } = require('@yao-pkg/pkg/lib-es5/sea.js');

const o = JSON.parse(process.argv[2]);
sea(o.entry, {
  targets: [{ nodeRange: o.nodeRange, platform: 'linux', arch: o.arch, output: o.output }],
  ...(o.nodePath ? { nodePath: o.nodePath } : {}),
  seaConfig: { useCodeCache: o.useCodeCache === true },
}).catch((err) => {
  process.stderr.write(`pkg-sea: ${err?.stack ?? err}\n`);
  process.exit(1);
});
