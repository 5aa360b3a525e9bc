import { Duplex, duplexPair } from 'node:stream';
import { Aedes } from 'aedes';
import type { StreamBuilder } from 'mqtt';
import * as mqttPacket from 'mqtt-packet';

/**
 * berth's embedded broker (aedes) with its clients connected through in-memory duplex pairs, as aedes
 * tests its own clients — no sockets. Every client link can carry a fault policy on the broker → client
 * direction: each MQTT packet the broker sends is parsed and passed, dropped, sent twice, or held back
 * until the next one has passed (reordering). `restart()` drops every link and starts a fresh broker (a
 * broker restart: sessions and retained messages are gone); clients redial through their stream builder.
 */
export type Fault = 'pass' | 'drop' | 'dup' | 'hold';
export type FaultPolicy = (packet: mqttPacket.Packet) => Fault;

export class MemoryBroker {
  private aedes: Aedes | undefined;
  private readonly links = new Set<Duplex>();
  restarts = 0;
  dials = 0;

  static async start(): Promise<MemoryBroker> {
    const b = new MemoryBroker();
    b.aedes = await Aedes.createBroker();
    return b;
  }

  /** A stream builder for MqttConnection: each dial gets a fresh link to the broker of the moment. */
  streamBuilder(policy?: FaultPolicy): StreamBuilder {
    return () => this.link(policy) as unknown as ReturnType<StreamBuilder>;
  }

  private link(policy?: FaultPolicy): Duplex {
    this.dials++;
    const [client, brokerSide] = duplexPair();
    const aedes = this.aedes;
    this.links.add(client);
    this.links.add(brokerSide);
    const drop = () => {
      client.destroy();
      brokerSide.destroy();
      this.links.delete(client);
      this.links.delete(brokerSide);
    };
    client.on('close', drop);
    brokerSide.on('close', drop);
    client.on('error', () => undefined);
    brokerSide.on('error', () => undefined);
    if (!aedes) {
      // The broker is down: the dial fails.
      setImmediate(() => client.destroy(new Error('connect ECONNREFUSED (memory broker down)')));
      return client;
    }
    if (!policy) {
      aedes.handle(brokerSide);
      return client;
    }
    // aedes reads what the client writes as is; what aedes writes is parsed into packets and goes to the
    // client through the policy.
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    let held: Buffer[] = [];
    parser.on('packet', (p: mqttPacket.Packet) => {
      const bytes = mqttPacket.generate(p, { protocolVersion: 4 });
      const f = policy(p);
      if (f === 'drop') return;
      if (f === 'hold') {
        held.push(bytes);
        return;
      }
      brokerSide.write(bytes);
      if (f === 'dup') brokerSide.write(bytes);
      for (const h of held) brokerSide.write(h);
      held = [];
    });
    const toAedes = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        parser.parse(chunk);
        cb();
      },
      final(cb) {
        brokerSide.end();
        cb();
      },
      destroy(err, cb) {
        brokerSide.destroy();
        cb(err);
      },
    });
    toAedes.on('error', () => undefined);
    brokerSide.on('data', (b: Buffer) => toAedes.push(b));
    brokerSide.on('end', () => toAedes.push(null));
    brokerSide.on('close', () => toAedes.destroy());
    aedes.handle(toAedes);
    return client;
  }

  /** Drop every client link (as a broker crash does); with `downUntilStarted`, stay down. */
  crash(): void {
    for (const l of this.links) l.destroy();
    this.links.clear();
    const a = this.aedes;
    this.aedes = undefined;
    a?.close();
  }

  async startAgain(): Promise<void> {
    this.aedes = await Aedes.createBroker();
    this.restarts++;
  }

  async restart(): Promise<void> {
    this.crash();
    await this.startAgain();
  }

  async stop(): Promise<void> {
    this.crash();
  }
}

/** A chunk frame the broker is about to deliver on a device's chunks topic (or a fan-out topic). */
export function isChunkPublish(p: mqttPacket.Packet): p is mqttPacket.IPublishPacket {
  return p.cmd === 'publish' && /\/(chunks|fanout\/[0-9a-f]{64})$/.test(p.topic);
}
