/**
 * Operator changes to devices: labels (`berth fleet device label d1 site=berlin`, `--rm site`) and
 * revocation (`berth fleet device revoke d1`): the device is marked revoked (the embedded broker refuses
 * it from that moment), its broker credentials are removed — which disconnects it — and what it left
 * retained on the broker (status, state, info, its own target) is cleared, so nobody reads a revoked
 * device as online. The ingest ignores anything that still arrives from it; a revoked id cannot enroll
 * again, and deploys to it are refused.
 */
import { tx } from '../../db/database.js';
import { errorMessage, notFound, withContext } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { deviceTopic } from '../../transport/topics.js';
import type { FleetBus } from '../bus.js';
import type { DeviceRow, FleetStores } from '../store/index.js';
import type { BrokerAccess } from './broker-access.js';
import type { TargetPublisher } from './deploy.js';

export interface DeviceServiceOptions {
  stores: FleetStores;
  fleet: string;
  access: BrokerAccess;
  publisher: () => TargetPublisher | Promise<TargetPublisher>;
  bus?: FleetBus | undefined;
  log: Logger;
  now?: () => number;
}

export class DeviceService {
  private readonly now: () => number;

  constructor(private readonly o: DeviceServiceOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Set and remove labels in one go; returns the device's labels after. */
  setLabels(
    deviceId: string,
    set: Record<string, string>,
    remove: readonly string[] = [],
  ): Record<string, string> {
    return this.o.stores.devices.setLabels(deviceId, set, remove);
  }

  async revoke(deviceId: string): Promise<DeviceRow> {
    const { stores, access, log } = this.o;
    const now = this.now();
    const cred = tx(stores.db, () => {
      if (!stores.devices.exists(deviceId)) throw notFound(`no device ${deviceId} in the fleet`);
      stores.devices.markRevoked(deviceId, now);
      const c = stores.enrollment.credential(deviceId);
      if (c) stores.enrollment.setCredentialState(deviceId, 'revoking', now);
      return c;
    });
    try {
      await access.removeDevice(deviceId, cred?.username ?? deviceId);
      if (cred) stores.enrollment.deleteCredential(deviceId);
    } catch (err) {
      // the device is refused by the fleet already; the broker is told again at the next start
      throw withContext(
        `revoked ${deviceId} in the fleet, but the broker could not remove its access yet`,
        err,
      );
    }
    try {
      const pub = await this.o.publisher();
      for (const ch of ['status', 'state', 'info', 'target'] as const)
        await pub.publish(deviceTopic(this.o.fleet, deviceId, ch), Buffer.alloc(0), { qos: 1, retain: true });
    } catch (err) {
      log.warn({ deviceId, err: errorMessage(err) }, 'retained messages of a revoked device not cleared');
    }
    log.info({ deviceId }, 'device revoked');
    this.o.bus?.emit({ type: 'device.revoked', deviceId, at: now });
    return stores.devices.get(deviceId)!;
  }
}
