import type { KeyObject } from 'node:crypto';
import { type SignedTarget, type Target, TargetSchema } from './messages.js';
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
  return {
    v: 1,
    target: checked,
    signature: {
      alg: 'ed25519',
      keyId: keyId(privateKey),
      sig: signBytes(privateKey, targetSigningBytes(checked)).toString('base64'),
    },
  };
}

export type TargetCheck = { ok: true } | { ok: false; reason: string };

export function verifyTarget(signed: SignedTarget, publicKey: KeyObject): TargetCheck {
  const expectedKey = keyId(publicKey);
  if (signed.signature.keyId !== expectedKey)
    return {
      ok: false,
      reason: `signed with key ${signed.signature.keyId}, expected fleet key ${expectedKey}`,
    };
  const sig = Buffer.from(signed.signature.sig, 'base64');
  if (!verifyBytes(publicKey, targetSigningBytes(signed.target), sig))
    return { ok: false, reason: 'signature does not verify (tampered or wrongly signed)' };
  return { ok: true };
}
