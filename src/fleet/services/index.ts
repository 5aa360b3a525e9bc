/**
 * The fleet's services, composed over its stores: one set for `fleet serve` (publisher = the server's MQTT
 * connection, the bus live, the broker's access control) and one for the local CLI on the server's state
 * dir (publisher = a short MQTT link opened on first use). Routes (src/fleet/api/) and CLI commands call
 * these, never SQL.
 */
import type { KeyObject } from 'node:crypto';
import { createPublicKey } from 'node:crypto';
import type { Clock } from '../../agent/ports.js';
import type { ContentStore } from '../../content/store.js';
import type { Logger } from '../../lib/logger.js';
import { keyId } from '../../transport/signing.js';
import { FleetBus } from '../bus.js';
import { RolloutDriver } from '../rollouts/driver.js';
import { RolloutService } from '../rollouts/service.js';
import type { FleetStores } from '../store/index.js';
import { type BrokerAccess, externalAccess } from './broker-access.js';
import { DeployService, type TargetPublisher } from './deploy.js';
import { DeviceService } from './devices.js';
import { EnrollmentService } from './enrollment.js';
import { ReleaseService } from './releases.js';

export interface FleetServices {
  stores: FleetStores;
  bus: FleetBus;
  deploy: DeployService;
  devices: DeviceService;
  enrollment: EnrollmentService;
  releases: ReleaseService;
  rollouts: RolloutService;
  /** `fleet serve` only: the driver that publishes rollouts (started by the server after its first republish) */
  rolloutDriver?: RolloutDriver | undefined;
}

export interface FleetServicesOptions {
  stores: FleetStores;
  /** the fleet's content store (images, agent releases) */
  store: ContentStore;
  fleet: string;
  privateKey: KeyObject;
  publisher: () => TargetPublisher | Promise<TargetPublisher>;
  log: Logger;
  /** how devices get broker access (default: external — no credentials handed out) */
  access?: BrokerAccess | undefined;
  /** the broker URL enrolling devices are told */
  brokerUrl?: (() => string) | undefined;
  bus?: FleetBus | undefined;
  now?: () => number;
  /** run the rollout driver in this process (`fleet serve`; tests pass a fake clock) */
  drive?: { clock?: Clock | undefined; pollMs?: number | undefined } | undefined;
}

export function createFleetServices(o: FleetServicesOptions): FleetServices {
  const bus = o.bus ?? new FleetBus(o.log);
  const access = o.access ?? externalAccess;
  const publicKey = createPublicKey(o.privateKey);
  const common = { stores: o.stores, fleet: o.fleet, log: o.log, bus, ...(o.now ? { now: o.now } : {}) };
  const releases = new ReleaseService({ ...common, store: o.store, privateKey: o.privateKey });
  const deploy = new DeployService({ ...common, privateKey: o.privateKey, publisher: o.publisher, releases });
  const rollouts = new RolloutService({ ...common, deploy });
  // one driver in every process: a group deploy sends its one phase itself (RolloutService.deployGroup);
  // only `fleet serve` (drive) starts it to carry rollouts out
  const driver = new RolloutDriver({
    stores: o.stores,
    deploy,
    service: rollouts,
    bus,
    log: o.log,
    ...o.drive,
  });
  const rolloutDriver = o.drive ? driver : undefined;
  rollouts.driver = driver;
  return {
    stores: o.stores,
    bus,
    releases,
    deploy,
    rollouts,
    rolloutDriver,
    devices: new DeviceService({ ...common, access, publisher: o.publisher }),
    enrollment: new EnrollmentService({
      ...common,
      access,
      brokerUrl: o.brokerUrl ?? (() => ''),
      publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
      keyId: keyId(publicKey),
    }),
  };
}

export type { EnrollRequest, EnrollResponse } from '../../transport/enroll.js';
export type { BrokerAccess } from './broker-access.js';
export type { DeployInput, TargetPublisher } from './deploy.js';
