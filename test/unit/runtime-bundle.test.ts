import test from 'ava';
import {
  type AppSpec,
  type BundleInput,
  buildBundleConfig,
  DEFAULT_CAPABILITIES,
  mergeEnv,
  normalizeSignal,
  resolveCapabilities,
} from '../../src/runtime/bundle.js';
import { renderDefaultSeccomp } from '../../src/runtime/seccomp-default.js';
import { resolveUserFromFiles } from '../../src/runtime/users.js';

const PASSWD = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
`;
const GROUP = `root:x:0:
daemon:x:1:
staff:x:50:app,other
video:x:44:app
app:x:1000:
`;

function input(image: BundleInput['image'], app: AppSpec, extra: Partial<BundleInput> = {}): BundleInput {
  return {
    id: 'c0ffee123456789a',
    image,
    arch: 'amd64',
    app,
    user: { uid: 0, gid: 0, additionalGids: [], home: '/root' },
    rootfs: 'rootfs',
    volumesDir: '/state/containers/c0ffee/volumes',
    ...extra,
  };
}

const argsCases: Array<[string, BundleInput['image'], AppSpec, string[]]> = [
  ['image entrypoint + cmd', { Entrypoint: ['/ep'], Cmd: ['a'] }, {}, ['/ep', 'a']],
  ['app command replaces cmd only', { Entrypoint: ['/ep'], Cmd: ['a'] }, { command: ['b'] }, ['/ep', 'b']],
  ['app entrypoint drops image cmd', { Entrypoint: ['/ep'], Cmd: ['a'] }, { entrypoint: ['/x'] }, ['/x']],
  ['app entrypoint + command', { Cmd: ['a'] }, { entrypoint: ['/x'], command: ['y'] }, ['/x', 'y']],
  ['cmd only', { Cmd: ['/bin/sh', '-c', 'true'] }, {}, ['/bin/sh', '-c', 'true']],
];
for (const [name, image, app, want] of argsCases) {
  test(`args: ${name}`, (t) => {
    t.deepEqual(buildBundleConfig(input(image, app)).spec.process.args, want);
  });
}

test('args: nothing to run is an InvalidInput error', (t) => {
  t.throws(() => buildBundleConfig(input({}, {})), { message: /no command/ });
});

test('env: image then app by key, PATH defaulted, HOSTNAME and HOME added', (t) => {
  const { spec } = buildBundleConfig(
    input({ Env: ['A=1', 'B=2'], Cmd: ['x'] }, { env: { B: 'app', C: '3' }, hostname: 'h1' }),
  );
  t.deepEqual(spec.process.env, [
    'A=1',
    'B=app',
    'HOSTNAME=h1',
    'HOME=/root',
    'C=3',
    'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  ]);
  t.deepEqual(mergeEnv(['PATH=/bin'], {}), ['PATH=/bin']);
  t.throws(() => mergeEnv([], { 'A=B': 'x' }));
});

test('user resolution: numeric, name, name:group, uid:gid, supplementary groups', (t) => {
  t.deepEqual(resolveUserFromFiles('', PASSWD, GROUP), { uid: 0, gid: 0, additionalGids: [], home: '/root' });
  t.deepEqual(resolveUserFromFiles('app', PASSWD, GROUP), {
    uid: 1000,
    gid: 1000,
    additionalGids: [50, 44],
    home: '/home/app',
  });
  t.deepEqual(resolveUserFromFiles('app:staff', PASSWD, GROUP), {
    uid: 1000,
    gid: 50,
    additionalGids: [],
    home: '/home/app',
  });
  t.deepEqual(resolveUserFromFiles('4242', PASSWD, GROUP), {
    uid: 4242,
    gid: 0,
    additionalGids: [],
    home: '/',
  });
  t.deepEqual(resolveUserFromFiles('1:44', PASSWD, GROUP).gid, 44);
  t.throws(() => resolveUserFromFiles('nobody-here', PASSWD, GROUP), { message: /unable to find user/ });
  t.throws(() => resolveUserFromFiles('app:nogroup', PASSWD, GROUP), { message: /unable to find group/ });
});

test('resolved user lands in process.user; cwd from app, else image, else /', (t) => {
  const user = resolveUserFromFiles('app', PASSWD, GROUP);
  const a = buildBundleConfig(input({ Cmd: ['x'], WorkingDir: '/srv' }, {}, { user })).spec;
  t.deepEqual(a.process.user, { uid: 1000, gid: 1000, additionalGids: [50, 44] });
  t.is(a.process.cwd, '/srv');
  t.is(
    buildBundleConfig(input({ Cmd: ['x'], WorkingDir: '/srv' }, { workingDir: '/w' })).spec.process.cwd,
    '/w',
  );
  t.is(buildBundleConfig(input({ Cmd: ['x'] }, {})).spec.process.cwd, '/');
  t.throws(() => buildBundleConfig(input({ Cmd: ['x'] }, { workingDir: 'rel' })));
});

test('secure defaults: docker caps, masked/readonly paths, no_new_privs, seccomp, mounts, cgroupsPath', (t) => {
  const { spec, stopSignal } = buildBundleConfig(input({ Cmd: ['x'] }, {}));
  t.deepEqual([...spec.process.capabilities.bounding].sort(), [...DEFAULT_CAPABILITIES].sort());
  t.true(spec.process.noNewPrivileges);
  t.true(spec.linux.maskedPaths!.includes('/proc/kcore'));
  t.true(spec.linux.readonlyPaths!.includes('/proc/sys'));
  t.is(spec.linux.seccomp!.defaultAction, 'SCMP_ACT_ERRNO');
  t.deepEqual(
    spec.mounts.map((m) => m.destination),
    ['/proc', '/dev', '/dev/pts', '/sys', '/sys/fs/cgroup', '/dev/mqueue', '/dev/shm'],
  );
  t.true(spec.mounts.find((m) => m.destination === '/sys')!.options!.includes('ro'));
  t.is(spec.linux.cgroupsPath, '/berth/c0ffee123456789a');
  t.is(stopSignal, 'SIGTERM');
  t.deepEqual(
    spec.linux.namespaces.map((n) => n.type),
    ['pid', 'ipc', 'uts', 'mount', 'network'],
  );
  t.false(spec.root.readonly);
});

test('privileged: all caps, no seccomp, no masking, devices allowed, sysfs rw', (t) => {
  const { spec } = buildBundleConfig(input({ Cmd: ['x'] }, { privileged: true }));
  t.true(spec.process.capabilities.bounding.includes('CAP_SYS_ADMIN'));
  t.is(spec.linux.seccomp, undefined);
  t.is(spec.linux.maskedPaths, undefined);
  t.deepEqual(spec.linux.resources!.devices, [{ allow: true, access: 'rwm' }]);
  t.false(spec.mounts.find((m) => m.destination === '/sys')!.options!.includes('ro'));
  t.false(spec.process.noNewPrivileges);
});

test('capabilities: add/drop/ALL arithmetic', (t) => {
  t.deepEqual(resolveCapabilities({ capDrop: ['ALL'], capAdd: ['net_admin'] }), ['CAP_NET_ADMIN']);
  const dropped = resolveCapabilities({ capDrop: ['NET_RAW', 'cap_chown'] });
  t.false(dropped.includes('CAP_NET_RAW'));
  t.false(dropped.includes('CAP_CHOWN'));
  t.true(dropped.includes('CAP_KILL'));
  t.true(resolveCapabilities({ capAdd: ['ALL'], capDrop: ['SYS_ADMIN'] }).includes('CAP_SYS_MODULE'));
  t.false(resolveCapabilities({ capAdd: ['ALL'], capDrop: ['SYS_ADMIN'] }).includes('CAP_SYS_ADMIN'));
  t.throws(() => resolveCapabilities({ capAdd: ['FLY'] }), { message: /unknown capability/ });
});

test('seccomp gates follow capabilities and arch', (t) => {
  const names = (caps: string[], arch: string) =>
    renderDefaultSeccomp(new Set(caps), arch)
      .syscalls.filter((s) => s.action === 'SCMP_ACT_ALLOW')
      .flatMap((s) => s.names);
  t.false(names([], 'amd64').includes('mount'));
  t.true(names(['CAP_SYS_ADMIN'], 'amd64').includes('mount'));
  t.true(names([], 'amd64').includes('arch_prctl'));
  t.false(names([], 'arm64').includes('arch_prctl'));
  const clone3 = renderDefaultSeccomp(new Set(), 'amd64').syscalls.find((s) => s.names.includes('clone3'));
  t.is(clone3?.errnoRet, 38);
  t.deepEqual(renderDefaultSeccomp(new Set(), 'arm64').architectures, ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
});

test('resources, network modes, read-only rootfs, devices, labels, stop signal', (t) => {
  const { spec, stopSignal } = buildBundleConfig(
    input(
      { Cmd: ['x'], StopSignal: 'SIGQUIT', Labels: { a: '1' } },
      {
        resources: { memoryBytes: 64 * 1024 * 1024, cpus: 0.5, pidsLimit: 20 },
        network: 'bridge',
        readOnlyRootfs: true,
        devices: [{ path: '/dev/fuse', type: 'c', major: 10, minor: 229, fileMode: 0o666 }],
        labels: { b: '2' },
      },
      { netnsPath: '/run/netns/berth-x' },
    ),
  );
  t.is(stopSignal, 'SIGQUIT');
  t.deepEqual(spec.linux.resources!.memory, { limit: 67108864, swap: 67108864 });
  t.deepEqual(spec.linux.resources!.cpu, { period: 100000, quota: 50000 });
  t.deepEqual(spec.linux.resources!.pids, { limit: 20 });
  t.deepEqual(spec.linux.namespaces.at(-1), { type: 'network', path: '/run/netns/berth-x' });
  t.true(spec.root.readonly);
  t.is(spec.linux.devices![0]!.path, '/dev/fuse');
  t.true(spec.linux.resources!.devices!.some((d) => d.major === 10 && d.minor === 229 && d.allow));
  t.is(spec.annotations!.a, '1');
  t.is(spec.annotations!.b, '2');
  const host = buildBundleConfig(input({ Cmd: ['x'] }, { network: 'host', stopSignal: '9' })).spec;
  t.false(host.linux.namespaces.some((n) => n.type === 'network'));
  t.is(buildBundleConfig(input({ Cmd: ['x'] }, { stopSignal: 'hup' })).stopSignal, 'SIGHUP');
  t.throws(() => buildBundleConfig(input({ Cmd: ['x'] }, { network: 'bridge' })), { message: /namespace/ });
  t.throws(() => buildBundleConfig(input({ Cmd: ['x'] }, { resources: { memoryBytes: 1024 } })));
  t.throws(() => normalizeSignal('SIGNOPE'));
});

test('volumes: binds (ro), image volumes become anonymous unless bound', (t) => {
  const { spec, anonymousVolumes } = buildBundleConfig(
    input(
      { Cmd: ['x'], Volumes: { '/data': {}, '/cache': {} } },
      { volumes: [{ source: '/host/data', target: '/data', readOnly: true }] },
    ),
  );
  t.deepEqual(anonymousVolumes, [{ source: '/state/containers/c0ffee/volumes/cache', target: '/cache' }]);
  const data = spec.mounts.find((m) => m.destination === '/data')!;
  t.deepEqual(data, {
    destination: '/data',
    type: 'bind',
    source: '/host/data',
    options: ['rbind', 'rprivate', 'ro'],
  });
  t.throws(() => buildBundleConfig(input({ Cmd: ['x'] }, { volumes: [{ source: 'rel', target: '/x' }] })));
});
