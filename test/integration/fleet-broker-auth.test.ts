/**
 * Broker access control, the same rules on both brokers berth supports (one suite, run against each):
 *   - the embedded aedes broker (authentication from fleet.db, ACL from src/fleet/acl.ts);
 *   - a real Mosquitto with the dynamic security plugin (a client + role per enrolled device).
 * An enrolled device reaches only its own subtree, group targets and fan-out streams: subscribing to
 * another device's target, commands or replies is refused, and a target or reply it publishes reaches no
 * one and is not retained. Clients without credentials, or with wrong ones, are refused. Revocation cuts
 * the device off at once and for good.
 */
import { randomBytes } from 'node:crypto';
import test, { type ExecutionContext } from 'ava';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { deviceTopic, groupTargetTopic, prefix } from '../../src/transport/topics.js';
import { FLEET, type FleetSide, memoryLog, startFleet, waitFor } from '../helpers/fleet-harness.js';
import { Mosquitto } from '../helpers/mosquitto.js';

type Broker = 'embedded' | 'mosquitto-dynsec';

async function fleetOn(t: ExecutionContext, broker: Broker, log = memoryLog()): Promise<FleetSide> {
  if (broker === 'embedded') return startFleet(t, { log: log.log });
  const admin = { username: 'berth-fleet', password: randomBytes(12).toString('hex') };
  const m = await Mosquitto.start([], { dynsec: admin });
  t.teardown(() => m.stop());
  const fleet = await startFleet(t, {
    mqtt: { url: m.url, protocolVersion: 5, ...admin, backoff: { initialMs: 50, maxMs: 500 } },
    brokerAuth: 'dynsec',
    log: log.log,
  });
  dynsecAdmin.set(fleet, admin);
  return fleet;
}

async function client(
  t: ExecutionContext,
  fleet: FleetSide,
  o: Partial<IClientOptions> & { clientId: string },
): Promise<MqttClient> {
  const c = await connectAsync(fleet.server.brokerUrl, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ...o,
  });
  t.teardown(() => c.endAsync(true).catch(() => undefined));
  return c;
}

/** A fleet-side observer: everything published under the fleet's prefix, retained included. */
async function observer(
  t: ExecutionContext,
  fleet: FleetSide,
): Promise<Array<{ topic: string; body: string }>> {
  const seen: Array<{ topic: string; body: string }> = [];
  const o = await client(t, fleet, {
    clientId: `observer-${randomBytes(3).toString('hex')}`,
    ...(fleet.server.fleetAccount ?? {}),
    ...(fleet.server.access.mode === 'dynsec' ? dynsecAdmin.get(fleet) : {}),
  });
  o.on('message', (topic, payload) => seen.push({ topic, body: payload.toString() }));
  await o.subscribeAsync(`${prefix(FLEET)}/#`, { qos: 1 });
  return seen;
}

/** The fleet account on Mosquitto (the dynsec admin the fleet server logs in as). */
const dynsecAdmin = new WeakMap<FleetSide, { username: string; password: string }>();

async function refused(fleet: FleetSide, o: Partial<IClientOptions>): Promise<string> {
  try {
    const c = await connectAsync(fleet.server.brokerUrl, {
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 5000,
      clientId: `refused-${randomBytes(3).toString('hex')}`,
      ...o,
    });
    await c.endAsync(true);
    return 'accepted';
  } catch (err) {
    return (err as Error).message;
  }
}

