/**
 * Enrollment tokens and per-device MQTT credentials. Secrets never reach this table: a token keeps the
 * sha256 of its secret, a credential the sha256 of its password (both 256 random bits, so a fast hash is
 * as good as a slow one and lets the embedded broker check 10,000 reconnecting devices cheaply).
 *
 * A credential goes pending → active (created on the broker) → revoking → gone; `inFlight()` lists what a
 * crash left half-way, for the recovery pass at start (src/fleet/services/enrollment.ts).
 */
import { tx } from '../../db/database.js';
import { BerthError, conflict, notFound } from '../../lib/errors.js';
import { SqlStore } from './sql.js';

export interface EnrollmentTokenRow {
  id: string;
  groups: string[];
  labels: Record<string, string>;
  expiresAt: number;
  maxUses: number | null;
  uses: number;
  createdAt: number;
  createdBy: string | null;
  revokedAt: number | null;
}

export interface CredentialRow {
  deviceId: string;
  username: string;
  passwordHash: string;
  state: 'pending' | 'active' | 'revoking';
  tokenId: string | null;
  createdAt: number;
  updatedAt: number;
}

interface TokenRow {
  id: string;
  secret_hash: string;
  groups_json: string;
  labels_json: string;
  expires_at: number;
  max_uses: number | null;
  uses: number;
  created_at: number;
  created_by: string | null;
  revoked_at: number | null;
}

const refused = (why: string) => new BerthError('PermissionDenied', `enrollment token refused: ${why}`);

export class EnrollmentStore extends SqlStore {
  // ---- tokens ---------------------------------------------------------------------------------------

  createToken(t: {
    id: string;
    secretHash: string;
    groups: readonly string[];
    labels: Record<string, string>;
    expiresAt: number;
    maxUses: number | null;
    createdBy?: string | undefined;
    now: number;
  }): EnrollmentTokenRow {
    this.stmt(
      `INSERT INTO enrollment_tokens (id, secret_hash, groups_json, labels_json, expires_at, max_uses, created_at, created_by)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      t.id,
      t.secretHash,
      JSON.stringify(t.groups),
      JSON.stringify(t.labels),
      t.expiresAt,
      t.maxUses,
      t.now,
      t.createdBy ?? null,
    );
    return this.token(t.id)!;
  }

  token(id: string): EnrollmentTokenRow | undefined {
    const r = this.stmt('SELECT * FROM enrollment_tokens WHERE id = ?').get(id) as TokenRow | undefined;
    return r ? toToken(r) : undefined;
  }

  /** Newest first; expired ones too (the operator sees why a device could not enroll). */
  tokens(limit = 200): EnrollmentTokenRow[] {
    return (
      this.stmt('SELECT * FROM enrollment_tokens ORDER BY created_at DESC, id LIMIT ?').all(
        limit,
      ) as TokenRow[]
    ).map(toToken);
  }

  revokeToken(id: string, now: number): void {
    const r = this.stmt('UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?').run(
      now,
      id,
    );
    if (r.changes === 0) throw notFound(`no enrollment token ${id}`);
  }

  /**
   * Take one use of a token, atomically: refused (PermissionDenied, with the reason) when it is unknown,
   * its secret does not match (`checkSecret` compares in constant time), it expired, was revoked or is used up.
   */
  consume(id: string, now: number, checkSecret: (secretHash: string) => boolean): EnrollmentTokenRow {
    return tx(this.db, () => {
      const r = this.stmt('SELECT * FROM enrollment_tokens WHERE id = ?').get(id) as TokenRow | undefined;
      // unknown and wrong secret get the same answer: the id alone must not be probeable
      if (!r || !checkSecret(r.secret_hash)) throw refused('unknown token');
      if (r.revoked_at !== null) throw refused(`token ${id} was revoked`);
      if (r.expires_at <= now)
        throw refused(`token ${id} expired at ${new Date(r.expires_at).toISOString()}`);
      if (r.max_uses !== null && r.uses >= r.max_uses)
        throw refused(`token ${id} was used ${r.uses} of ${r.max_uses} times`);
      this.stmt('UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?').run(id);
      return toToken({ ...r, uses: r.uses + 1 });
    });
  }

  /** Give back a use taken by an enrollment that did not complete. */
  refund(id: string): void {
    this.stmt('UPDATE enrollment_tokens SET uses = MAX(uses - 1, 0) WHERE id = ?').run(id);
  }

  // ---- credentials ----------------------------------------------------------------------------------

  /** A new credential, pending until the broker has it. Conflict when the device already has one. */
  addCredential(c: {
    deviceId: string;
    username: string;
    passwordHash: string;
    tokenId: string | null;
    now: number;
  }): void {
    const existing = this.credential(c.deviceId);
    if (existing)
      throw conflict(
        existing.state === 'revoking'
          ? `device ${c.deviceId} is being revoked`
          : `device ${c.deviceId} is already enrolled (revoke it, or enroll under another id)`,
      );
    this.stmt(
      `INSERT INTO device_credentials (device_id, username, password_hash, state, token_id, created_at, updated_at)
       VALUES (?, ?, ?, 'pending', ?, ?, ?)`,
    ).run(c.deviceId, c.username, c.passwordHash, c.tokenId, c.now, c.now);
  }

  setCredentialState(deviceId: string, state: CredentialRow['state'], now: number): void {
    this.stmt('UPDATE device_credentials SET state = ?, updated_at = ? WHERE device_id = ?').run(
      state,
      now,
      deviceId,
    );
  }

  deleteCredential(deviceId: string): void {
    this.stmt('DELETE FROM device_credentials WHERE device_id = ?').run(deviceId);
  }

  credential(deviceId: string): CredentialRow | undefined {
    const r = this.stmt('SELECT * FROM device_credentials WHERE device_id = ?').get(deviceId) as
      | Record<string, unknown>
      | undefined;
    return r ? toCredential(r) : undefined;
  }

  /** The active credential of a broker username (the embedded broker's authentication). */
  activeByUsername(username: string): CredentialRow | undefined {
    const r = this.stmt("SELECT * FROM device_credentials WHERE username = ? AND state = 'active'").get(
      username,
    ) as Record<string, unknown> | undefined;
    return r ? toCredential(r) : undefined;
  }

  /** Credentials a crash left pending or revoking. */
  inFlight(): CredentialRow[] {
    return (
      this.stmt("SELECT * FROM device_credentials WHERE state <> 'active' ORDER BY device_id").all() as Array<
        Record<string, unknown>
      >
    ).map(toCredential);
  }
}

function toToken(r: TokenRow): EnrollmentTokenRow {
  return {
    id: r.id,
    groups: JSON.parse(r.groups_json) as string[],
    labels: JSON.parse(r.labels_json) as Record<string, string>,
    expiresAt: r.expires_at,
    maxUses: r.max_uses,
    uses: r.uses,
    createdAt: r.created_at,
    createdBy: r.created_by,
    revokedAt: r.revoked_at,
  };
}

function toCredential(r: Record<string, unknown>): CredentialRow {
  return {
    deviceId: r.device_id as string,
    username: r.username as string,
    passwordHash: r.password_hash as string,
    state: r.state as CredentialRow['state'],
    tokenId: (r.token_id as string | null) ?? null,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  };
}
