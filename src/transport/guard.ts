import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';

/**
 * The last line of defence for inbound MQTT traffic: every `message` listener is called in its own try,
 * and a listener's returned promise gets a catch. A handler that throws or rejects on some message has
 * that message dropped with an error log line naming the topic; the other listeners still get it, and the
 * process never sees the exception. (Every handler validates its input first — decodeJson, decodeFrame —
 * so reaching this is a bug to fix, never a way for a sender to kill an agent or a fleet server.)
 */
export type MessageListener = (topic: string, payload: Buffer) => unknown;

export function deliverGuarded(
  listeners: readonly MessageListener[],
  topic: string,
  payload: Buffer,
  log: Logger,
): void {
  for (const listener of listeners) {
    try {
      const r = listener(topic, payload);
      if (r instanceof Promise) r.catch((err: unknown) => dropped(log, topic, payload, err));
    } catch (err) {
      dropped(log, topic, payload, err);
    }
  }
}

function dropped(log: Logger, topic: string, payload: Buffer, err: unknown): void {
  try {
    log.error(
      { topic, bytes: payload?.length, err: errorMessage(err).slice(0, 500) },
      'message handler failed; message dropped',
    );
  } catch {
    // a logger that throws must not take the process down either
  }
}