for (const broker of ['embedded', 'mosquitto-dynsec'] as const) {
  test(`${broker}: clients without credentials, or with wrong ones, are refused`, async (t) => {
    const fleet = await fleetOn(t, broker);
    const creds = await fleet.credentials('d1');
    t.regex(await refused(fleet, {}), /Not authorized|Bad username or password/);
    t.regex(
      await refused(fleet, { username: 'd1', password: 'wrong' }),
      /Not authorized|Bad username or password/,
    );
    t.regex(
      await refused(fleet, { username: 'nobody', password: creds.password! }),
      /Not authorized|Bad username/,
    );
    t.is(await refused(fleet, creds), 'accepted', 'the enrolled device itself gets in');
  });

  test(`${broker}: an enrolled device reaches only its own subtree, group targets and fan-out streams`, async (t) => {
    const fleet = await fleetOn(t, broker);
    const seen = await observer(t, fleet);
    const d1 = await fleet.credentials('d1', { groups: ['g1'] });
    const d2 = await fleet.credentials('d2');
    const dev1 = await client(t, fleet, { clientId: 'berth-agent-d1', ...d1 });

    const sub = async (filter: string) =>
      dev1.subscribeAsync(filter, { qos: 1 }).then(
        (g) => g[0]!.qos,
        (err: { packet?: { granted?: number[] } }) => err.packet?.granted?.[0] ?? -1,
      );
    // its own: granted
    for (const f of [
      deviceTopic(FLEET, 'd1', 'target'),
      deviceTopic(FLEET, 'd1', 'reply'),
      deviceTopic(FLEET, 'd1', 'command'),
      groupTargetTopic(FLEET, 'g1'),
      `${prefix(FLEET)}/fanout/${'a'.repeat(64)}`,
    ])
      t.is(await sub(f), 1, `granted ${f}`);
    // anyone else's, or wider: refused (SUBACK 0x80)
    for (const f of [
      deviceTopic(FLEET, 'd2', 'target'),
      deviceTopic(FLEET, 'd2', 'reply'),
      deviceTopic(FLEET, 'd2', 'command'),
      deviceTopic(FLEET, 'd2', 'chunks'),
      `${prefix(FLEET)}/devices/+/reply`,
      `${prefix(FLEET)}/groups/#`,
      `${prefix(FLEET)}/#`,
      '#',
      `$share/x/${deviceTopic(FLEET, 'd2', 'req')}`,
    ])
      t.is(await sub(f), 128, `refused ${f}`);

    // what it may publish arrives (the check below is not vacuous)
    await dev1.publishAsync(deviceTopic(FLEET, 'd1', 'event'), '{"type":"hello"}', { qos: 1 });
    await waitFor(() => seen.some((m) => m.topic.endsWith('/d1/event')), 5000, 'its own event');

    // a target (for anyone, itself included), a reply, a command or a report in another's name: nobody gets them,
    // nothing is retained. A refused publish may cost the client its connection (aedes): one client each.
    const forbidden = [
      deviceTopic(FLEET, 'd1', 'target'),
      deviceTopic(FLEET, 'd2', 'target'),
      groupTargetTopic(FLEET, 'g1'),
      deviceTopic(FLEET, 'd2', 'reply'),
      deviceTopic(FLEET, 'd2', 'command'),
      deviceTopic(FLEET, 'd2', 'status'),
      `${prefix(FLEET)}/fanout/${'b'.repeat(64)}`,
    ];
    for (const [i, topic] of forbidden.entries()) {
      const c = await client(t, fleet, { clientId: `berth-agent-d1-${i}`, ...d1 });
      // refused: Mosquitto drops it (3.1.1) or says so; aedes closes the link, so the PUBACK may never come
      const sent = c.publishAsync(topic, '{"forged":true}', { qos: 1, retain: true }).catch(() => undefined);
      await Promise.race([sent, new Promise((r) => setTimeout(r, 1000))]);
      // a publish that is allowed, after it on the same link: once it arrives, the forbidden one had its chance
      if (c.connected)
        await c.publishAsync(deviceTopic(FLEET, 'd1', 'event'), `{"type":"marker-${i}"}`, { qos: 1 });
      else await dev1.publishAsync(deviceTopic(FLEET, 'd1', 'event'), `{"type":"marker-${i}"}`, { qos: 1 });
      await waitFor(() => seen.some((m) => m.body.includes(`marker-${i}`)), 5000, `marker ${i}`);
    }
    t.deepEqual(
      seen.filter((m) => m.body.includes('forged')),
      [],
      'no forged message reached the fleet',
    );
    // and none was retained: a new subscriber to those topics gets nothing forged
    const late = await observer(t, fleet);
    await new Promise((r) => setTimeout(r, 500));
    t.deepEqual(
      late.filter((m) => m.body.includes('forged')),
      [],
      'nothing forged was retained',
    );
    // d2 is unaffected and can use its own subtree
    const dev2 = await client(t, fleet, { clientId: 'berth-agent-d2', ...d2 });
    t.is((await dev2.subscribeAsync(deviceTopic(FLEET, 'd2', 'target'), { qos: 1 }))[0]!.qos, 1);
  });

  test(`${broker}: revocation disconnects the device and refuses it from then on`, async (t) => {
    const log = memoryLog();
    const fleet = await fleetOn(t, broker, log);
    const creds = await fleet.credentials('d1');
    const dev = await client(t, fleet, { clientId: 'berth-agent-d1', ...creds });
    await dev.publishAsync(
      deviceTopic(FLEET, 'd1', 'status'),
      JSON.stringify({ v: 1, deviceId: 'd1', state: 'online', at: new Date().toISOString() }),
      { qos: 1, retain: true },
    );
    await waitFor(() => fleet.stores.devices.get('d1')?.online === true, 5000, 'd1 online in the fleet');
    const closed = new Promise<void>((r) => dev.once('close', () => r()));
    const row = await fleet.server.services.devices.revoke('d1');
    t.truthy(row.revokedAt);
    t.false(row.online);
    await closed; // cut off at once, not at its next reconnect
    t.regex(await refused(fleet, creds), /Not authorized|Bad username or password/, 'refused from then on');
    t.is(fleet.stores.enrollment.credential('d1'), undefined, 'its credential is gone');
    // its retained presence was cleared: nobody reads a revoked device as online
    const seen = await observer(t, fleet);
    await new Promise((r) => setTimeout(r, 500));
    t.false(seen.some((m) => m.topic === deviceTopic(FLEET, 'd1', 'status')));
    await t.throwsAsync(
      fleet.server.services.deploy.deploy({ apps: {}, images: [] }, { kind: 'device', id: 'd1' }),
      {
        message: /revoked/,
      },
    );
    await t.throwsAsync(fleet.credentials('d1'), { message: /revoked/ }, 'the id cannot enroll again');
  });
}

test('embedded: anonymous clients only when the operator opts in for a lab, and it is logged', async (t) => {
  const mem = memoryLog();
  const fleet = await startFleet(t, { allowAnonymous: true, log: mem.log });
  const c = await client(t, fleet, { clientId: 'lab' });
  t.true(c.connected);
  t.true(
    mem.lines().some((l) => /ANONYMOUS/.test(l.msg) && l.level === 40),
    'a warning says so at start',
  );
});
