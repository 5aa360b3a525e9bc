/**
 * Mosquitto's dynamic security plugin, driven over MQTT (`$CONTROL/dynamic-security/v1`, answers on
 * `…/v1/response` matched by correlationData). Checked against Debian's mosquitto 2.0.11: createRole,
 * addRoleACL (subscribeLiteral/subscribePattern/publishClientSend/publishClientReceive), createClient with
 * roles, deleteClient (which disconnects the client at once), deleteRole, getClient. Changing a role's ACLs
 * or a client's roles disconnects the clients that hold it — so the fleet account's own role is set up on
 * a short connection of its own before the server's main connection starts (`ensureFleetRole`).
 *
 * One client + one role per device (`berth-<fleet>-device-<id>`), created at enrollment and removed at
 * revocation; the ACLs are acl.ts's rules written out for that device.
 */
import { randomBytes } from 'node:crypto';
import { BerthError, unavailable } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { MqttConnection, type MqttConnectionOptions } from '../transport/connection.js';
import { deviceAcls, fleetAcls } from './acl.js';

const CONTROL = '$CONTROL/dynamic-security/v1';
const RESPONSE = `${CONTROL}/response`;

export interface DynsecLink {
  publish(topic: string, payload: Buffer | string, opts: { qos: 0 | 1 }): Promise<void>;
  subscribe(filter: string, qos?: 0 | 1): Promise<void>;
  on(event: 'message', fn: (topic: string, payload: Buffer) => void): unknown;
  off(event: 'message', fn: (topic: string, payload: Buffer) => void): unknown;
}

export interface DynsecCommand {
  command: string;
  [k: string]: unknown;
}

interface DynsecResponse {
  command: string;
  error?: string;
  data?: unknown;
  correlationData?: string;
}

/** Errors that mean "already so": creating what exists, deleting what is gone. */
const ALREADY = /already exists|not found/i;

export function deviceRoleName(fleet: string, deviceId: string): string {
  return `berth-${fleet}-device-${deviceId}`;
}

export function fleetRoleName(fleet: string): string {
  return `berth-${fleet}-fleet`;
}

export class DynsecClient {
  private readonly waiting = new Map<string, (r: DynsecResponse) => void>();
  private subscribed = false;
  private readonly onMessage = (topic: string, payload: Buffer) => {
    if (topic !== RESPONSE || payload.length > 1024 * 1024) return;
    let body: { responses?: DynsecResponse[] };
    try {
      body = JSON.parse(payload.toString('utf8'));
    } catch {
      return;
    }
    for (const r of body.responses ?? []) {
      if (typeof r?.correlationData !== 'string') continue;
      const w = this.waiting.get(r.correlationData);
      if (w) {
        this.waiting.delete(r.correlationData);
        w(r);
      }
    }
  };

  constructor(
    private readonly link: DynsecLink,
    private readonly o: { fleet: string; log: Logger; timeoutMs?: number },
  ) {
    link.on('message', this.onMessage);
  }

  close(): void {
    this.link.off('message', this.onMessage);
  }

  /**
   * Run commands in order, in one message; every answer is awaited. `tolerate` errors matching ALREADY
   * (idempotent create/delete). Throws Unavailable when the broker does not answer, Internal on a refusal.
   */
  async run(commands: DynsecCommand[], o: { tolerate?: boolean } = {}): Promise<DynsecResponse[]> {
    if (!this.subscribed) {
      await this.link.subscribe(RESPONSE, 1);
      this.subscribed = true;
    }
    const tagged = commands.map((c) => ({ ...c, correlationData: randomBytes(8).toString('hex') }));
    const timeoutMs = this.o.timeoutMs ?? 10_000;
    const answers = tagged.map(
      (c) =>
        new Promise<DynsecResponse>((resolve, reject) => {
          const t = setTimeout(() => {
            this.waiting.delete(c.correlationData);
            reject(
              unavailable(
                `the broker's dynamic security plugin did not answer ${c.command} within ${timeoutMs} ms (is mosquitto_dynamic_security.so loaded, and may this account use $CONTROL/dynamic-security?)`,
              ),
            );
          }, timeoutMs);
          this.waiting.set(c.correlationData, (r) => {
            clearTimeout(t);
            resolve(r);
          });
        }),
    );
    await this.link.publish(CONTROL, JSON.stringify({ commands: tagged }), { qos: 1 });
    const res = await Promise.all(answers);
    for (const r of res) {
      if (!r.error) continue;
      if (o.tolerate && ALREADY.test(r.error)) continue;
      throw new BerthError('Internal', `mosquitto dynamic security refused ${r.command}: ${r.error}`);
    }
    return res;
  }

