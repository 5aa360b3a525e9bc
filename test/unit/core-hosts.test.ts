import test from 'ava';
import { appHosts } from '../../src/core/hosts.js';

test('services of an app list each other by service name when they share a network', (t) => {
  const hosts = appHosts([
    { id: 'shop_web_1', app: 'shop', service: 'web', ip: '10.0.0.2', networks: [] },
    { id: 'shop_db_1', app: 'shop', service: 'db', ip: '10.0.0.3', networks: ['default', 'back'] },
    { id: 'shop_admin_1', app: 'shop', service: 'admin', ip: '10.0.0.4', networks: ['back'] },
    { id: 'blog_web_1', app: 'blog', service: 'web', ip: '10.0.0.5', networks: [] },
    { id: 'shop_host_1', app: 'shop', service: 'host', networks: [] },
  ]);
  t.deepEqual(hosts.get('shop_web_1'), [{ ip: '10.0.0.3', names: ['db', 'db.shop', 'shop_db_1'] }]);
  t.deepEqual(
    hosts.get('shop_db_1')!.map((e) => e.names[0]),
    ['admin', 'web'],
    'db is on both networks',
  );
  t.deepEqual(
    hosts.get('shop_admin_1')!.map((e) => e.names[0]),
    ['db'],
    'admin is on back only: no web',
  );
  t.deepEqual(hosts.get('blog_web_1'), [], 'another app sees none of shop');
  t.false(hosts.has('shop_host_1'), 'no address (host/none network): not listed, lists nothing');
});

test('during a hand-over the name means the newest container of the service', (t) => {
  const hosts = appHosts([
    { id: 'a_web_old', app: 'a', service: 'web', ip: '10.0.0.2', networks: [], startedAt: 1 },
    { id: 'a_web_new', app: 'a', service: 'web', ip: '10.0.0.3', networks: [], startedAt: 2 },
    { id: 'a_cli_1', app: 'a', service: 'cli', ip: '10.0.0.4', networks: [], startedAt: 1 },
  ]);
  t.deepEqual(
    hosts.get('a_cli_1')!.map((e) => e.ip),
    ['10.0.0.3', '10.0.0.2'],
  );
});
