import * as path from 'node:path';
import test from 'ava';
import { needPrivileges } from '../helpers/privileged.js';
import { bundleForVm, REPO_ROOT } from '../vm/bundle.js';
import { parseTestLines } from '../vm/mini-ava.js';
import { runInVm, VM_HOST_TOOLS } from '../vm/vm.js';

// One VM boot runs every devmapper check on real thin pools (Debian's stock kernel under QEMU/TCG, see
// test/vm/vm.ts): the shared snapshotter conformance suite, the tar-slip corpus, then devmapper's own checks
// (devmapper-vm/guest.ts). TCG emulation is slow, so this is the only devmapper VM boot in the test run.
test('devmapper snapshotter on real thin pools in a VM: conformance suite and device checks', async (t) => {
  if (!needPrivileges(t, { root: true, paths: VM_HOST_TOOLS })) return;
  t.timeout(32 * 60_000);
  const guest = await bundleForVm(
    path.join(REPO_ROOT, 'test/integration/devmapper-vm/guest.ts'),
    'devmapper-guest',
  );
  const r = await runInVm({
    script: `node --enable-source-maps ${guest}\n`,
    shareDir: REPO_ROOT,
    // /dev/vda = pool metadata, /dev/vdb = pool data for the block-device check
    disks: [{ sizeBytes: 64 * 1024 * 1024 }, { sizeBytes: 1024 * 1024 * 1024 }],
    // BERTH_VM_FILTER (a regexp over test titles) runs part of the guest's tests, while working on them
    env: {
      BERTH_REQUIRE_PRIVILEGED: '1',
      ...(process.env.BERTH_VM_FILTER ? { BERTH_VM_FILTER: process.env.BERTH_VM_FILTER } : {}),
    },
    timeoutMs: 31 * 60_000,
  });
  const results = parseTestLines(r.output);
  for (const res of results) {
    t.log(
      `${res.ok ? 'ok  ' : 'FAIL'} ${res.title} (${(res.ms / 1000).toFixed(1)} s)${res.error ? `\n     ${res.error}` : ''}`,
    );
  }
  t.log(
    `VM: wall ${(r.wallMs / 1000).toFixed(1)} s, guest reached the script at ${r.guestStartS} s, finished at ${r.guestEndS} s`,
  );
  if (r.code < 0) t.log(r.console.slice(-4000));
  const failed = results.filter((x) => !x.ok).map((x) => x.title);
  t.deepEqual(failed, []);
  if (!process.env.BERTH_VM_FILTER) {
    // the conformance suite's checks (21 when written) plus devmapper's own seven all reported, and the
    // tar-slip corpus with each extractor (12 when written)
    t.true(
      results.filter((x) => x.title.startsWith('devmapper: ')).length >= 28,
      `${results.length} results`,
    );
    for (const u of ['native', 'node'])
      t.true(results.filter((x) => x.title.startsWith(`unpack safety (devmapper, ${u})`)).length >= 12);
  } else t.true(results.length > 0, 'the filter matched tests');
  t.is(r.code, 0);
});