  /** The device's client and role, replacing any left over by a crash. */
  async addDevice(deviceId: string, username: string, password: string): Promise<void> {
    const role = deviceRoleName(this.o.fleet, deviceId);
    await this.removeDevice(deviceId, username);
    await this.run([
      {
        command: 'createRole',
        rolename: role,
        textname: `berth device ${deviceId} of fleet ${this.o.fleet}`,
      },
      ...deviceAcls(this.o.fleet, deviceId).map((a) => ({ command: 'addRoleACL', rolename: role, ...a })),
      {
        command: 'createClient',
        username,
        password,
        textname: `berth device ${deviceId}`,
        roles: [{ rolename: role }],
      },
    ]);
  }

  /** Delete the device's client (the broker disconnects it at once) and its role; gone already is fine. */
  async removeDevice(deviceId: string, username: string): Promise<void> {
    await this.run(
      [
        { command: 'deleteClient', username },
        { command: 'deleteRole', rolename: deviceRoleName(this.o.fleet, deviceId) },
      ],
      { tolerate: true },
    );
  }
}

/**
 * Give the fleet's own account (the one `fleet serve --username` connects with, which must be a dynsec
 * admin, e.g. the one `mosquitto_ctrl dynsec init` creates) the fleet role: everything under
 * berth/v1/<fleet>/. Done once, on its own short connection, because the broker disconnects an account
 * whose roles change. Idempotent: nothing changes when the role is already there.
 */
export async function ensureFleetRole(
  mqtt: Omit<MqttConnectionOptions, 'clientId' | 'log' | 'will'>,
  o: { fleet: string; log: Logger; timeoutMs?: number },
): Promise<boolean> {
  if (!mqtt.username)
    throw unavailable('Mosquitto dynamic security needs the fleet account: pass --username/--password');
  const conn = new MqttConnection({
    ...mqtt,
    clientId: `berth-fleet-setup-${randomBytes(4).toString('hex')}`,
    log: o.log,
  });
  const dyn = new DynsecClient(conn, o);
  try {
    await Promise.race([conn.start(), conn.waitConnected(o.timeoutMs ?? 15_000)]);
    const role = fleetRoleName(o.fleet);
    const [got] = await dyn.run([{ command: 'getClient', username: mqtt.username }]);
    const roles = (
      (got?.data as { client?: { roles?: Array<{ rolename: string }> } })?.client?.roles ?? []
    ).map((r) => r.rolename);
    if (roles.includes(role)) return false;
    await dyn.run([{ command: 'createRole', rolename: role, textname: `berth fleet ${o.fleet} servers` }], {
      tolerate: true,
    });
    await dyn.run(
      fleetAcls(o.fleet).map((a) => ({ command: 'addRoleACL', rolename: role, ...a })),
      { tolerate: true },
    );
    // the broker disconnects us for this before it answers: send, see the link drop, reconnect, check
    const dropped = new Promise<void>((resolve) => conn.once('disconnect', () => resolve()));
    await conn
      .publish(
        CONTROL,
        JSON.stringify({ commands: [{ command: 'addClientRole', username: mqtt.username, rolename: role }] }),
        { qos: 1 },
      )
      .catch(() => undefined); // the PUBACK may not come: the broker cut the link first
    await Promise.race([dropped, new Promise((r) => setTimeout(r, 2000))]);
    await conn.waitConnected(o.timeoutMs ?? 15_000);
    const [again] = await dyn.run([{ command: 'getClient', username: mqtt.username }]);
    const now = (
      (again?.data as { client?: { roles?: Array<{ rolename: string }> } })?.client?.roles ?? []
    ).map((r) => r.rolename);
    if (!now.includes(role))
      throw new BerthError('Internal', `could not give ${mqtt.username} the role ${role}`);
    o.log.info({ role, username: mqtt.username }, 'fleet role set up on the broker (dynamic security)');
    return true;
  } finally {
    dyn.close();
    await conn.close(true);
  }
}
