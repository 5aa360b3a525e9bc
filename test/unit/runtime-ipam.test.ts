import test from 'ava';
import { openDatabase } from '../../src/db/database.js';
import { macForIp } from '../../src/runtime/network/ip.js';
import { gatewayOf, Ipam, intToIp, ipToInt, parseSubnet } from '../../src/runtime/network/ipam.js';
import { chainNames, splitRuleSpec } from '../../src/runtime/network/iptables.js';
import { parsePortMapping } from '../../src/runtime/network/network.js';

test('subnet math', (t) => {
  const s = parseSubnet('172.31.250.77/24');
  t.is(intToIp(s.network), '172.31.250.0');
  t.is(s.size, 256);
  t.is(gatewayOf(s), '172.31.250.1');
  t.is(ipToInt('10.0.0.1'), 167772161);
  t.is(intToIp(ipToInt('255.255.255.254')), '255.255.255.254');
  t.throws(() => parseSubnet('10.0.0.0/31'));
  t.throws(() => parseSubnet('10.0.0/24'));
  t.throws(() => ipToInt('10.0.0.256'));
});

test('allocation: lowest free from .2, idempotent per container, released addresses reused, exhaustion', (t) => {
  const db = openDatabase(':memory:');
  const ipam = new Ipam(db, 'br0', parseSubnet('10.9.0.0/29')); // .2 … .6 usable
  t.is(ipam.allocate('a'), '10.9.0.2');
  t.is(ipam.allocate('b'), '10.9.0.3');
  t.is(ipam.allocate('a'), '10.9.0.2', 'same container, same lease');
  ipam.release('a');
  t.is(ipam.leaseOf('a'), undefined);
  t.is(ipam.allocate('c'), '10.9.0.2');
  for (const id of ['d', 'e', 'f']) ipam.allocate(id);
  t.throws(() => ipam.allocate('g'), { message: /no free address/ });
  const other = new Ipam(db, 'br1', parseSubnet('10.9.0.0/29'));
  t.is(other.allocate('g'), '10.9.0.2', 'leases are per network');
  db.close();
});

test('a lease from before the bridge’s subnet moved (another berth took it) is replaced, not reused', (t) => {
  const db = openDatabase(':memory:');
  t.is(new Ipam(db, 'berth-x', parseSubnet('172.30.5.0/24')).allocate('a'), '172.30.5.2');
  const moved = new Ipam(db, 'berth-x', parseSubnet('172.30.6.0/24'));
  t.is(moved.allocate('a'), '172.30.6.2');
  t.is(moved.leaseOf('a'), '172.30.6.2');
  t.is(moved.allocate('a'), '172.30.6.2', 'still idempotent');
  db.close();
});

test('port mappings like docker -p', (t) => {
  t.deepEqual(parsePortMapping('8080:80'), { hostPort: 8080, containerPort: 80, protocol: 'tcp' });
  t.deepEqual(parsePortMapping('127.0.0.1:53:5353/udp'), {
    hostPort: 53,
    containerPort: 5353,
    protocol: 'udp',
    hostIp: '127.0.0.1',
  });
  t.throws(() => parsePortMapping('80'));
  t.throws(() => parsePortMapping('0:80'));
  t.throws(() => parsePortMapping('70000:80'));
  t.throws(() => parsePortMapping('1:2/sctp'));
});

test('iptables -S lines split back into argv', (t) => {
  t.deepEqual(
    splitRuleSpec('-A BERTH-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "berth:abc" -j DNAT'),
    [
      '-A',
      'BERTH-DNAT',
      '-p',
      'tcp',
      '-m',
      'tcp',
      '--dport',
      '8080',
      '-m',
      'comment',
      '--comment',
      'berth:abc',
      '-j',
      'DNAT',
    ],
  );
  t.deepEqual(splitRuleSpec('-A X --comment "a \\"b\\" c"'), ['-A', 'X', '--comment', 'a "b" c']);
  t.deepEqual(chainNames('berth'), {
    post: 'BERTH-POST',
    dnat: 'BERTH-DNAT',
    fwd: 'BERTH-FWD',
    raw: 'BERTH-RAW',
  });
});

test('the MAC follows the address, so a reused address keeps its ARP entries valid', (t) => {
  t.is(macForIp('172.17.0.2'), '02:42:ac:11:00:02');
  t.is(macForIp('10.255.1.200'), '02:42:0a:ff:01:c8');
});
