/**
 * App networks and service discovery inside an app, on the real stack (fleet + broker, overlay, berth-runtime, a private
 * bridge): a service reaches another of its app by the service's name when they share an app network;
 * a service on another network of the app, or in another app, neither gets the name nor gets through the
 * bridge to it by address. Names and isolation follow a re-deploy.
 */
import { randomBytes, randomInt } from 'node:crypto';
import test from 'ava';
import { exec } from '../../src/lib/exec.js';
import { deleteChains } from '../../src/runtime/network/iptables.js';
import { buildSampleImages, pushSampleImages, startAgentStack } from '../helpers/agent-stack.js';
import { startFleet, tempDir, waitFor } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';

test('services find each other by name on their app network, not across networks', async (t) => {
  if (!needPrivileges(t)) return;
  t.timeout(180_000);
  const tag = randomBytes(3).toString('hex');
  const network = {
    bridge: `bn${tag}`,
    subnet: `172.29.${randomInt(1, 250)}.0/24`,
    nftTable: `berth_n${tag}`,
  };
  // registered first, so it runs last: after the agent's teardown has removed the containers
  t.teardown(async () => {
    await exec('/usr/sbin/nft', ['delete', 'table', 'ip', network.nftTable], { allowFailure: true });
    await exec('/usr/sbin/nft', ['delete', 'table', 'bridge', network.nftTable], { allowFailure: true });
    await deleteChains(network.nftTable).catch(() => undefined);
    await exec('/usr/sbin/ip', ['link', 'del', network.bridge], { allowFailure: true });
  });
  const fleet = await startFleet(t);
  const work = await tempDir(t, 'appnet-images');
  await pushSampleImages(fleet, await buildSampleImages(work, ['v1', 'v2']));
  const stack = await startAgentStack(t, fleet, {
    deviceId: `appnet-${process.pid}`,
    config: { network },
    agent: { reconciler: { healthWindowMs: 500, minDelayMs: 100, maxDelayMs: 500, idleIntervalMs: 300 } },
  });
  const { engine } = stack.device;
  const sleeper = { command: ['/bin/sleep', '100000'], stopTimeoutMs: 500 };
  const deploy = (webImage: string) =>
    stack.deploy(
      {
        net: {
          services: {
            web: { image: webImage, stopTimeoutMs: 500 },
            client: { image: 'sample:v1', ...sleeper },
            loner: { image: 'sample:v1', networks: ['side'], ...sleeper },
          },
          networks: { side: {} },
        },
        other: { services: { peer: { image: 'sample:v1', ...sleeper } } },
      },
      [...new Set([webImage, 'sample:v1'])],
    );
  const byService = async (service: string) => {
    const c = (await engine.list()).find(
      (x) => x.labels['io.berth.service'] === service && x.status === 'running',
    );
    if (!c) throw new Error(`no running ${service}`);
    return c;
  };
  // busybox-static is linked against glibc statically and crashes in getaddrinfo (no NSS modules in the
  // image), so the lookup is done as a libc's "files" source does it: the first /etc/hosts line naming web.
  const wget = async (from: string) =>
    engine.exec(
      (await byService(from)).id,
      [
        'sh',
        '-c',
        `ip=$(busybox awk '{for (i = 2; i <= NF; i++) if ($i == "web") {print $1; exit}}' /etc/hosts); [ -n "$ip" ] || { echo "web: bad address" >&2; exit 1; }; busybox timeout 3 wget -q -O - "http://$ip:8080/"`,
      ],
      { timeoutMs: 10_000 },
    );
  await deploy('sample:v1');
  await waitFor(
    async () => (await engine.list()).filter((c) => c.status === 'running').length === 4,
    60_000,
    'three services running',
  );
  // the names are written by the reconciler pass after the containers run
  await waitFor(
    async () => (await wget('client')).exitCode === 0,
    20_000,
    'client reaches web by name',
  ).catch(async (err) => {
    const c = await byService('client');
    t.log(await engine.exec(c.id, ['cat', '/etc/hosts'], { timeoutMs: 5000 }), await wget('client'));
    t.log(await engine.list());
    throw err;
  });
  t.is((await wget('client')).stdout.trim(), 'hello v1');
  const web1 = await byService('web');
  const hosts = (
    await engine.exec((await byService('client')).id, ['cat', '/etc/hosts'], { timeoutMs: 5000 })
  ).stdout;
  t.true(hosts.includes(`${web1.ip}\tweb web.net ${web1.id}`), hosts);

  const lonely = await wget('loner');
  t.not(lonely.exitCode, 0, 'loner is on the side network only: web is not a name there');
  t.regex(lonely.stderr, /bad address|resolve|web/i);

  // and on the wire: by address, only services that share a network get through the bridge
  const byIp = async (from: string, ip: string) =>
    engine.exec(
      (await byService(from)).id,
      ['busybox', 'timeout', '3', 'wget', '-q', '-O', '-', `http://${ip}:8080/`],
      { timeoutMs: 10_000 },
    );
  const blocked = async (from: string) => (await byIp(from, web1.ip!)).exitCode !== 0;
  await waitFor(async () => (await blocked('loner')) && (await blocked('peer')), 20_000, 'isolation applied');
  t.true(await blocked('loner'), 'another network of the same app: dropped on the bridge');
  t.true(await blocked('peer'), 'another app: dropped on the bridge');
  t.is((await byIp('client', web1.ip!)).stdout.trim(), 'hello v1', 'the same network: through');
  const rules = await exec('/usr/sbin/nft', ['list', 'set', 'bridge', network.nftTable, 'pairs']);
  t.true(rules.stdout.includes(`${(await byService('client')).ip} . ${web1.ip}`), rules.stdout);

  // web is replaced (new container, maybe a new address): the name follows it
  await deploy('sample:v2');
  await waitFor(async () => stack.running('sample:v2'), 60_000, 'web v2 running');
  await waitFor(
    async () => (await wget('client')).stdout.trim() === 'hello v2',
    20_000,
    'the name web now reaches v2',
  ).catch(async (err) => {
    const c = await byService('client');
    t.log(await engine.exec(c.id, ['cat', '/etc/hosts'], { timeoutMs: 5000 }), await wget('client'));
    t.log((await engine.list()).map((x) => [x.id, x.ip, x.status, x.image]));
    throw err;
  });
  const web2 = await byService('web');
  t.not(web2.id, web1.id);
  t.is((await wget('client')).stdout.trim(), 'hello v2');
  t.true(await blocked('peer'), 'the new web is isolated from the other app too');
});
