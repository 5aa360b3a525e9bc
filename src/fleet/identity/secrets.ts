/**
 * Password hashing and bearer secrets for the fleet API, on node:crypto only.
 *
 * Passwords: scrypt (N=2^15, r=8, p=1, 16-byte salt, 32-byte key), stored as
 * `scrypt$N$r$p$<salt b64>$<key b64>` so the cost can rise later without breaking old hashes; compared in
 * constant time. API tokens and session ids are 256-bit random secrets: a fast sha256 of them is stored
 * (they cannot be guessed, so a slow hash buys nothing), compared in constant time too.
 */
import { createHash, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { invalidInput } from '../../lib/errors.js';

const N = 1 << 15;
const R = 8;
const P = 1;
const KEYLEN = 32;
/** scrypt needs 128·N·r bytes; node's default cap (32 MiB) is exactly that, so give it headroom. */
const MAXMEM = 64 * 1024 * 1024;

export const MIN_PASSWORD = 8;
export const MAX_PASSWORD = 1024;

function scryptAsync(password: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, KEYLEN, { N: n, r, p, maxmem: MAXMEM }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
}

export function checkPasswordPolicy(password: string): void {
  if (password.length < MIN_PASSWORD) throw invalidInput(`password: at least ${MIN_PASSWORD} characters`);
  if (password.length > MAX_PASSWORD) throw invalidInput(`password: at most ${MAX_PASSWORD} characters`);
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, N, R, P);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** A hash of nothing anyone knows: checked for unknown user names so their timing matches known ones. */
let dummy: Promise<string> | undefined;
export function dummyPasswordHash(): Promise<string> {
  dummy ??= hashPassword(randomBytes(24).toString('base64'));
  return dummy;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const m = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(stored);
  if (!m) return false;
  const [n, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (n > 1 << 20 || r > 32 || p > 16) return false;
  const want = Buffer.from(m[5]!, 'base64');
  if (want.length !== KEYLEN || password.length > MAX_PASSWORD) return false;
  const got = await scryptAsync(password, Buffer.from(m[4]!, 'base64'), n, r, p);
  return timingSafeEqual(got, want);
}

export function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/** Constant-time equality of two hex/base64 strings (different lengths are simply unequal). */
export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function randomSecret(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

/**
 * API tokens read `berth_<id>_<secret>`: the id (12 hex) finds the row and is safe to show in lists and
 * audit rows; the secret (43 base64url) is only ever shown once.
 */
const TOKEN_RE = /^berth_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

export function newApiToken(): { id: string; secret: string; token: string } {
  const id = randomBytes(6).toString('hex');
  const secret = randomSecret(32);
  return { id, secret, token: `berth_${id}_${secret}` };
}

export function parseApiToken(token: string): { id: string; secret: string } | undefined {
  const m = TOKEN_RE.exec(token);
  return m ? { id: m[1]!, secret: m[2]! } : undefined;
}
