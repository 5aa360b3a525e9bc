import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { invalidInput, notFound } from '../lib/errors.js';

/**
 * Fleet signatures: ed25519 over a canonical JSON encoding (for targets) or over fixed binary layouts
 * (for chunk plans). Canonical JSON: object keys sorted by UTF-16 code unit, no whitespace, strings and
 * numbers as JSON.stringify writes them, no undefined, no non-finite numbers — the same value always gives
 * the same bytes. Keys are PEM (PKCS#8 private, SPKI public); the key id is the first 16 hex digits of
 * sha256(SPKI DER), so an agent can say which key a rejected target was signed with.
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw invalidInput('canonical JSON cannot encode a non-finite number');
      return JSON.stringify(value);
    case 'string':
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(',')}]`;
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj)
        .filter((k) => obj[k] !== undefined)
        .sort();
      return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
    }
    default:
      throw invalidInput(`canonical JSON cannot encode a ${typeof value}`);
  }
}

export interface FleetKeyPair {
  privateKeyPem: string;
  publicKeyPem: string;
}

export function generateFleetKey(): FleetKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
  };
}

export function loadPrivateKey(pem: string): KeyObject {
  try {
    const k = createPrivateKey(pem);
    if (k.asymmetricKeyType !== 'ed25519') throw new Error(`key type ${k.asymmetricKeyType}`);
    return k;
  } catch (err) {
    throw invalidInput(`fleet private key is not an ed25519 PEM key: ${(err as Error).message}`);
  }
}

export function loadPublicKey(pem: string): KeyObject {
  try {
    const k = createPublicKey(pem);
    if (k.asymmetricKeyType !== 'ed25519') throw new Error(`key type ${k.asymmetricKeyType}`);
    return k;
  } catch (err) {
    throw invalidInput(`fleet public key is not an ed25519 PEM key: ${(err as Error).message}`);
  }
}

/**
 * A public key given as PEM text or as a path to a PEM file (config mqtt.fleetPublicKey). Here, not in
 * src/fleet: the device agent verifies with it and never loads fleet-server code.
 */
export async function resolvePublicKey(value: string): Promise<KeyObject> {
  if (value.includes('-----BEGIN')) return loadPublicKey(value);
  try {
    return loadPublicKey(await fsp.readFile(value, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw notFound(`fleet public key file ${value} not found`);
    throw err;
  }
}

export function keyId(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const der = pub.export({ format: 'der', type: 'spki' });
  return createHash('sha256').update(der).digest('hex').slice(0, 16);
}

export function signBytes(privateKey: KeyObject, data: Buffer): Buffer {
  return sign(null, data, privateKey);
}

export function verifyBytes(publicKey: KeyObject, data: Buffer, signature: Buffer): boolean {
  if (signature.length !== 64) return false;
  try {
    return verify(null, data, publicKey, signature);
  } catch {
    return false;
  }
}
