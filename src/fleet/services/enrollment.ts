/**
 * Enrollment: the operator makes a token (`berth fleet enroll create --group g --labels k=v --expires 1h
 * [--uses N]`); a device exchanges it ONCE (`POST /api/v1/enroll`, authenticated by the token alone) for
 * its own MQTT credentials, the fleet public key, the fleet name and the broker URL.
 *
 * Intent first, nothing half-written: one transaction takes a use of the token, records the credential as
 * `pending` and the device as enrolled; then the broker learns the credential (Mosquitto: a dynsec client +
 * role); then the credential becomes `active`. If the broker step fails, the transaction is undone (the use
 * given back, the rows gone) and the caller gets the error. A crash in between leaves a `pending` row that
 * the recovery pass at start undoes the same way.
 *
 * Secrets: a token is `bet_<id>_<secret>`, a password 256 random bits; only their sha256 is stored (see
 * store/enrollment.ts), and both are shown exactly once.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { type Db, tx } from '../../db/database.js';
import { BerthError, errorMessage, invalidInput, withContext } from '../../lib/errors.js';
import { isSafeName } from '../../lib/ids.js';
import type { Logger } from '../../lib/logger.js';
import { EnrollRequestSchema, type EnrollResponse } from '../../transport/enroll.js';
import type { FleetBus } from '../bus.js';
import { checkLabel } from '../store/devices.js';
import type { EnrollmentTokenRow, FleetStores } from '../store/index.js';
import type { BrokerAccess } from './broker-access.js';

export interface CreateTokenInput {
  groups?: string[] | undefined;
  labels?: Record<string, string> | undefined;
  expiresInMs: number;
  /** how many devices may enroll with it (default: any number until it expires) */
  maxUses?: number | undefined;
  createdBy?: string | undefined;
}

export interface EnrollmentServiceOptions {
  stores: FleetStores;
  fleet: string;
  /** the broker URL devices are told to use */
  brokerUrl: () => string;
  publicKeyPem: string;
  keyId: string;
  access: BrokerAccess;
  bus?: FleetBus | undefined;
  log: Logger;
  now?: () => number;
}

export const MAX_TOKEN_LIFETIME_MS = 365 * 24 * 3600_000;
const TOKEN = /^bet_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

export const sha256Hex = (s: string) => createHash('sha256').update(s).digest('hex');

