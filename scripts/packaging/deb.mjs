// One .deb per arch with dpkg-deb: the executable, the systemd unit, the default config (a conffile) and
// maintainer scripts that create /var/lib/berth.
import { chmodSync, copyFileSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { ROOT, run } from './common.mjs';

/** What the addon and the Node binary need at run time (measured with objdump -T; see packaging/README.md). */
function depends(def) {
  const deps = ['libc6 (>= 2.34)', 'libstdc++6 (>= 12)', 'libgcc-s1'];
  if (def.arch === 'armv7') deps.push('libatomic1');
  return deps.join(', ');
}

/**
 * @param {import('./common.mjs').ArchDef} def
 * @param {{ exe: string, version: string, work: string, outDir: string }} o
 * @returns {Promise<string>} the .deb path
 */
export async function buildDeb(def, { exe, version, work, outDir }) {
  const root = path.join(work, 'deb-root');
  rmSync(root, { recursive: true, force: true });
  const pk = path.join(ROOT, 'packaging');
  const put = (src, dest, mode) => {
    const to = path.join(root, dest);
    mkdirSync(path.dirname(to), { recursive: true });
    copyFileSync(src, to);
    chmodSync(to, mode);
  };
  put(exe, 'usr/bin/berth', 0o755);
  put(path.join(pk, 'berth.service'), 'lib/systemd/system/berth.service', 0o644);
  put(path.join(pk, 'config.yaml'), 'etc/berth/config.yaml', 0o644);
  put(path.join(pk, 'README.md'), 'usr/share/doc/berth/README.md', 0o644);
  put(path.join(pk, 'check-device.sh'), 'usr/share/berth/check-device.sh', 0o755);
  for (const script of ['postinst', 'prerm', 'postrm']) put(path.join(pk, script), `DEBIAN/${script}`, 0o755);
  const installedKiB = Math.ceil(statSync(exe).size / 1024) + 16;
  const control = [
    'Package: berth',
    `Version: ${version}`,
    `Architecture: ${def.debArch}`,
    'Maintainer: berth maintainers <berth@localhost>',
    `Installed-Size: ${installedKiB}`,
    `Depends: ${depends(def)}`,
    'Section: admin',
    'Priority: optional',
    'Homepage: https://github.com/berth-project/berth',
    'Description: edge device agent: OCI images over MQTT, its own container runtime',
    ' One self-contained executable (Node.js, SQLite and the native runtime embedded): pulls images over',
    ' MQTT, stores layers on btrfs, devicemapper thin pools or overlayfs, and runs containers.',
    '',
  ].join('\n');
  writeFileSync(path.join(root, 'DEBIAN', 'control'), control);
  writeFileSync(path.join(root, 'DEBIAN', 'conffiles'), '/etc/berth/config.yaml\n');
  mkdirSync(outDir, { recursive: true });
  const deb = path.join(outDir, `berth_${version}_${def.debArch}.deb`);
  await run('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z6', '--build', root, deb]);
  rmSync(root, { recursive: true, force: true });
  return deb;
}
