import test from 'ava';
import {
  composeToApp,
  loadTargetText,
  parseBytes,
  parseDuration,
  splitCommand,
} from '../../src/core/compose.js';
import { containerName, parseTarget, specHash, targetImages } from '../../src/core/target.js';

test('a minimal target gets secure, documented defaults', (t) => {
  const target = parseTarget({ version: 3, apps: { web: { services: { api: { image: 'api:1' } } } } });
  const api = target.apps.web!.services.api!;
  t.is(api.networkMode, 'bridge');
  t.deepEqual(api.restart, { policy: 'always', maxRetries: 0 });
  t.is(api.update.strategy, 'download-then-kill');
  t.false(api.update.overrideLock);
  t.false(api.privileged);
  t.deepEqual(api.dependsOn, {});
  t.is(api.healthcheck, undefined);
});

test('target validation names the failing field', (t) => {
  const err = t.throws(() =>
    parseTarget({ version: 1, apps: { web: { services: { api: { image: 'x', bogus: 1 } } } } }),
  );
  t.regex(err!.message, /apps\.web\.services\.api/);
  t.regex(err!.message, /bogus/);
  const bad = t.throws(() => parseTarget({ version: 1, apps: { '../etc': { services: {} } } }));
  t.regex(bad!.message, /\.\.\/etc|apps/);
});

test('target validation checks volumes, networks and depends_on references and cycles', (t) => {
  const undeclared = t.throws(() =>
    parseTarget({
      version: 1,
      apps: {
        a: { services: { s: { image: 'x', volumes: [{ type: 'volume', source: 'data', target: '/d' }] } } },
      },
    }),
  );
  t.regex(undeclared!.message, /volume "data" is not declared/);
  const net = t.throws(() =>
    parseTarget({ version: 1, apps: { a: { services: { s: { image: 'x', networks: ['back'] } } } } }),
  );
  t.regex(net!.message, /network "back" is not declared/);
  const dep = t.throws(() =>
    parseTarget({ version: 1, apps: { a: { services: { s: { image: 'x', dependsOn: ['db'] } } } } }),
  );
  t.regex(dep!.message, /unknown service "db"/);
  const cycle = t.throws(() =>
    parseTarget({
      version: 1,
      apps: {
        a: {
          services: {
            x: { image: 'i', dependsOn: ['y'] },
            y: { image: 'i', dependsOn: { z: 'healthy' } },
            z: { image: 'i', dependsOn: ['x'] },
          },
        },
      },
    }),
  );
  t.regex(cycle!.message, /dependency cycle: x -> y -> z -> x/);
});

test('specHash ignores key order and the update policy but not the runtime spec', (t) => {
  const a = parseTarget({
    version: 1,
    apps: { a: { services: { s: { image: 'i', env: { A: '1', B: '2' } } } } },
  });
  const b = parseTarget({
    version: 2,
    apps: {
      a: { services: { s: { env: { B: '2', A: '1' }, image: 'i', update: { strategy: 'hand-over' } } } },
    },
  });
  const c = parseTarget({
    version: 3,
    apps: { a: { services: { s: { image: 'i', env: { A: '1', B: '3' } } } } },
  });
  const h = (x: typeof a) => specHash(x.apps.a!.services.s!);
  t.is(h(a), h(b));
  t.not(h(a), h(c));
  t.regex(containerName('a', 's', h(a)), /^a_s_[0-9a-f]{12}$/);
  t.deepEqual(targetImages(a), ['i']);
});

const COMPOSE = `
name: shop
x-common: &common
  restart: on-failure:5
services:
  web:
    <<: *common
    image: registry.local/web@sha256:${'a'.repeat(64)}
    command: sh -c "echo 'hi there' && sleep 1"
    entrypoint: ["/init"]
    environment:
      - MODE=prod
      - EMPTY=
    ports: ["8080:80", "127.0.0.1:53:53/udp", "9000-9001:9000-9001"]
    volumes:
      - data:/var/lib/web:ro
      - /dev/log:/dev/log
      - { type: tmpfs, target: /tmp }
    depends_on:
      db: { condition: service_healthy }
    mem_limit: 256m
    cpus: 0.5
    pids_limit: 64
    healthcheck:
      test: ["CMD", "wget", "-q", "http://localhost/"]
      interval: 10s
      timeout: 1m30s
      retries: 5
      start_period: 500ms
    labels:
      berth.update.strategy: hand-over
      berth.update.handover-timeout: 2m
      berth.update.override-lock: "true"
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    devices: ["/dev/ttyUSB0:/dev/ttyS0:rw"]
    read_only: true
    privileged: false
    networks: [back]
  db:
    image: db:15
    deploy: { resources: { limits: { memory: 1g, pids: 100 } } }
    healthcheck: { test: "pg_isready" }
    network_mode: bridge
    networks: { back: }
volumes:
  data: {}
networks:
  back: { internal: true }
`;

