/**
 * Remote commands to one device (restart, logs, report, purge-volume, retry): signed with the fleet key here —
 * the key never leaves the server — published on the device's `command` topic, answered on its `result`
 * topic, matched by command id and by the device the answer came from.
 *
 * Lifecycle: `new CommandService(opts)` → `start()` (one subscription, `devices/+/result`) → `send()` any
 * number of times, concurrently → `stop()` (pending sends fail with Unavailable).
 */
import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { type Command, CommandSchema } from '../agent/commands.js';
import { BerthError, invalidInput, unavailable } from '../lib/errors.js';
import { assertSafeName } from '../lib/ids.js';
import type { Logger } from '../lib/logger.js';
import { formatIssues } from '../oci/validate.js';
import { signCommand } from '../transport/commands.js';
import { CommandResultSchema, decodeJson, encodeJson, MAX_REPLY_BYTES } from '../transport/messages.js';
import { deviceTopic, parseTopic, prefix } from '../transport/topics.js';

/** The MQTT side a command needs: MqttConnection fits. */
export interface CommandLink {
  publish(topic: string, payload: Buffer, opts: { qos: 0 | 1; retain?: boolean }): Promise<void>;
  subscribe(filter: string, qos: 0 | 1): Promise<void>;
  on(event: 'message', fn: (topic: string, payload: Buffer) => void): unknown;
  off(event: 'message', fn: (topic: string, payload: Buffer) => void): unknown;
}

export interface CommandAnswer {
  id: string;
  deviceId: string;
  kind: string;
  ok: boolean;
  result?: unknown;
  error?: { code: string; message: string } | undefined;
}

export interface SendOptions {
  /** how long to wait for the answer (default 30 s, at most 10 min) */
  timeoutMs?: number | undefined;
  /** the device refuses the command after this many seconds (default 300) */
  expiresS?: number | undefined;
}

interface Pending {
  deviceId: string;
  resolve(a: CommandAnswer): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

const MAX_PENDING = 1000;

/** Check a command body (the agent's schema): a bad one is refused before anything is signed. */
export function parseCommandBody(body: unknown): Command {
  const r = CommandSchema.safeParse(body);
  if (!r.success) throw invalidInput(`command: ${formatIssues(r.error)}`);
  return r.data;
}

export class CommandService {
  private readonly pending = new Map<string, Pending>();
  private readonly onMessage = (topic: string, payload: Buffer) => this.answer(topic, payload);
  private started = false;

  constructor(
    private readonly opts: {
      fleet: string;
      link: CommandLink;
      privateKey: KeyObject;
      log: Logger;
      now?: () => number;
    },
  ) {}

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.opts.link.on('message', this.onMessage);
    await this.opts.link.subscribe(`${prefix(this.opts.fleet)}/devices/+/result`, 1);
  }

  stop(): void {
    this.opts.link.off('message', this.onMessage);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(unavailable(`fleet server stopping; command ${id} abandoned`));
    }
    this.pending.clear();
  }

  async send(deviceId: string, body: unknown, o: SendOptions = {}): Promise<CommandAnswer> {
    assertSafeName('device id', deviceId);
    const command = parseCommandBody(body);
    const timeoutMs = o.timeoutMs ?? 30_000;
    const expiresS = o.expiresS ?? 300;
    if (!(timeoutMs > 0 && timeoutMs <= 600_000)) throw invalidInput('timeout: 1 ms … 10 min');
    if (!(expiresS > 0 && expiresS <= 86_400)) throw invalidInput('expires: 1 s … 24 h');
    if (!this.started) await this.start();
    if (this.pending.size >= MAX_PENDING)
      throw unavailable(`${MAX_PENDING} commands already wait for answers; try again shortly`);
    const id = randomBytes(8).toString('hex');
    const now = (this.opts.now ?? Date.now)();
    const signed = signCommand(
      {
        v: 1,
        fleet: this.opts.fleet,
        deviceId,
        id,
        issuedAt: new Date(now).toISOString(),
        expiresAt: new Date(now + expiresS * 1000).toISOString(),
        body: command as Record<string, unknown>,
      },
      this.opts.privateKey,
    );
    const answer = new Promise<CommandAnswer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new BerthError(
            'Timeout',
            `device ${deviceId} did not answer command ${id} within ${timeoutMs} ms (offline?)`,
          ),
        );
      }, timeoutMs);
      this.pending.set(id, { deviceId, resolve, reject, timer });
    });
    try {
      await this.opts.link.publish(deviceTopic(this.opts.fleet, deviceId, 'command'), encodeJson(signed), {
        qos: 1,
        retain: false,
      });
    } catch (err) {
      const p = this.pending.get(id);
      if (p) clearTimeout(p.timer);
      this.pending.delete(id);
      throw err;
    }
    return answer;
  }

  private answer(topic: string, payload: Buffer): void {
    const t = parseTopic(topic);
    if (t?.kind !== 'device' || t.channel !== 'result' || t.fleet !== this.opts.fleet) return;
    const r = decodeJson(CommandResultSchema, payload, MAX_REPLY_BYTES);
    if (!r.ok) {
      this.opts.log.warn({ topic, reason: r.reason }, 'rejected command result');
      return;
    }
    const p = this.pending.get(r.value.id);
    // An answer counts only from the device the command went to.
    if (!p || p.deviceId !== t.deviceId) return;
    clearTimeout(p.timer);
    this.pending.delete(r.value.id);
    p.resolve({
      id: r.value.id,
      deviceId: t.deviceId,
      kind: r.value.kind,
      ok: r.value.ok,
      ...(r.value.ok ? { result: r.value.result } : { error: r.value.error }),
    });
  }
}
