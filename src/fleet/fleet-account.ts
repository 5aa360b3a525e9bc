/**
 * The embedded broker's account for the fleet's own connections — the server's, and the local CLI's on the
 * server's state dir (`fleet deploy`, `fleet state`, `fleet command`): `fleet-account.json`, 0600, made at
 * the first `fleet serve`. It never leaves the state dir; remote operators use the HTTP API.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { readTextIfPresent, writeFileAtomic } from '../lib/atomic.js';
import { corrupt } from '../lib/errors.js';

export const FLEET_ACCOUNT_FILE = 'fleet-account.json';

const AccountSchema = z
  .object({ username: z.string().min(1).max(128), password: z.string().min(16).max(256) })
  .strict();
export type FleetAccount = z.infer<typeof AccountSchema>;

export async function readFleetAccount(stateDir: string): Promise<FleetAccount | undefined> {
  const file = path.join(stateDir, FLEET_ACCOUNT_FILE);
  const text = await readTextIfPresent(file);
  if (text === undefined) return undefined;
  try {
    return AccountSchema.parse(JSON.parse(text));
  } catch (err) {
    throw corrupt(`${file} is not a fleet account file: move it aside and restart fleet serve`, err);
  }
}

export async function loadOrCreateFleetAccount(stateDir: string): Promise<FleetAccount> {
  const have = await readFleetAccount(stateDir);
  if (have) return have;
  const account = { username: 'berth-fleet', password: randomBytes(24).toString('base64url') };
  await fsp.mkdir(stateDir, { recursive: true });
  await writeFileAtomic(path.join(stateDir, FLEET_ACCOUNT_FILE), JSON.stringify(account), 0o600);
  return account;
}
