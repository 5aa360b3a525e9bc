import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ExecutionContext, TestFn } from 'ava';
import type { Failpoint, Failpointable } from '../../src/snapshots/base.js';
import { SimulatedCrash } from '../../src/snapshots/metadata.js';
import { withTempMount } from '../../src/snapshots/mount.js';
import type { Snapshotter } from '../../src/snapshots/snapshotter.js';
import { needPrivileges } from '../helpers/privileged.js';

/**
 * The snapshotter conformance suite: the behaviour every backend (overlay, btrfs, devmapper) must show,
 * after containerd's testsuite.SnapshotterSuite. A backend's test file calls
 *
 *     snapshotterSuite(test, 'overlay', async (t) => ({ snapshotter, reopen, cleanup }), { paths: [...] });
 *
 * `factory` gives a fresh snapshotter on a fresh root (recover() already called) and a cleanup that
 * removes everything even after a failure; `reopen` opens a second snapshotter on the same root and
 * database, as a restart after a crash would (the first one is abandoned, never closed).
 * Crashes are simulated with failpoints (src/snapshots/base.ts): the operation stops dead after
 * recording its intent, or after acting but before recording its result, and nothing is undone.
 */
export interface SuiteFixture {
  snapshotter: Snapshotter & Failpointable;
  reopen(): Promise<Snapshotter & Failpointable>;
  cleanup(): Promise<void>;
}

export type SuiteFactory = (t: ExecutionContext) => Promise<SuiteFixture>;

export interface SuiteOptions {
  /** Passed to needPrivileges: the suite mounts, so root is always needed. */
  paths?: string[];
  /** Run the tests of this file one after another (backends sharing a loop device or pool). */
  serial?: boolean;
}

async function writeIn(sn: Snapshotter, key: string, files: Record<string, string | null>): Promise<void> {
  await withTempMount(await sn.mounts(key), async (dir) => {
    for (const [rel, content] of Object.entries(files)) {
      const p = path.join(dir, rel);
      if (content === null) {
        await fsp.rm(p, { recursive: true, force: true });
      } else {
        await fsp.mkdir(path.dirname(p), { recursive: true });
        await fsp.writeFile(p, content);
      }
    }
  });
}

/** Every regular file under the mounted snapshot, path → content. */
async function readTree(mounts: Awaited<ReturnType<Snapshotter['mounts']>>): Promise<Record<string, string>> {
  return withTempMount(mounts, async (dir) => {
    const out: Record<string, string> = {};
    const visit = async (rel: string) => {
      for (const e of await fsp.readdir(path.join(dir, rel), { withFileTypes: true })) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (r === 'lost+found') continue;
        if (e.isDirectory()) await visit(r);
        else if (e.isFile()) out[r] = await fsp.readFile(path.join(dir, r), 'utf8');
      }
    };
    await visit('');
    return out;
  });
}

async function viewTree(
  sn: Snapshotter,
  name: string,
  key = `view-of-${name}`,
): Promise<Record<string, string>> {
  const m = await sn.view(key, name);
  try {
    return await readTree(m);
  } finally {
    await sn.remove(key);
  }
}

/** prepare + write + commit, the way unpack builds a layer. */
async function layer(
  sn: Snapshotter,
  name: string,
  parent: string | undefined,
  files: Record<string, string | null>,
): Promise<void> {
  const key = `extract-${name}`;
  await sn.prepare(key, parent);
  await writeIn(sn, key, files);
  await sn.commit(name, key);
}

async function names(sn: Snapshotter): Promise<string[]> {
  const out: string[] = [];
  await sn.walk((i) => {
    out.push(i.name);
  });
  return out.sort();
}

const crashAt = (sn: Failpointable, point: Failpoint) => {
  sn.failpoint = (p) => {
    if (p === point) throw new SimulatedCrash(p);
  };
};

