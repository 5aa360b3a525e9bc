import { bundleForVm, REPO_ROOT } from './bundle.js';
import { runInVm } from './vm.js';

const out = await bundleForVm(`${REPO_ROOT}/test/integration/devmapper-vm/guest.ts`, 'devmapper-guest');
const r = await runInVm({
  script: `node --enable-source-maps ${out}\n`,
  shareDir: REPO_ROOT,
  disks: [{ sizeBytes: 64 << 20 }, { sizeBytes: 1 << 30 }],
  timeoutMs: 900_000,
  env: { BERTH_REQUIRE_PRIVILEGED: '1', BERTH_VM_FILTER: process.env.F ?? '' },
});
console.log(r.output);
console.log('code', r.code, 'wall', r.wallMs, r.guestStartS, r.guestEndS);
if (r.code < 0) console.log(r.console.slice(-3000));
