/**
 * Live updates as Server-Sent Events (`GET /api/v1/events/stream`), fed by the fleet's in-process bus.
 *
 * Each client has its own bounded queue: the bus never waits for a slow client. When a client falls
 * `maxQueue` events behind, its backlog is dropped and it gets one `resync` event (re-read what you show),
 * then the stream goes on. A comment line is sent every `heartbeatMs` so proxies keep the connection, and
 * at each heartbeat the caller's credentials are checked again: a revoked token or ended session closes
 * the stream. At most `maxClients` streams at once (503 beyond).
 */
import { unavailable } from '../../lib/errors.js';

/** What the bus publishes (fleet-core's FleetEvent has at least this). */
export interface BusEvent {
  type: string;
  at: number;
  deviceId?: string | undefined;
}

export interface EventBusLike {
  subscribe(fn: (e: BusEvent) => void): () => void;
}

export interface SseOptions {
  maxQueue?: number;
  heartbeatMs?: number;
  maxClients?: number;
}

export interface StreamFilter {
  types?: string[] | undefined;
  deviceId?: string | undefined;
}

export class SseHub {
  private clients = 0;
  private seq = 0;
  readonly maxQueue: number;
  readonly heartbeatMs: number;
  readonly maxClients: number;

  constructor(
    private readonly bus: EventBusLike,
    o: SseOptions = {},
  ) {
    this.maxQueue = o.maxQueue ?? 1000;
    this.heartbeatMs = o.heartbeatMs ?? 15_000;
    this.maxClients = o.maxClients ?? 200;
  }

  get open(): number {
    return this.clients;
  }

  /**
   * A `text/event-stream` response for one client. `stillAllowed` is asked at each heartbeat; `signal`
   * ends the stream when the client goes away.
   */
  stream(filter: StreamFilter, stillAllowed: () => boolean, signal: AbortSignal): Response {
    if (this.clients >= this.maxClients)
      throw unavailable(`${this.maxClients} event streams are open; try later`);
    this.clients++;
    const enc = new TextEncoder();
    const queue: string[] = [];
    let overflowed = false;
    let wake: (() => void) | undefined;
    let closed = false;
    const types = filter.types?.length ? new Set(filter.types) : undefined;
    const push = (frame: string) => {
      queue.push(frame);
      wake?.();
    };
    const unsubscribe = this.bus.subscribe((e) => {
      if (closed || (types && !types.has(e.type)) || (filter.deviceId && e.deviceId !== filter.deviceId))
        return;
      if (queue.length >= this.maxQueue) {
        queue.length = 0;
        overflowed = true;
      }
      push(`id: ${++this.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
    });
    const heartbeat = setInterval(() => {
      if (!stillAllowed()) return finish();
      push(': ping\n\n');
    }, this.heartbeatMs);
    heartbeat.unref?.();
    let controllerRef: ReadableStreamDefaultController<Uint8Array> | undefined;
    const finish = () => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      unsubscribe();
      this.clients--;
      wake?.();
      try {
        controllerRef?.close();
      } catch {
        /* already closed by the reader */
      }
    };
    signal.addEventListener('abort', finish, { once: true });
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        controllerRef = controller;
        controller.enqueue(enc.encode(`retry: 3000\n: berth fleet events\n\n`));
      },
      pull: async (controller) => {
        while (!closed && queue.length === 0 && !overflowed) await new Promise<void>((r) => (wake = r));
        wake = undefined;
        if (closed) return;
        if (overflowed) {
          overflowed = false;
          controller.enqueue(
            enc.encode(
              `event: resync\ndata: ${JSON.stringify({ reason: 'client too slow; events dropped' })}\n\n`,
            ),
          );
        }
        const batch = queue.splice(0, queue.length).join('');
        if (batch) controller.enqueue(enc.encode(batch));
      },
      cancel: () => finish(),
    });
    return new Response(body, {
      status: 200,
      headers: {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        'x-accel-buffering': 'no',
        connection: 'keep-alive',
      },
    });
  }
}
