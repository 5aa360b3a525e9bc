import type { KeyObject } from 'node:crypto';
import type { DescriptorRef, SignedResolved } from './messages.js';
import { canonicalJson } from './signing.js';
import { checkSignature, signatureOf, type TargetCheck } from './targets.js';

/**
 * Signed `resolved` replies (what an image name means, answered to one request of one device): ed25519
 * over `"berth-resolved-v1\0" + canonicalJson({fleet, deviceId, reqId, name, descriptor})`. The device
 * rebuilds the signed bytes from its own fleet and device id and the request id it picked at random, so
 * a reply made for another device or another request — or by anyone without the fleet key — never
 * verifies, and a rogue client answering first cannot substitute another image.
 */
const DOMAIN = 'berth-resolved-v1\0';

export interface ResolvedBinding {
  fleet: string;
  deviceId: string;
  reqId: string;
  name: string;
  descriptor: DescriptorRef;
}

export function resolvedSigningBytes(b: ResolvedBinding): Buffer {
  const { fleet, deviceId, reqId, name } = b;
  const { mediaType, digest, size } = b.descriptor;
  return Buffer.from(
    DOMAIN + canonicalJson({ fleet, deviceId, reqId, name, descriptor: { mediaType, digest, size } }),
    'utf8',
  );
}

export function signResolved(b: ResolvedBinding, privateKey: KeyObject): SignedResolved {
  const s = signatureOf(resolvedSigningBytes(b), privateKey);
  return {
    v: 2,
    kind: 'resolved',
    reqId: b.reqId,
    name: b.name,
    descriptor: b.descriptor,
    keyId: s.keyId,
    sig: s.sig,
  };
}

/** Whether `reply` is the fleet's answer to this device's request `reqId` for `name`. */
export function verifyResolved(
  reply: SignedResolved,
  expect: { fleet: string; deviceId: string; reqId: string; name: string },
  publicKey: KeyObject,
): TargetCheck {
  if (reply.reqId !== expect.reqId || reply.name !== expect.name)
    return { ok: false, reason: `answers ${reply.reqId}/${reply.name}, not ${expect.reqId}/${expect.name}` };
  const bytes = resolvedSigningBytes({ ...expect, descriptor: reply.descriptor });
  return checkSignature(bytes, { alg: 'ed25519', keyId: reply.keyId, sig: reply.sig }, publicKey);
}
