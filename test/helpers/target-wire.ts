/**
 * What went over the wire: an MQTT observer subscribed to every target topic of a fleet, counting the live
 * deliveries per scope (`device <id>`, `group <g>`) — content (the image names, one entry per publish) and
 * clears apart. Retained copies a new subscription gets are left out, and so is the server's retained-target
 * scan sentinel (a group no device follows), so "published once" is measured on the broker, not read from
 * the fleet's own rows.
 */
import type { ExecutionContext } from 'ava';
import { connectAsync } from 'mqtt';
import { parseTopic, prefix } from '../../src/transport/topics.js';

export interface TargetWire {
  /** scope → image names of each content publish, in order */
  content: Map<string, string[]>;
  /** scope → how many clears */
  clears: Map<string, number>;
  /** every live delivery in order: `group g1 app:2`, `device d1 clear` */
  log: string[];
}

export async function observeTargets(
  t: ExecutionContext,
  o: { url: string; fleet: string; username?: string | undefined; password?: string | undefined },
): Promise<TargetWire> {
  const link = await connectAsync(o.url, {
    ...(o.username !== undefined ? { username: o.username, password: o.password } : {}),
    clientId: `observer-${process.pid}-${Math.random().toString(36).slice(2)}`,
    reconnectPeriod: 0,
  });
  t.teardown(() => link.endAsync());
  const wire: TargetWire = { content: new Map(), clears: new Map(), log: [] };
  link.on('message', (topic, payload, packet) => {
    if (packet.retain || payload.length === 0) return;
    const p = parseTopic(topic);
    const key =
      p?.kind === 'device' && p.channel === 'target'
        ? `device ${p.deviceId}`
        : p?.kind === 'group-target'
          ? `group ${p.group}`
          : undefined;
    if (!key || key.startsWith('group berth-sync-')) return;
    const body = JSON.parse(payload.toString()) as {
      target: { clear?: true; images?: Array<{ name: string }> };
    };
    if (body.target.clear) {
      wire.clears.set(key, (wire.clears.get(key) ?? 0) + 1);
      wire.log.push(`${key} clear`);
    } else {
      const names = (body.target.images ?? []).map((i) => i.name).join(',');
      wire.content.set(key, [...(wire.content.get(key) ?? []), names]);
      wire.log.push(`${key} ${names}`);
    }
  });
  const base = prefix(o.fleet);
  await link.subscribeAsync([`${base}/devices/+/target`, `${base}/groups/+/target`], { qos: 1 });
  return wire;
}
