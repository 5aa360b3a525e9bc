import { z } from 'zod';
import { UPDATE_PHASES, VERSION_PATTERN } from '../core/self-update.js';
import { isSafeName } from '../lib/ids.js';
import { type Bounded, parseJsonBounded, plainJsonProblem } from '../lib/json-bounds.js';
import { type Digest, isDigest } from '../oci/digest.js';
import { formatIssues } from '../oci/validate.js';

/**
 * JSON payload schemas for every control topic (pure). Every message carries `v` (schema version, 1);
 * a receiver drops messages that are too large, nested too deep, not UTF-8, not JSON, or fail the
 * schema, with a log line, before anything acts on them (`decodeJson`: every inbound JSON message on
 * every topic goes through it). No schema here is recursive: free-form JSON (a target's `apps`, a command
 * body, a command result) is checked by an explicit-stack walk, so no accepted input can overflow the
 * stack. See docs/protocol.md for which topic carries which message, docs/security.md for why.
 */
export const MESSAGE_VERSION = 1;

/** Size caps per topic kind, checked before JSON.parse. */
export const MAX_CONTROL_BYTES = 64 * 1024;
export const MAX_TARGET_BYTES = 1024 * 1024;
export const MAX_REPLY_BYTES = 4 * 1024 * 1024;
/**
 * Nesting of arrays/objects any message may have, checked on the raw bytes before JSON.parse. A signed
 * target is about 10 deep (envelope, target, apps, app, services, service, healthcheck, probe, command);
 * the fleet refuses to sign deeper ones (the same limit), the agent drops them.
 */
export const MAX_MESSAGE_DEPTH = 32;

const digest = z
  .string()
  .refine(isDigest, { message: 'expected sha256:<64 hex>' }) as unknown as z.ZodType<Digest>;
const safeName = z.string().refine(isSafeName, { message: 'expected 1-128 of [A-Za-z0-9_.-]' });
const reqId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);
const base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/);
/** name:tag or name@digest, as the fleet's image list keys them. */
export const ImageRefSchema = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$/, 'expected name:tag');

export const StatusSchema = z
  .object({
    v: z.literal(1),
    deviceId: safeName,
    state: z.enum(['online', 'offline']),
    at: z.string().max(64),
    platform: z.string().max(64).optional(),
    agentVersion: z.string().max(64).optional(),
    /** where the latest agent self-update stands (docs/self-update.md) */
    agentUpdate: z
      .object({
        version: z.string().max(64),
        phase: z.enum(UPDATE_PHASES),
        reason: z.string().max(1024).optional(),
      })
      .strict()
      .optional(),
    groups: z.array(safeName).max(32).optional(),
    /** the key id of the fleet key the agent verifies targets with */
    keyId: z.string().max(64).optional(),
    target: z
      .object({
        device: z.number().int().nonnegative().optional(),
        group: z.number().int().nonnegative().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();
export type StatusMessage = z.infer<typeof StatusSchema>;

export const TargetScopeSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('device'), id: safeName }).strict(),
  z.object({ kind: z.literal('group'), id: safeName }).strict(),
]);
export type TargetScope = z.infer<typeof TargetScopeSchema>;

/**
 * Plain JSON (the `apps` body is the agent-core schema's business; here it must only be plain JSON) that
 * sits `levelsAbove` objects deep in its message, so the whole message stays within MAX_MESSAGE_DEPTH:
 * what the fleet signs is exactly what the agent's byte scan lets through. Not a recursive zod schema:
 * that is what overflowed the stack on a deep payload before the signature was even looked at (issue 15).
 */
