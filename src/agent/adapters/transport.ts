/**
 * The agent's Transport over its MQTT connection: each channel is a device topic
 * (berth/v1/<fleet>/devices/<id>/{state,info,metrics,event}, see docs/protocol.md), QoS 1. With no broker
 * configured, `offlineTransport` is never online: everything waits in the outbox.
 */
import type { MqttConnection } from '../../transport/connection.js';
import { deviceTopic } from '../../transport/topics.js';
import type { Channel, Transport } from '../ports.js';

export class MqttAgentTransport implements Transport {
  constructor(
    private readonly conn: MqttConnection,
    private readonly fleet: string,
    private readonly deviceId: string,
  ) {}

  get online(): boolean {
    return this.conn.connected;
  }

  publish(channel: Channel, payload: unknown, opts: { retain: boolean }): Promise<void> {
    return this.conn.publish(deviceTopic(this.fleet, this.deviceId, channel), JSON.stringify(payload), {
      qos: 1,
      retain: opts.retain,
    });
  }

  onOnline(cb: () => void): () => void {
    this.conn.on('connect', cb);
    return () => this.conn.off('connect', cb);
  }
}

export const offlineTransport: Transport = {
  online: false,
  publish: () => Promise.reject(new Error('no fleet connection configured')),
  onOnline: () => () => undefined,
};
