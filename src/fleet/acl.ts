/**
 * Who may publish and subscribe to what on a fleet's broker (pure). The embedded broker applies these
 * rules to every PUBLISH and SUBSCRIBE; for Mosquitto the same rules are written as one dynamic-security
 * role per device (`deviceAcls`, src/fleet/dynsec.ts) and as the ACL file in docs/protocol.md.
 *
 *   device d   publishes only its own   devices/d/{status,state,info,metrics,event,req,result}
 *              subscribes only to       devices/d/{target,command,reply,chunks}, groups/<g>/target
 *                                       (one group, or `+`), fanout/<hex> (one blob, or `+`)
 *   fleet      everything under berth/v1/<fleet>/, shared subscriptions included
 *   anonymous  (only when the operator opts in, for a lab) the same as the fleet
 *
 * So a device can neither publish a target, a reply or a chunk to anyone — itself included — nor read
 * another device's targets, commands or replies.
 */
import { isSafeName } from '../lib/ids.js';

export type Principal = { kind: 'fleet' } | { kind: 'device'; deviceId: string } | { kind: 'anonymous' };

export const DEVICE_PUBLISH = ['status', 'state', 'info', 'metrics', 'event', 'req', 'result'] as const;
export const DEVICE_SUBSCRIBE = ['target', 'command', 'reply', 'chunks'] as const;

const PUBLISH = new Set<string>(DEVICE_PUBLISH);
const SUBSCRIBE = new Set<string>(DEVICE_SUBSCRIBE);
const HEX64 = /^[0-9a-f]{64}$/;

function levels(topic: string, fleet: string): string[] | undefined {
  if (typeof topic !== 'string' || topic.length > 512) return undefined;
  const p = topic.split('/');
  if (p[0] !== 'berth' || p[1] !== 'v1' || p[2] !== fleet) return undefined;
  return p.slice(3);
}

/** Strip `$share/<group>/` from a subscription filter; undefined when the form is wrong. */
function unshare(filter: string): { shared: boolean; filter: string } | undefined {
  if (!filter.startsWith('$share/')) return { shared: false, filter };
  const rest = filter.slice('$share/'.length);
  const i = rest.indexOf('/');
  if (i <= 0) return undefined;
  const group = rest.slice(0, i);
  if (group.includes('+') || group.includes('#')) return undefined;
  return { shared: true, filter: rest.slice(i + 1) };
}

export function mayPublish(who: Principal, fleet: string, topic: string): boolean {
  if (topic.includes('+') || topic.includes('#')) return false;
  const p = levels(topic, fleet);
  if (!p) return false;
  if (who.kind !== 'device') return true;
  return p.length === 3 && p[0] === 'devices' && p[1] === who.deviceId && PUBLISH.has(p[2]!);
}

export function maySubscribe(who: Principal, fleet: string, filter: string): boolean {
  const u = unshare(filter);
  if (!u) return false;
  const p = levels(u.filter, fleet);
  if (!p) return false;
  if (who.kind !== 'device') return true;
  if (u.shared) return false;
  if (p.length === 3 && p[0] === 'devices') return p[1] === who.deviceId && SUBSCRIBE.has(p[2]!);
  if (p.length === 3 && p[0] === 'groups') return p[2] === 'target' && (p[1] === '+' || isSafeName(p[1]!));
  if (p.length === 2 && p[0] === 'fanout') return p[1] === '+' || HEX64.test(p[1]!);
  return false;
}

/** The same rules as Mosquitto dynamic-security ACLs for one device (literal where they can be). */
export function deviceAcls(
  fleet: string,
  deviceId: string,
): Array<{ acltype: string; topic: string; allow: true }> {
  const base = `berth/v1/${fleet}`;
  return [
    ...DEVICE_PUBLISH.map((c) => ({
      acltype: 'publishClientSend',
      topic: `${base}/devices/${deviceId}/${c}`,
      allow: true as const,
    })),
    ...DEVICE_SUBSCRIBE.map((c) => ({
      acltype: 'subscribeLiteral',
      topic: `${base}/devices/${deviceId}/${c}`,
      allow: true as const,
    })),
    { acltype: 'subscribePattern', topic: `${base}/groups/+/target`, allow: true },
    { acltype: 'subscribePattern', topic: `${base}/fanout/+`, allow: true },
  ];
}

/** What the fleet servers' own account needs on Mosquitto. */
export function fleetAcls(fleet: string): Array<{ acltype: string; topic: string; allow: true }> {
  const all = `berth/v1/${fleet}/#`;
  return [
    { acltype: 'publishClientSend', topic: all, allow: true },
    { acltype: 'publishClientReceive', topic: all, allow: true },
    { acltype: 'subscribePattern', topic: all, allow: true },
    { acltype: 'unsubscribePattern', topic: all, allow: true },
  ];
}
