/**
 * How the fleet gives a device access to its broker and takes it away again — one port, three brokers:
 *   embedded  aedes in `fleet serve`: it reads the credentials from fleet.db at every CONNECT, so adding
 *             is nothing; removing disconnects the device's live connections.
 *   dynsec    Mosquitto with the dynamic security plugin: a client + role per device (src/fleet/dynsec.ts).
 *   external  any other broker, managed by the operator: the fleet hands out no MQTT credentials.
 *   via-server  the local CLI beside a running `fleet serve`: the server does the broker part (it finishes
 *             every revocation it finds in fleet.db within seconds); the CLI waits for it.
 */
import { unavailable, unsupported } from '../../lib/errors.js';
import type { DynsecClient } from '../dynsec.js';

export interface BrokerAccess {
  readonly mode: 'embedded' | 'dynsec' | 'external' | 'via-server';
  /** whether enrolling devices get a username and password from the fleet */
  readonly issuesCredentials: boolean;
  /** make the device's credentials valid on the broker (replaces leftovers) */
  addDevice(deviceId: string, username: string, password: string): Promise<void>;
  /** remove them and cut the device's connections; already gone is fine */
  removeDevice(deviceId: string, username: string): Promise<void>;
}

export function embeddedAccess(
  broker: () => { disconnectDevice(id: string): number } | undefined,
): BrokerAccess {
  return {
    mode: 'embedded',
    issuesCredentials: true,
    addDevice: async () => undefined,
    removeDevice: async (deviceId) => {
      broker()?.disconnectDevice(deviceId);
    },
  };
}

export function dynsecAccess(client: () => DynsecClient): BrokerAccess {
  return {
    mode: 'dynsec',
    issuesCredentials: true,
    addDevice: (deviceId, username, password) => client().addDevice(deviceId, username, password),
    removeDevice: (deviceId, username) => client().removeDevice(deviceId, username),
  };
}

export const externalAccess: BrokerAccess = {
  mode: 'external',
  issuesCredentials: false,
  addDevice: async () => undefined,
  removeDevice: async () => undefined,
};

export function viaServerAccess(o: {
  credentialGone: (deviceId: string) => boolean;
  timeoutMs?: number;
  pollMs?: number;
}): BrokerAccess {
  return {
    mode: 'via-server',
    issuesCredentials: true,
    addDevice: async () => {
      throw unsupported('devices enroll through the fleet server (POST /api/v1/enroll), not the local CLI');
    },
    removeDevice: async (deviceId) => {
      const until = Date.now() + (o.timeoutMs ?? 15_000);
      while (!o.credentialGone(deviceId)) {
        if (Date.now() > until)
          throw unavailable(
            `no running fleet server took ${deviceId}'s broker access away yet; \`fleet serve\` finishes it when it runs`,
          );
        await new Promise((r) => setTimeout(r, o.pollMs ?? 200));
      }
    },
  };
}