export function snapshotterSuite(
  test: TestFn,
  backend: string,
  factory: SuiteFactory,
  opts: SuiteOptions = {},
) {
  const define = opts.serial ? test.serial : test;
  const check = (title: string, body: (t: ExecutionContext, fx: SuiteFixture) => Promise<void>) => {
    define(`${backend}: ${title}`, async (t) => {
      if (!needPrivileges(t, { root: true, paths: opts.paths ?? [] })) return;
      const fx = await factory(t);
      t.teardown(() => fx.cleanup());
      await body(t, fx);
    });
  };

  check(
    'prepare without a parent gives an empty writable active snapshot',
    async (t, { snapshotter: sn }) => {
      const mounts = await sn.prepare('a', undefined, { purpose: 'test' });
      t.true(mounts.length > 0);
      const info = await sn.stat('a');
      t.is(info.kind, 'active');
      t.is(info.parent, undefined);
      t.deepEqual(info.labels, { purpose: 'test' });
      t.deepEqual(await readTree(await sn.mounts('a')), {});
      await writeIn(sn, 'a', { 'hello.txt': 'hi' });
      t.deepEqual(await readTree(await sn.mounts('a')), { 'hello.txt': 'hi' });
    },
  );

  check('prepare and view refuse an existing key with Conflict', async (t, { snapshotter: sn }) => {
    await sn.prepare('a');
    await t.throwsAsync(sn.prepare('a'), { code: 'Conflict' } as never);
    await layer(sn, 'base', undefined, {});
    await t.throwsAsync(sn.prepare('base'), { code: 'Conflict' } as never);
    await t.throwsAsync(sn.view('base', 'base'), { code: 'Conflict' } as never);
    await t.throwsAsync(sn.view('a', 'base'), { code: 'Conflict' } as never);
  });

  check('a missing or uncommitted parent is NotFound', async (t, { snapshotter: sn }) => {
    await t.throwsAsync(sn.prepare('a', 'nope'), { code: 'NotFound' } as never);
    await sn.prepare('active-parent');
    await t.throwsAsync(sn.prepare('b', 'active-parent'), { code: 'NotFound' } as never);
    await t.throwsAsync(sn.view('v', 'active-parent'), { code: 'NotFound' } as never);
    t.deepEqual(await names(sn), ['active-parent']);
  });

  check(
    'commit turns the key into a committed name with its parent and labels',
    async (t, { snapshotter: sn }) => {
      await layer(sn, 'base', undefined, { 'a.txt': 'A' });
      await sn.prepare('k', 'base', { stage: 'extract' });
      await sn.commit('top', 'k', { 'containerd.io/snapshot.ref': 'top' });
      await t.throwsAsync(sn.stat('k'), { code: 'NotFound' } as never);
      const info = await sn.stat('top');
      t.is(info.kind, 'committed');
      t.is(info.parent, 'base');
      t.deepEqual(info.labels, { 'containerd.io/snapshot.ref': 'top' });
      t.deepEqual(await names(sn), ['base', 'top']);
    },
  );

  check(
    'commit errors: missing key, a view, a committed name, a taken name',
    async (t, { snapshotter: sn }) => {
      await t.throwsAsync(sn.commit('x', 'missing'), { code: 'NotFound' } as never);
      await layer(sn, 'base', undefined, {});
      await sn.view('v', 'base');
      await t.throwsAsync(sn.commit('x', 'v'), { code: 'InvalidInput' } as never);
      await t.throwsAsync(sn.commit('x', 'base'), { code: 'InvalidInput' } as never);
      await sn.prepare('k', 'base');
      await t.throwsAsync(sn.commit('base', 'k'), { code: 'Conflict' } as never);
      t.is((await sn.stat('k')).kind, 'active');
      await sn.commit('x', 'k');
      t.is((await sn.stat('x')).kind, 'committed');
    },
  );

  check(
    'mounts: NotFound for a missing key, refused for a committed snapshot',
    async (t, { snapshotter: sn }) => {
      await t.throwsAsync(sn.mounts('missing'), { code: 'NotFound' } as never);
      await layer(sn, 'base', undefined, {});
      await t.throwsAsync(sn.mounts('base'), { code: 'InvalidInput' } as never);
      await sn.prepare('k', 'base');
      t.true((await sn.mounts('k')).length > 0);
    },
  );

  check('files of a committed parent are visible in its child', async (t, { snapshotter: sn }) => {
    await layer(sn, 'base', undefined, { 'etc/os-release': 'berth', 'bin/sh': 'sh' });
    await sn.prepare('c', 'base');
    t.deepEqual(await readTree(await sn.mounts('c')), { 'etc/os-release': 'berth', 'bin/sh': 'sh' });
  });

  check('siblings are isolated from each other and from their parent', async (t, { snapshotter: sn }) => {
    await layer(sn, 'base', undefined, { 'shared.txt': 'base' });
    await sn.prepare('left', 'base');
    await sn.prepare('right', 'base');
    await writeIn(sn, 'left', { 'left.txt': 'L', 'shared.txt': 'changed by left' });
    await writeIn(sn, 'right', { 'shared.txt': null });
    t.deepEqual(await readTree(await sn.mounts('left')), {
      'left.txt': 'L',
      'shared.txt': 'changed by left',
    });
    t.deepEqual(await readTree(await sn.mounts('right')), {});
    t.deepEqual(await viewTree(sn, 'base'), { 'shared.txt': 'base' });
  });

  check(
    'a committed snapshot never changes when children write or delete',
    async (t, { snapshotter: sn }) => {
      await layer(sn, 'base', undefined, { 'a.txt': 'A', 'dir/b.txt': 'B' });
      await layer(sn, 'mid', 'base', { 'a.txt': 'A2', 'dir/b.txt': null, 'c.txt': 'C' });
      t.deepEqual(await viewTree(sn, 'base'), { 'a.txt': 'A', 'dir/b.txt': 'B' });
      t.deepEqual(await viewTree(sn, 'mid'), { 'a.txt': 'A2', 'c.txt': 'C' });
      const usageBefore = await sn.usage('base');
      await sn.prepare('top', 'mid');
      await writeIn(sn, 'top', { 'a.txt': null, 'c.txt': 'C3' });
      t.deepEqual(await viewTree(sn, 'mid'), { 'a.txt': 'A2', 'c.txt': 'C' });
      t.deepEqual(await sn.usage('base'), usageBefore);
    },
  );

  check('a view is read-only', async (t, { snapshotter: sn }) => {
    await layer(sn, 'base', undefined, { 'a.txt': 'A' });
    await layer(sn, 'l2', 'base', { 'b.txt': 'B' });
    for (const parent of ['base', 'l2']) {
      const key = `v-${parent}`;
      const mounts = await sn.view(key, parent);
      t.is((await sn.stat(key)).kind, 'view');
      const err = await withTempMount(mounts, async (dir) => {
        try {
          await fsp.writeFile(path.join(dir, 'new.txt'), 'x');
          return undefined;
        } catch (e) {
          return (e as NodeJS.ErrnoException).code;
        }
      });
      t.is(err, 'EROFS', `view of ${parent}`);
    }
    t.deepEqual(await viewTree(sn, 'l2'), { 'a.txt': 'A', 'b.txt': 'B' });
  });

  check('a chain of 12 layers merges in order, deletions included', async (t, { snapshotter: sn }) => {
    let parent: string | undefined;
    const expected: Record<string, string> = {};
    for (let i = 0; i < 12; i++) {
      const files: Record<string, string | null> = { [`layer${i}.txt`]: String(i), 'top.txt': `top ${i}` };
      if (i > 0) files[`layer${i - 1}.txt`] = i % 2 === 0 ? null : `rewritten in ${i}`;
      await layer(sn, `l${i}`, parent, files);
      for (const [k, v] of Object.entries(files)) {
        if (v === null) delete expected[k];
        else expected[k] = v;
      }
      parent = `l${i}`;
    }
    t.is((await sn.stat('l11')).parent, 'l10');
    t.deepEqual(await viewTree(sn, 'l11'), expected);
    await sn.prepare('container', 'l11');
    t.deepEqual(await readTree(await sn.mounts('container')), expected);
  });

  check('remove is refused with Conflict while children exist', async (t, { snapshotter: sn }) => {
    await layer(sn, 'base', undefined, { 'a.txt': 'A' });
    await layer(sn, 'child', 'base', {});
    await sn.view('v', 'child');
    await t.throwsAsync(sn.remove('base'), { code: 'Conflict' } as never);
    await t.throwsAsync(sn.remove('child'), { code: 'Conflict' } as never);
    await sn.remove('v');
    await sn.remove('child');
    await sn.remove('base');
    t.deepEqual(await names(sn), []);
  });

  check(
    'remove: NotFound when missing; a removed key can be prepared again',
    async (t, { snapshotter: sn }) => {
      await t.throwsAsync(sn.remove('missing'), { code: 'NotFound' } as never);
      await sn.prepare('k');
      await writeIn(sn, 'k', { 'old.txt': 'old' });
      await sn.remove('k');
      await t.throwsAsync(sn.stat('k'), { code: 'NotFound' } as never);
      await sn.prepare('k');
      t.deepEqual(await readTree(await sn.mounts('k')), {});
    },
  );

  check(
    'usage counts a snapshot’s own bytes and inodes, not its parent’s',
    async (t, { snapshotter: sn }) => {
      const big = 'x'.repeat(1024 * 1024);
      await layer(sn, 'base', undefined, { 'big.bin': big });
      const base = await sn.usage('base');
      t.true(base.size >= 1024 * 1024, `base size ${base.size}`);
      t.true(base.inodes >= 1);
      await sn.prepare('k', 'base');
      const empty = await sn.usage('k');
      t.true(empty.size < 512 * 1024, `fresh child size ${empty.size}`);
      await writeIn(sn, 'k', { 'a.bin': big, 'b.bin': big });
      const grown = await sn.usage('k');
      t.true(grown.size >= 2 * 1024 * 1024, `child size ${grown.size}`);
      t.true(grown.inodes >= empty.inodes + 2);
      await t.throwsAsync(sn.usage('missing'), { code: 'NotFound' } as never);
    },
  );

  check('walk and stat report every snapshot with kind and parent', async (t, { snapshotter: sn }) => {
    await layer(sn, 'base', undefined, {});
    await sn.prepare('active', 'base');
    await sn.view('view', 'base');
    const seen: Record<string, [string, string | undefined]> = {};
    await sn.walk((i) => {
      seen[i.name] = [i.kind, i.parent];
    });
    t.deepEqual(seen, {
      base: ['committed', undefined],
      active: ['active', 'base'],
      view: ['view', 'base'],
    });
    await t.throwsAsync(sn.stat('missing'), { code: 'NotFound' } as never);
    const st = await sn.stat('active');
    t.true(st.createdAt > 0 && st.updatedAt >= st.createdAt);
  });

  check('status reports the driver and the filesystem capacity', async (t, { snapshotter: sn }) => {
    const s = await sn.status();
    t.is(s.driver, sn.driver);
    t.true(s.capacityBytes > 0);
    t.true(s.availableBytes <= s.capacityBytes);
  });

  check('an interrupted prepare is undone by recover()', async (t, fx) => {
    await layer(fx.snapshotter, 'base', undefined, { 'a.txt': 'A' });
    for (const point of ['prepare:after-intent', 'prepare:after-act'] as const) {
      crashAt(fx.snapshotter, point);
      await t.throwsAsync(fx.snapshotter.prepare(`k-${point}`, 'base'), { instanceOf: SimulatedCrash });
      fx.snapshotter.failpoint = undefined;
    }
    const sn = await fx.reopen();
    await sn.recover();
    t.deepEqual(await names(sn), ['base']);
    await sn.prepare('k-prepare:after-act', 'base');
    t.deepEqual(await readTree(await sn.mounts('k-prepare:after-act')), { 'a.txt': 'A' });
    await sn.remove('k-prepare:after-act');
    await sn.remove('base');
  });

  check('an interrupted commit is finished by recover()', async (t, fx) => {
    await layer(fx.snapshotter, 'base', undefined, { 'a.txt': 'A' });
    for (const point of ['commit:after-intent', 'commit:after-act'] as const) {
      const key = `k-${point}`;
      await fx.snapshotter.prepare(key, 'base');
      await writeIn(fx.snapshotter, key, { [`${point}.txt`]: point });
      crashAt(fx.snapshotter, point);
      await t.throwsAsync(fx.snapshotter.commit(`done-${point}`, key), { instanceOf: SimulatedCrash });
      fx.snapshotter.failpoint = undefined;
    }
    const sn = await fx.reopen();
    await sn.recover();
    for (const point of ['commit:after-intent', 'commit:after-act']) {
      t.is((await sn.stat(`done-${point}`)).kind, 'committed');
      await t.throwsAsync(sn.stat(`k-${point}`), { code: 'NotFound' } as never);
      t.deepEqual(await viewTree(sn, `done-${point}`), { 'a.txt': 'A', [`${point}.txt`]: point });
    }
  });

  check('an interrupted remove is finished by recover()', async (t, fx) => {
    await layer(fx.snapshotter, 'base', undefined, { 'a.txt': 'A' });
    await fx.snapshotter.prepare('k1', 'base');
    await fx.snapshotter.prepare('k2', 'base');
    crashAt(fx.snapshotter, 'remove:after-intent');
    await t.throwsAsync(fx.snapshotter.remove('k1'), { instanceOf: SimulatedCrash });
    crashAt(fx.snapshotter, 'remove:after-act');
    await t.throwsAsync(fx.snapshotter.remove('k2'), { instanceOf: SimulatedCrash });
    const sn = await fx.reopen();
    await sn.recover();
    t.deepEqual(await names(sn), ['base']);
    await sn.remove('base');
    t.deepEqual(await names(sn), []);
  });

  check('recover() on a clean state changes nothing and is idempotent', async (t, fx) => {
    await layer(fx.snapshotter, 'base', undefined, { 'a.txt': 'A' });
    await fx.snapshotter.prepare('k', 'base');
    const sn = await fx.reopen();
    await sn.recover();
    await sn.recover();
    t.deepEqual(await names(sn), ['base', 'k']);
    t.deepEqual(await readTree(await sn.mounts('k')), { 'a.txt': 'A' });
  });

  check('keys and names are validated, labels must be strings', async (t, { snapshotter: sn }) => {
    await t.throwsAsync(sn.prepare(''), { code: 'InvalidInput' } as never);
    await t.throwsAsync(sn.prepare('bad\nkey'), { code: 'InvalidInput' } as never);
    await t.throwsAsync(sn.prepare('k', undefined, { n: 1 as unknown as string }), {
      code: 'InvalidInput',
    } as never);
    // a key that looks like a path is just a name: it never becomes one
    await sn.prepare('../../etc');
    t.is((await sn.stat('../../etc')).kind, 'active');
  });
}
