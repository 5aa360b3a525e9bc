/**
 * Which signed targets the broker retains now, by topic → version: what `republish` compares the fleet's
 * current targets against, so a server restart publishes only what the broker lacks (a broker that lost its
 * store gets everything again; one that kept it gets nothing twice — no device receives its target again
 * because the fleet server restarted).
 *
 * The embedded broker's store is read in-process. An external broker is asked the MQTT way: a QoS 0
 * subscription to the target topics, closed by a sentinel message the server publishes after the SUBACK on a
 * topic the same subscription matches. Mosquitto queues a subscription's retained messages before anything
 * published after it, so the sentinel arrives last; on a broker that reorders, a retained message seen after
 * the sentinel is missed and its target published again — the same signed version, which agents ignore.
 * QoS 0 because Mosquitto drops QoS 1 messages beyond `max_queued_messages` (1000) for a client, and a fleet
 * retains one target per device.
 */
import { randomBytes } from 'node:crypto';
import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { type SignedTarget, SignedTargetSchema } from '../transport/messages.js';
import { groupTargetTopic, prefix } from '../transport/topics.js';

export type RetainedTargets = Map<string, number>;

/** The target topics of a fleet, as MQTT filters. */
export function targetFilters(fleet: string): string[] {
  const base = prefix(fleet);
  return [`${base}/devices/+/target`, `${base}/groups/+/target`];
}

/** topic → version of a retained signed target (a payload that is not one is left out: it gets replaced). */
export function versionOf(payload: Buffer): number | undefined {
  if (payload.length === 0) return undefined;
  try {
    const r = SignedTargetSchema.safeParse(JSON.parse(payload.toString('utf8')));
    return r.success ? (r.data as SignedTarget).target.version : undefined;
  } catch {
    return undefined;
  }
}

export function collect(messages: Iterable<{ topic: string; payload: Buffer }>): RetainedTargets {
  const out: RetainedTargets = new Map();
  for (const m of messages) {
    const v = versionOf(m.payload);
    if (v !== undefined) out.set(m.topic, v);
  }
  return out;
}

/** The MQTT link the server reads with (MqttConnection fits). */
export interface RetainedLink {
  subscribe(filter: string, qos: 0 | 1): Promise<void>;
  unsubscribe(filter: string): void;
  publish(topic: string, payload: Buffer | string, opts: { qos: 0 | 1; retain?: boolean }): Promise<void>;
  on(event: 'message', fn: (topic: string, payload: Buffer) => void): unknown;
  off(event: 'message', fn: (topic: string, payload: Buffer) => void): unknown;
}

/**
 * Read an external broker's retained targets over `link`. Undefined when the sentinel did not come back
 * within `timeoutMs` (then the caller publishes everything, as before).
 */
export async function readRetainedTargets(
  link: RetainedLink,
  fleet: string,
  log: Logger,
  timeoutMs = 30_000,
): Promise<RetainedTargets | undefined> {
  const filters = targetFilters(fleet);
  const sentinel = groupTargetTopic(fleet, `berth-sync-${randomBytes(8).toString('hex')}`);
  const marker = Buffer.from(`sync ${randomBytes(8).toString('hex')}`);
  const seen: Array<{ topic: string; payload: Buffer }> = [];
  let done: (() => void) | undefined;
  const onMessage = (topic: string, payload: Buffer) => {
    if (topic === sentinel && payload.equals(marker)) done?.();
    else if (topic !== sentinel) seen.push({ topic, payload });
  };
  link.on('message', onMessage);
  let timer: NodeJS.Timeout | undefined;
  try {
    for (const f of filters) await link.subscribe(f, 0);
    const arrived = new Promise<boolean>((resolve) => {
      done = () => resolve(true);
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    await link.publish(sentinel, marker, { qos: 0, retain: false });
    if (!(await arrived)) {
      log.warn({ timeoutMs }, 'the broker did not echo the retained-target scan; publishing every target');
      return undefined;
    }
    return collect(seen);
  } catch (err) {
    log.warn({ err: errorMessage(err) }, 'reading the retained targets failed; publishing every target');
    return undefined;
  } finally {
    if (timer) clearTimeout(timer);
    link.off('message', onMessage);
    for (const f of filters) link.unsubscribe(f);
  }
}