/** Constant-time comparison of a secret against its stored sha256 (hex). */
export function secretMatches(secret: string, storedHash: string): boolean {
  const a = Buffer.from(sha256Hex(secret), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

export class EnrollmentService {
  private readonly now: () => number;
  private readonly db: Db;

  constructor(private readonly o: EnrollmentServiceOptions) {
    this.now = o.now ?? Date.now;
    this.db = o.stores.db;
  }

  /** A new token; `token` is shown once (only its hash is kept). */
  create(input: CreateTokenInput): { token: string; row: EnrollmentTokenRow } {
    const groups = input.groups ?? [];
    for (const g of groups)
      if (!isSafeName(g)) throw invalidInput(`group ${JSON.stringify(g)}: use 1-128 of [A-Za-z0-9_.-]`);
    if (new Set(groups).size !== groups.length) throw invalidInput('groups: a group is named twice');
    if (groups.length > 32) throw invalidInput('groups: at most 32');
    const labels = input.labels ?? {};
    for (const [k, v] of Object.entries(labels)) checkLabel(k, v);
    if (
      !(
        Number.isFinite(input.expiresInMs) &&
        input.expiresInMs > 0 &&
        input.expiresInMs <= MAX_TOKEN_LIFETIME_MS
      )
    )
      throw invalidInput('expires: a duration from 1 s to 365 days');
    if (input.maxUses !== undefined && !(Number.isInteger(input.maxUses) && input.maxUses >= 1))
      throw invalidInput('uses: a whole number ≥ 1');
    const id = randomBytes(6).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const now = this.now();
    const row = this.o.stores.enrollment.createToken({
      id,
      secretHash: sha256Hex(secret),
      groups,
      labels,
      expiresAt: now + input.expiresInMs,
      maxUses: input.maxUses ?? null,
      createdBy: input.createdBy,
      now,
    });
    this.o.log.info(
      { token: id, groups, expiresAt: row.expiresAt, maxUses: row.maxUses },
      'enrollment token created',
    );
    return { token: `bet_${id}_${secret}`, row };
  }

  list(limit?: number): EnrollmentTokenRow[] {
    return this.o.stores.enrollment.tokens(limit);
  }

  revoke(id: string): void {
    this.o.stores.enrollment.revokeToken(id, this.now());
  }

  /**
   * Exchange a token for the device's access (see the file comment). PermissionDenied for a token that is
   * unknown, wrong, expired, revoked or used up; Conflict for a device id that is taken or was revoked.
   */
  async exchange(raw: unknown, ctx: { remoteAddress?: string | undefined } = {}): Promise<EnrollResponse> {
    const parsed = EnrollRequestSchema.safeParse(raw);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      throw invalidInput(`enroll request: ${i ? `${i.path.join('.') || 'body'}: ${i.message}` : 'invalid'}`);
    }
    const req = parsed.data;
    const m = TOKEN.exec(req.token);
    if (!m) throw new BerthError('PermissionDenied', 'enrollment token refused: unknown token');
    const [, tokenId, secret] = m as unknown as [string, string, string];
    const { stores, access, log } = this.o;
    const password = access.issuesCredentials ? randomBytes(32).toString('base64url') : undefined;
    const username = req.deviceId;
    const now = this.now();

    const { token, existed } = tx(this.db, () => {
      const token = stores.enrollment.consume(tokenId, now, (h) => secretMatches(secret, h));
      const existed = stores.devices.exists(req.deviceId);
      if (password !== undefined)
        stores.enrollment.addCredential({
          deviceId: req.deviceId,
          username,
          passwordHash: sha256Hex(password),
          tokenId,
          now,
        });
      stores.devices.enroll(req.deviceId, { groups: token.groups, labels: token.labels, at: now });
      return { token, existed };
    });

    if (password !== undefined) {
      try {
        await access.addDevice(req.deviceId, username, password);
        stores.enrollment.setCredentialState(req.deviceId, 'active', this.now());
      } catch (err) {
        this.undo(req.deviceId, tokenId, !existed);
        log.warn({ deviceId: req.deviceId, err: errorMessage(err) }, 'enrollment undone: the broker refused');
        throw withContext(`enrolling ${req.deviceId}: the broker did not take the credentials`, err);
      }
    }
    log.info(
      { deviceId: req.deviceId, token: tokenId, from: ctx.remoteAddress, platform: req.platform },
      'device enrolled',
    );
    this.o.bus?.emit({ type: 'device.enrolled', deviceId: req.deviceId, at: this.now() });
    return {
      deviceId: req.deviceId,
      fleet: this.o.fleet,
      broker: this.o.brokerUrl(),
      ...(password !== undefined ? { username, password } : {}),
      fleetPublicKey: this.o.publicKeyPem,
      keyId: this.o.keyId,
      groups: token.groups,
      labels: token.labels,
    };
  }

  private undo(deviceId: string, tokenId: string | null, forgetDevice: boolean): void {
    tx(this.db, () => {
      this.o.stores.enrollment.deleteCredential(deviceId);
      if (tokenId) this.o.stores.enrollment.refund(tokenId);
      if (forgetDevice) this.o.stores.devices.forget(deviceId);
    });
  }

  /**
   * Finish what was interrupted: pending enrollments older than `pendingOlderThanMs` are undone (the device
   * never got its answer: at start, every pending one), revocations are completed (also those the local CLI
   * recorded while this server runs). Returns what it did.
   */
  async recover(o: { pendingOlderThanMs?: number } = {}): Promise<{ undone: string[]; revoked: string[] }> {
    const out = { undone: [] as string[], revoked: [] as string[] };
    const cutoff = this.now() - (o.pendingOlderThanMs ?? 0);
    for (const c of this.o.stores.enrollment.inFlight()) {
      if (c.state === 'pending' && c.updatedAt > cutoff) continue;
      try {
        await this.o.access.removeDevice(c.deviceId, c.username);
        if (c.state === 'pending') {
          this.undo(c.deviceId, c.tokenId, !this.o.stores.devices.get(c.deviceId)?.firstSeen);
          out.undone.push(c.deviceId);
        } else {
          this.o.stores.enrollment.deleteCredential(c.deviceId);
          out.revoked.push(c.deviceId);
        }
      } catch (err) {
        this.o.log.warn(
          { deviceId: c.deviceId, err: errorMessage(err) },
          'credential recovery failed; retried later',
        );
      }
    }
    return out;
  }
}
