import type { KeyObject } from 'node:crypto';
import { type Signature, type SignedTarget, type Target, TargetSchema } from './messages.js';
import { canonicalJson, keyId, signBytes, verifyBytes } from './signing.js';

/**
 * Signed targets. The signature is ed25519 over `"berth-target-v1\0" + canonicalJson(target)`; the domain
 * tag keeps a target signature from ever being valid for another kind of signed bytes (chunk plans).
 */
const DOMAIN = 'berth-target-v1\0';

export function targetSigningBytes(target: Target): Buffer {
  return Buffer.from(DOMAIN + canonicalJson(target), 'utf8');
}

export function signTarget(target: Target, privateKey: KeyObject): SignedTarget {
  const checked = TargetSchema.parse(target);
  return { v: 1, target: checked, signature: signatureOf(targetSigningBytes(checked), privateKey) };
}

export type TargetCheck = { ok: true } | { ok: false; reason: string };

export function signatureOf(bytes: Buffer, privateKey: KeyObject): Signature {
  return { alg: 'ed25519', keyId: keyId(privateKey), sig: signBytes(privateKey, bytes).toString('base64') };
}

/** Whether `signature` over `bytes` is the fleet key's (by key id first, so a wrong key is named). */
export function checkSignature(bytes: Buffer, signature: Signature, publicKey: KeyObject): TargetCheck {
  const expectedKey = keyId(publicKey);
  if (signature.keyId !== expectedKey)
    return { ok: false, reason: `signed with key ${signature.keyId}, expected fleet key ${expectedKey}` };
  if (!verifyBytes(publicKey, bytes, Buffer.from(signature.sig, 'base64')))
    return { ok: false, reason: 'signature does not verify (tampered or wrongly signed)' };
  return { ok: true };
}

export function verifyTarget(signed: SignedTarget, publicKey: KeyObject): TargetCheck {
  return checkSignature(targetSigningBytes(signed.target), signed.signature, publicKey);
}
