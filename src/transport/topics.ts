import { isSafeName } from '../lib/ids.js';
import { type Digest, digestHex, isDigest } from '../oci/digest.js';

/**
 * The topic codec (pure). Every berth topic lives under `berth/v1/<fleet>/`; see docs/protocol.md for
 * direction, payload, QoS and retain flag of each. Building validates every level (a device id or group
 * that could smuggle `/`, `+` or `#` into a topic is refused); parsing returns undefined for anything
 * that is not exactly one of berth's topics, so callers drop foreign traffic with a log line.
 */
export const PROTOCOL_VERSION = 'v1';
export const SHARE_GROUP = 'berth-fleet';

export type DeviceChannel =
  | 'status'
  | 'target'
  | 'req'
  | 'reply'
  | 'chunks'
  // the agent's reports (src/agent/reporter.ts, outbox): retained state/info, queued metrics/events
  | 'state'
  | 'info'
  | 'metrics'
  | 'event'
  // remote commands: signed, fleet → device; the device's results on `result`
  | 'command'
  | 'result';
const DEVICE_CHANNELS: ReadonlySet<string> = new Set([
  'status',
  'target',
  'req',
  'reply',
  'chunks',
  'state',
  'info',
  'metrics',
  'event',
  'command',
  'result',
]);

export type ParsedTopic =
  | { kind: 'device'; fleet: string; deviceId: string; channel: DeviceChannel }
  | { kind: 'group-target'; fleet: string; group: string }
  | { kind: 'fanout'; fleet: string; digest: Digest };

function level(kind: string, s: string): string {
  if (!isSafeName(s)) throw new TypeError(`invalid ${kind} for a topic level: ${JSON.stringify(s)}`);
  return s;
}

export function prefix(fleet: string): string {
  return `berth/${PROTOCOL_VERSION}/${level('fleet', fleet)}`;
}

export function deviceTopic(fleet: string, deviceId: string, channel: DeviceChannel): string {
  return `${prefix(fleet)}/devices/${level('device id', deviceId)}/${channel}`;
}

export function groupTargetTopic(fleet: string, group: string): string {
  return `${prefix(fleet)}/groups/${level('group', group)}/target`;
}

export function fanoutTopic(fleet: string, digest: Digest): string {
  if (!isDigest(digest)) throw new TypeError(`invalid digest for a topic: ${JSON.stringify(digest)}`);
  return `${prefix(fleet)}/fanout/${digestHex(digest)}`;
}

/** What the fleet server subscribes to for blob requests: shared among servers under MQTT 5. */
export function serverRequestFilter(fleet: string, shared: boolean): string {
  const filter = `${prefix(fleet)}/devices/+/req`;
  return shared ? `$share/${SHARE_GROUP}/${filter}` : filter;
}

/**
 * What every device reports on `channel`, for the fleet server's ingest. Queued reports (events, metrics,
 * command results) are split between fleet servers under MQTT 5 (`$share`), so a shared database gets each
 * once; retained ones (status, state, info) go to every server.
 */
export function serverReportFilter(fleet: string, channel: DeviceChannel, shared: boolean): string {
  const filter = `${prefix(fleet)}/devices/+/${channel}`;
  return shared ? `$share/${SHARE_GROUP}/${filter}` : filter;
}

/** Presence of every device (retained), which each fleet server keeps in its registry. */
export function serverStatusFilter(fleet: string): string {
  return `${prefix(fleet)}/devices/+/status`;
}

export function parseTopic(topic: string): ParsedTopic | undefined {
  if (typeof topic !== 'string' || topic.length > 512) return undefined;
  const p = topic.split('/');
  if (p[0] !== 'berth' || p[1] !== PROTOCOL_VERSION || p.length < 5) return undefined;
  const fleet = p[2]!;
  if (!isSafeName(fleet)) return undefined;
  if (p[3] === 'devices' && p.length === 6) {
    const deviceId = p[4]!;
    const channel = p[5]!;
    if (!isSafeName(deviceId) || !DEVICE_CHANNELS.has(channel)) return undefined;
    return { kind: 'device', fleet, deviceId, channel: channel as DeviceChannel };
  }
  if (p[3] === 'groups' && p.length === 6 && p[5] === 'target') {
    const group = p[4]!;
    if (!isSafeName(group)) return undefined;
    return { kind: 'group-target', fleet, group };
  }
  if (p[3] === 'fanout' && p.length === 5) {
    const digest = `sha256:${p[4]}`;
    if (!isDigest(digest)) return undefined;
    return { kind: 'fanout', fleet, digest };
  }
  return undefined;
}