test('compose converts every supported field', (t) => {
  const app = composeToApp(COMPOSE);
  const web = app.services.web!;
  t.deepEqual(web.command, ['sh', '-c', "echo 'hi there' && sleep 1"]);
  t.deepEqual(web.entrypoint, ['/init']);
  t.deepEqual(web.env, { MODE: 'prod', EMPTY: '' });
  t.deepEqual(web.ports, [
    { containerPort: 80, hostPort: 8080, protocol: 'tcp' },
    { containerPort: 53, hostPort: 53, hostIp: '127.0.0.1', protocol: 'udp' },
    { containerPort: 9000, hostPort: 9000, protocol: 'tcp' },
    { containerPort: 9001, hostPort: 9001, protocol: 'tcp' },
  ]);
  t.deepEqual(web.volumes, [
    { type: 'volume', source: 'data', target: '/var/lib/web', readOnly: true },
    { type: 'bind', source: '/dev/log', target: '/dev/log', readOnly: false },
    { type: 'tmpfs', target: '/tmp', readOnly: false },
  ]);
  t.deepEqual(web.dependsOn, { db: 'healthy' });
  t.deepEqual(web.resources, { memoryBytes: 256 * 1024 ** 2, cpus: 0.5, pids: 64 });
  t.deepEqual(web.restart, { policy: 'on-failure', maxRetries: 5 });
  t.deepEqual(web.healthcheck, {
    probe: { type: 'exec', command: ['wget', '-q', 'http://localhost/'] },
    intervalMs: 10_000,
    timeoutMs: 90_000,
    retries: 5,
    startPeriodMs: 500,
  });
  t.deepEqual(web.update, { strategy: 'hand-over', handoverTimeoutMs: 120_000, overrideLock: true });
  t.deepEqual(web.capAdd, ['NET_ADMIN']);
  t.deepEqual(web.capDrop, ['ALL']);
  t.deepEqual(web.devices, [{ hostPath: '/dev/ttyUSB0', containerPath: '/dev/ttyS0', permissions: 'rw' }]);
  t.true(web.readOnly);
  t.deepEqual(web.networks, ['back']);
  const db = app.services.db!;
  t.deepEqual(db.resources, { memoryBytes: 1024 ** 3, pids: 100 });
  t.deepEqual(db.restart, { policy: 'always', maxRetries: 0 });
  t.deepEqual(db.healthcheck?.probe, { type: 'shell', command: 'pg_isready' });
  t.deepEqual(db.networks, ['back']);
  t.true(app.networks.back!.internal);
  t.deepEqual(Object.keys(app.volumes), ['data']);
});

test('compose: unknown keys are errors that name their path', (t) => {
  const cases: Array<[string, RegExp]> = [
    [
      'services:\n  web:\n    image: x\n    build: .\n',
      /:4:5: services\.web\.build: unsupported key: berth does not build images/,
    ],
    ['services:\n  web:\n    image: x\nsecrets: {}\n', /:4:1: secrets: unsupported key/],
    [
      'services:\n  web:\n    image: x\n    healthcheck: { test: [CMD, x], bogus: 1 }\n',
      /services\.web\.healthcheck\.bogus: unknown key "bogus"/,
    ],
    [
      'services:\n  web:\n    image: x\n    deploy: { replicas: 2 }\n',
      /services\.web\.deploy\.replicas: unsupported key/,
    ],
    ['services:\n  web:\n    build: .\n', /services\.web\.build/],
    ['services:\n  web:\n    command: x\n', /services\.web\.image: required/],
    [
      'services:\n  web:\n    image: x\n    volumes: [data:/d]\n',
      /volumes\[0\]: volume "data" is not declared/,
    ],
    ['services:\n  web:\n    image: x\n    ports: ["80:80:80"]\n', /services\.web\.ports\[0\]: invalid port/],
    [
      'services:\n  web:\n    image: x\n    restart: sometimes\n',
      /services\.web\.restart: invalid restart policy/,
    ],
    [
      'services:\n  web:\n    image: x\n    depends_on: [db]\n',
      /services\.web\.depends_on\[0\]: depends on unknown/,
    ],
    ['services:\n  web:\n    image: x\n    environment: [FOO]\n', /environment\[0\]: expected KEY=VALUE/],
    [
      'services:\n  web:\n    image: x\n    labels: { berth.update.strategy: yolo }\n',
      /unknown strategy yolo/,
    ],
    ['services: [\n', /compose file is not valid YAML\/JSON:\n {2}compose file:2:1: /],
  ];
  for (const [yaml, re] of cases) {
    const err = t.throws(() => composeToApp(yaml), undefined, yaml);
    t.regex(err!.message, re, yaml);
  }
});

test('compose helpers: sizes, durations and command splitting', (t) => {
  t.is(parseBytes('512m', 'x'), 512 * 1024 * 1024);
  t.is(parseBytes('1.5g', 'x'), 1.5 * 1024 ** 3);
  t.is(parseBytes(4096, 'x'), 4096);
  t.throws(() => parseBytes('lots', 'x'));
  t.is(parseDuration('1m30s', 'x'), 90_000);
  t.is(parseDuration('250ms', 'x'), 250);
  t.is(parseDuration(2, 'x'), 2000);
  t.throws(() => parseDuration('soon', 'x'));
  t.deepEqual(splitCommand(`a "b c" 'd e' f\\ g ""`), ['a', 'b c', 'd e', 'f g', '']);
  t.throws(() => splitCommand('a "b'));
});

test('loadTargetText: compose YAML becomes a one-app target, JSON is validated; versions can be set', (t) => {
  const y = loadTargetText('name: demo\nservices:\n  web:\n    image: busybox:1\n', 'app.yml', {
    version: 7,
  });
  t.is(y.version, 7);
  t.deepEqual(Object.keys(y.apps), ['demo']);
  t.is(
    loadTargetText('services:\n  w:\n    image: x\n', 'c.yaml', { app: 'named' }).apps.named!.services.w!
      .image,
    'x',
  );
  t.throws(() => loadTargetText('services:\n  w:\n    image: x\n', 'c.yaml'), { message: /name the app/ });
  const j = loadTargetText(
    JSON.stringify({ version: 1, apps: { a: { services: { s: { image: 'i' } } } } }),
    't.json',
    {
      version: 9,
    },
  );
  t.is(j.version, 9);
  t.throws(() => loadTargetText('{nope', 't.json'), { message: /^t\.json:1:2: not valid JSON/ });
});