const jsonValue = (levelsAbove: number) =>
  z.unknown().superRefine((v, ctx) => {
    const problem = plainJsonProblem(v, MAX_MESSAGE_DEPTH - levelsAbove);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

/** An agent release version (semver, no build metadata: src/core/self-update.ts). */
export const AgentVersionSchema = z.string().max(64).regex(VERSION_PATTERN, 'expected a version like 1.2.3');

/** A blob of the fleet's content store named by digest and size (fetched with the blob transfer). */
export const BlobRefSchema = z
  .object({
    digest,
    size: z
      .number()
      .int()
      .nonnegative()
      .max(2 ** 40),
  })
  .strict();

/**
 * The agent release a target asks for (docs/self-update.md): its version and the signed release
 * manifest's blob, pinned at deploy time like the images.
 */
export const TargetAgentSchema = z
  .object({
    version: AgentVersionSchema,
    release: BlobRefSchema,
    allowDowngrade: z.boolean().optional(),
  })
  .strict();
export type TargetAgent = z.infer<typeof TargetAgentSchema>;

/** The envelope berth signs. Stable: fields may be added in a new `v`, never repurposed. */
export const TargetSchema = z
  .object({
    v: z.literal(1),
    fleet: safeName,
    scope: TargetScopeSchema,
    version: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
    issuedAt: z.string().datetime(),
    images: z.array(z.object({ name: ImageRefSchema, digest }).strict()).max(256),
    apps: jsonValue(2), // SignedTarget → target → apps
    agent: TargetAgentSchema.optional(),
    /**
     * A signed "this scope has no target any more" (a device override cleared: its groups' targets apply
     * again). Versioned and signed like any target, so it cannot be replayed or forged; `apps` is {}.
     */
    clear: z.literal(true).optional(),
  })
  .strict();
export type Target = z.infer<typeof TargetSchema>;

/** ed25519 over a domain tag + canonical JSON of the signed part (targets.ts, commands.ts). */
export const SignatureSchema = z
  .object({ alg: z.literal('ed25519'), keyId: z.string().max(64), sig: base64.max(128) })
  .strict();
export type Signature = z.infer<typeof SignatureSchema>;

export const SignedTargetSchema = z
  .object({
    v: z.literal(1),
    target: TargetSchema,
    signature: SignatureSchema,
  })
  .strict();
export type SignedTarget = z.infer<typeof SignedTargetSchema>;

/**
 * A remote command for one device (restart, logs, report, purgeVolume: the agent's CommandSchema checks
 * `body`). Signed like targets; valid until `expiresAt`, and run at most once per `id`.
 */
export const CommandEnvelopeSchema = z
  .object({
    v: z.literal(1),
    fleet: safeName,
    deviceId: safeName,
    id: reqId,
    issuedAt: z.string().datetime(),
    expiresAt: z.string().datetime(),
    body: z.intersection(z.record(z.unknown()), jsonValue(2)), // SignedCommand → command → body
  })
  .strict();
export type CommandEnvelope = z.infer<typeof CommandEnvelopeSchema>;

export const SignedCommandSchema = z
  .object({
    v: z.literal(1),
    command: CommandEnvelopeSchema,
    signature: SignatureSchema,
  })
  .strict();
export type SignedCommand = z.infer<typeof SignedCommandSchema>;

/** The device's answer on its `result` topic: the agent's CommandResult, `id` = the command's. */
export const CommandResultSchema = z
  .object({
    id: reqId,
    kind: z.string().max(32),
    ok: z.boolean(),
    result: jsonValue(1).optional(), // CommandResult → result
    error: z
      .object({ code: z.string().max(32), message: z.string().max(4096) })
      .strict()
      .optional(),
  })
  .strict();
export type CommandResultMessage = z.infer<typeof CommandResultSchema>;

/**
 * Blob requests, device → fleet. `v: 2` is what this version sends: `resolve` v2 is answered with a
 * signed `resolved` (bound to the device, the request id and the name), and chunks are asked for with
 * `credit` grants (ranges the fleet may send). `v: 1` requests from older agents are still answered
 * (unsigned `resolved`, `chunks` index lists).
 */
const requestV = z.union([z.literal(1), z.literal(2)]);
/** Chunk ranges one credit grant may name, and chunks per range. */
export const MAX_CREDIT_RANGES = 32;
export const MAX_CREDIT_RANGE = 1024;

export const RequestSchema = z.discriminatedUnion('kind', [
  z.object({ v: requestV, kind: z.literal('resolve'), reqId, name: ImageRefSchema }).strict(),
  z
    .object({
      v: requestV,
      kind: z.literal('plan'),
      reqId,
      digest,
      maxChunk: z
        .number()
        .int()
        .min(1024)
        .max(256 * 1024 * 1024),
    })
    .strict(),
  z
    .object({
      v: z.literal(1),
      kind: z.literal('chunks'),
      reqId,
      digest,
      chunkSize: z.number().int().positive(),
      indexes: z.array(z.number().int().nonnegative()).min(1).max(64),
    })
    .strict(),
  z
    .object({
      v: z.literal(2),
      kind: z.literal('credit'),
      reqId,
      digest,
      chunkSize: z.number().int().positive(),
      /** [first chunk index, count]: the fleet may send these chunks (once). */
      ranges: z
        .array(z.tuple([z.number().int().nonnegative(), z.number().int().min(1).max(MAX_CREDIT_RANGE)]))
        .min(1)
        .max(MAX_CREDIT_RANGES),
    })
    .strict(),
  z.object({ v: requestV, kind: z.literal('want'), reqId, digest, chunkSize: z.number().int() }).strict(),
]);
export type BlobRequest = z.infer<typeof RequestSchema>;

export const DescriptorRefSchema = z
  .object({
    mediaType: z.string().min(1).max(256),
    digest,
    size: z.number().int().nonnegative(),
  })
  .strict();
export type DescriptorRef = z.infer<typeof DescriptorRefSchema>;

export const ReplySchema = z.discriminatedUnion('kind', [
  z
    .object({
      v: z.literal(1),
      kind: z.literal('resolved'),
      reqId,
      name: ImageRefSchema,
      descriptor: DescriptorRefSchema,
    })
    .strict(),
  z
    .object({
      v: z.literal(1),
      kind: z.literal('plan'),
      reqId,
      digest,
      size: z.number().int().nonnegative(),
      chunkSize: z.number().int().positive(),
      hashes: base64,
      keyId: z.string().max(64),
      sig: base64.max(128),
    })
    .strict(),
  z
    .object({
      v: z.literal(1),
      kind: z.literal('fanout'),
      reqId,
      digest,
      mode: z.enum(['stream', 'unicast']),
    })
    .strict(),
  z
    .object({
      v: z.literal(1),
      kind: z.literal('error'),
      reqId,
      code: z.string().max(32),
      message: z.string().max(1024),
    })
    .strict(),
]);
/**
 * `resolved` v2: what a name means, signed by the fleet for this device and this request (resolved.ts,
 * `resolvedSigningBytes`). Its own schema: a v2 `resolved` is a different shape from the v1 one, and
 * a device that asked with `v: 2` accepts nothing else.
 */
export const SignedResolvedSchema = z
  .object({
    v: z.literal(2),
    kind: z.literal('resolved'),
    reqId,
    name: ImageRefSchema,
    descriptor: DescriptorRefSchema,
    keyId: z.string().max(64),
    sig: base64.max(128),
  })
  .strict();
export type SignedResolved = z.infer<typeof SignedResolvedSchema>;
export const AnyReplySchema = z.union([ReplySchema, SignedResolvedSchema]);
export type Reply = z.infer<typeof ReplySchema> | SignedResolved;

export type Decoded<T> = Bounded<T>;

/**
 * Size, UTF-8 and depth check, parse, validate: every inbound JSON message on every topic, on the device
 * and on the fleet (src/lib/json-bounds.ts for the order and why). Never throws.
 */
export function decodeJson<T>(
  schema: z.ZodType<T, z.ZodTypeDef, unknown>,
  payload: Buffer,
  maxBytes: number,
  maxDepth = MAX_MESSAGE_DEPTH,
): Decoded<T> {
  if (!Buffer.isBuffer(payload)) return { ok: false, reason: 'payload is not bytes' };
  const raw = parseJsonBounded(payload, { maxBytes, maxDepth });
  if (!raw.ok) return raw;
  try {
    const res = schema.safeParse(raw.value);
    if (!res.success) return { ok: false, reason: `schema: ${formatIssues(res.error)}` };
    return { ok: true, value: res.data };
  } catch (err) {
    return { ok: false, reason: `schema: ${(err as Error)?.message ?? String(err)}` };
  }
}

export function encodeJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}
