/**
 * The fleet's services for the local CLI on the fleet server's state dir (a one-machine fleet): the stores
 * of fleet.db, the fleet key from the state dir, and a short MQTT link — to the broker `fleet serve` noted
 * in fleet-serve.json, with the fleet account — opened only when something is published. Revocations are
 * finished by the running server (viaServerAccess). Remote operators use the HTTP API instead.
 */
import * as path from 'node:path';
import { loadFleetPrivateKey } from '../fleet/keys.js';
import { viaServerAccess } from '../fleet/services/broker-access.js';
import { createFleetServices, type FleetServices, type TargetPublisher } from '../fleet/services/index.js';
import { FLEET_DB_FILE, type FleetStores, openFleetStores } from '../fleet/store/index.js';
import { assertSafeName } from '../lib/ids.js';
import type { CliContext } from './context.js';
import { openFleetLink, readServeFile } from './fleet-link.js';
import type { MqttFlags } from './mqtt-options.js';

const opened = new WeakMap<CliContext, FleetStores>();

/** fleet.db of the state dir (opened once per command, closed with it). */
export function fleetStores(c: CliContext): FleetStores {
  let s = opened.get(c);
  if (!s) {
    const stores = openFleetStores(path.join(c.stateDir, FLEET_DB_FILE), { legacy: c.db });
    c.onClose(() => stores.close());
    opened.set(c, stores);
    s = stores;
  }
  return s;
}

export async function localFleet(
  c: CliContext,
  opts: MqttFlags,
): Promise<{ fleet: string; services: FleetServices }> {
  const served = await readServeFile(c.stateDir);
  const fleet = assertSafeName('fleet', opts.fleet ?? served?.fleet ?? c.config.mqtt.fleet);
  const stores = fleetStores(c);
  let link: Promise<TargetPublisher> | undefined;
  const publisher = () => {
    link ??= openFleetLink(c, opts, 'berth-cli').then(({ conn }) => {
      c.onClose(() => conn.close(true));
      return conn;
    });
    return link;
  };
  const services = createFleetServices({
    stores,
    store: c.store,
    fleet,
    privateKey: await loadFleetPrivateKey(c.stateDir),
    publisher,
    log: c.log,
    access: viaServerAccess({ credentialGone: (id) => stores.enrollment.credential(id) === undefined }),
  });
  return { fleet, services };
}
