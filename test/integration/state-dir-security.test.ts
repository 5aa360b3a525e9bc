/**
 * Issue 15, item 3: device nodes in image layers must not be reachable by unprivileged host users.
 *
 * An image whose top layer carries a character device node (`/devnode/zero`, c 1 5, mode 0666: anyone who
 * can open it reads zeros, so an open that works is plain to see) runs under a real `berth agent`
 * (fleet, Mosquitto, berth-runtime all real), with overlay snapshots and with btrfs ones on a loop
 * filesystem. The state dir sits where every parent is traversable (as /var/lib is), and it starts out with
 * the loose modes an older berth left (0755 dirs). Then:
 *   - a fresh unprivileged uid cannot read the node through the container's rootfs, through the layer's
 *     own directory, nor read the database or list the state dir (and the same uid *can* read a node
 *     that is left open, so the check is able to see an exposure);
 *   - the host-side rootfs mount is nodev: even root cannot open the node through it;
 *   - the state dir is 0710, the dirs berth keeps in it 0700, the database 0600, the socket 0660;
 *   - the container runs and its own /dev works (/dev/zero, /dev/null);
 *   - a state dir and a rootfs mount loosened again (as an older berth made them) are locked down by the
 *     next agent start.
 */
import { randomInt } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { exec } from '../../src/lib/exec.js';
import { parseMountinfo } from '../../src/lib/mountinfo.js';
import { cli, type Device, makeDevice, startFleetStack } from '../helpers/agent-process.js';
import { waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';
import { makeLoopFs } from '../helpers/storage-loop.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** The sample image plus a layer holding /devnode/zero (c 1 5, 0666), as an OCI layout tagged `dev`. */
let image: Promise<{ dir: string; layout: string }> | undefined;
function deviceNodeImage() {
  image ??= (async () => {
    const dir = await fsp.mkdtemp(path.join(tmpdir(), 'berth-devnode-img-'));
    const all = path.join(dir, 'all');
    await exec('bash', [path.join(ROOT, 'scripts/sample-image.sh'), all, 'dev', 'hello dev']);
    const bundle = path.join(dir, 'bundle');
    await exec('umoci', ['unpack', '--image', `${all}:dev`, bundle]);
    await fsp.mkdir(path.join(bundle, 'rootfs', 'devnode'), { mode: 0o755 });
    const node = path.join(bundle, 'rootfs', 'devnode', 'zero');
    await exec('mknod', ['-m', '0666', node, 'c', '1', '5']);
    await exec('umoci', ['repack', '--image', `${all}:dev`, bundle]);
    const layout = path.join(dir, 'dev');
    await exec('skopeo', ['--insecure-policy', 'copy', '-q', `oci:${all}:dev`, `oci:${layout}:dev`]);
    return { dir, layout };
  })();
  return image;
}
test.after.always(async () => {
  if (image) await fsp.rm((await image).dir, { recursive: true, force: true });
});

/** Run argv as `uid` (no supplementary groups, no capabilities). */
function asUser(uid: number, argv: string[]) {
  return exec(
    'setpriv',
    [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--inh-caps=-all', '--', ...argv],
    {
      allowFailure: true,
    },
  );
}

const mode = async (p: string) => (await fsp.lstat(p)).mode & 0o7777;

async function findDeviceNodes(dir: string): Promise<string[]> {
  const r = await exec('find', [dir, '-path', '*/devnode/zero', '-type', 'c'], {
    allowFailure: true,
  });
  return r.stdout.split('\n').filter(Boolean);
}

function mountOptions(point: string): string[] | undefined {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).find((m) => m.point === point)?.options;
}

async function lockedDown(t: ExecutionContext, dev: Device, driver: 'overlay' | 'btrfs') {
  const [c] = dev.db.containers();
  t.truthy(c, 'a container');
  const rootfs = path.join(dev.stateDir, 'containers', c!.id, 'rootfs');
  const inRootfs = path.join(rootfs, 'devnode', 'zero');
  t.true((await fsp.lstat(inRootfs)).isCharacterDevice(), 'the node is in the rootfs');
  const inLayers = await findDeviceNodes(path.join(dev.stateDir, 'snapshots', driver));
  t.true(inLayers.length >= 1, 'and in the layer store');

  // A user of its own: a uid no one else has, no groups.
  const uid = 40_000 + randomInt(20_000);
  for (const p of [inRootfs, ...inLayers, path.join(dev.stateDir, 'berth.db')]) {
    const r = await asUser(uid, ['head', '-c', '4', p]);
    t.not(r.code, 0, `uid ${uid} read ${p}`);
    t.is(r.stdout, '');
    t.regex(r.stderr, /Permission denied/);
  }
  t.not((await asUser(uid, ['ls', dev.stateDir])).code, 0, 'the state dir cannot be listed');

  // nodev on the host-side mount: root itself cannot open the node through it
  t.true(mountOptions(rootfs)?.includes('nodev'), `rootfs mount options ${mountOptions(rootfs)}`);
  await t.throwsAsync(fsp.readFile(inRootfs, { flag: 'r' }), { code: 'EACCES' });

  // modes
  t.is(await mode(dev.stateDir), 0o710);
  for (const d of ['content', 'snapshots', 'containers', 'volumes', 'runtime'])
    t.is(await mode(path.join(dev.stateDir, d)), 0o700, d);
  t.is(await mode(path.join(dev.stateDir, 'berth.db')), 0o600);
  t.is(await mode(path.join(dev.stateDir, 'berth.sock')), 0o660);

  // the container runs, its own /dev works; the image's node does not open inside either
  const inside = await cli(dev.stateDir, [
    'exec',
    c!.name,
    'sh',
    '-c',
    'head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; head -c 1 /devnode/zero; echo rc=$?',
  ]);
  t.regex(inside.stdout, /^\s*4\s*\nnull-ok\n/);
  t.regex(inside.stdout, /rc=1/);
  return { rootfs };
}

async function run(t: ExecutionContext, driver: 'overlay' | 'btrfs') {
  if (!needPrivileges(t)) return;
  t.timeout(240_000);
  const { layout } = await deviceNodeImage();
  const stack = await startFleetStack(t, { layouts: { dev: layout } });

  let stateDir: string | undefined;
  let after: (() => Promise<void>) | undefined;
  if (driver === 'btrfs') {
    const loop = await makeLoopFs({ fs: 'btrfs', sizeMiB: 256 });
    stateDir = path.join(loop.mountpoint, 'state');
    after = () => loop.cleanup();
  }
  const dev = await makeDevice(t, {
    name: `sec-${driver}`,
    fleetKeyFile: stack.fleet.publicKeyFile,
    ...(stateDir ? { stateDir } : {}),
    ...(after ? { after } : {}),
  });
  // Every parent traversable, as /var/lib is; the state dir as an older berth left it.
  for (let d = path.dirname(dev.stateDir); d !== '/' && d !== tmpdir(); d = path.dirname(d))
    await fsp.chmod(d, 0o755);
  await fsp.chmod(dev.stateDir, 0o755);
  for (const d of ['containers', 'snapshots', 'volumes'])
    await fsp.mkdir(path.join(dev.stateDir, d), { mode: 0o755 });

  await dev.agent.start(stack.mosquitto.url);
  await stack.deploy(dev.id, 'dev');
  await waitFor(() => dev.db.running('sample:dev') !== undefined, 90_000, 'sample:dev running').catch(
    (err) => {
      t.log(dev.agent.logTail());
      throw err;
    },
  );
  const { rootfs } = await lockedDown(t, dev, driver);

  // The control: the same uid reads a node that is left open, so the refusals above are the dirs and
  // mounts at work, not a user that can read nothing.
  const open = await fsp.mkdtemp(path.join(tmpdir(), 'berth-open-'));
  t.teardown(() => fsp.rm(open, { recursive: true, force: true }));
  await fsp.chmod(open, 0o755);
  await exec('mknod', ['-m', '0666', path.join(open, 'zero'), 'c', '1', '5']);
  const control = await asUser(50_000, ['sh', '-c', `head -c 4 ${path.join(open, 'zero')} | wc -c`]);
  t.is(control.stdout.trim(), '4', control.stderr);

  // Loosen everything again, as an older berth made it, and restart the agent: locked down again.
  await dev.agent.stop();
  await exec('mount', ['-o', 'remount,bind,dev', rootfs]);
  t.false(mountOptions(rootfs)?.includes('nodev'), 'the rootfs mount lost nodev');
  for (const d of ['', 'containers', 'snapshots', 'content'])
    await fsp.chmod(path.join(dev.stateDir, d), 0o755);
  await fsp.chmod(path.join(dev.stateDir, 'berth.db'), 0o644);
  await dev.agent.start(stack.mosquitto.url);
  await lockedDown(t, dev, driver);
  t.true(
    dev.agent.logLines().some((l) => l.msg === 'container rootfs mounts remounted nodev'),
    'the agent said it remounted',
  );
}

test.serial(
  'overlay: a device node in a layer is out of reach of other host users; the container still runs',
  (t) => run(t, 'overlay'),
);

test.serial(
  'btrfs: a device node in a layer is out of reach of other host users; the container still runs',
  (t) => run(t, 'btrfs'),
);
