import type { KeyObject } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { pathExists, writeFileAtomic } from '../lib/atomic.js';
import { conflict, notFound } from '../lib/errors.js';
import { generateFleetKey, keyId, loadPrivateKey, loadPublicKey } from '../transport/signing.js';

/** moved to transport/signing.ts (the agent needs it without fleet code); re-exported for fleet callers */
export { resolvePublicKey } from '../transport/signing.js';

/** The fleet signing key lives in the fleet server's state dir: private 0600, public next to it. */
export const PRIVATE_KEY_FILE = 'fleet-key.pem';
export const PUBLIC_KEY_FILE = 'fleet-key.pub.pem';

export async function keygen(
  stateDir: string,
  force = false,
): Promise<{ keyId: string; publicKeyPem: string; privateFile: string; publicFile: string }> {
  const privateFile = path.join(stateDir, PRIVATE_KEY_FILE);
  const publicFile = path.join(stateDir, PUBLIC_KEY_FILE);
  if (!force && (await pathExists(privateFile)))
    throw conflict(`fleet key ${privateFile} exists; pass --force to replace it`);
  await fsp.mkdir(stateDir, { recursive: true });
  const k = generateFleetKey();
  await writeFileAtomic(privateFile, k.privateKeyPem, 0o600);
  // 0600 like everything in the state dir (src/lib/state-dir.ts); keygen prints it for provisioning
  await writeFileAtomic(publicFile, k.publicKeyPem, 0o600);
  return {
    keyId: keyId(loadPublicKey(k.publicKeyPem)),
    publicKeyPem: k.publicKeyPem,
    privateFile,
    publicFile,
  };
}

export async function loadFleetPrivateKey(stateDir: string): Promise<KeyObject> {
  const file = path.join(stateDir, PRIVATE_KEY_FILE);
  try {
    return loadPrivateKey(await fsp.readFile(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw notFound(`no fleet key at ${file}: run \`berth fleet keygen\` first`);
    throw err;
  }
}
