/**
 * The enrollment exchange on the wire (pure): what a device sends to `POST /api/v1/enroll` and what the
 * fleet answers, once, per enrollment token use. Shared by the fleet's enrollment service and the
 * agent's client (src/agent/enroll.ts). zod v4, so the HTTP side's OpenAPI document is generated from it.
 */
import { z } from 'zod/v4';
import { isSafeName } from '../lib/ids.js';

const safeName = z
  .string()
  .refine(isSafeName, { message: 'expected 1-128 of [A-Za-z0-9_.-], not starting with . or -' });

/** The body of `POST /api/v1/enroll`. */
export const EnrollRequestSchema = z
  .object({
    token: z.string().min(1).max(256),
    /** the id the device wants (default on the device: its hostname); refused when taken */
    deviceId: safeName,
    platform: z.string().max(64).optional(),
    agentVersion: z.string().max(64).optional(),
  })
  .strict();
export type EnrollRequest = z.infer<typeof EnrollRequestSchema>;

export const EnrollResponseSchema = z
  .object({
    deviceId: z.string(),
    fleet: z.string(),
    broker: z.string(),
    /** absent when the broker is managed outside the fleet (no credentials are handed out) */
    username: z.string().optional(),
    password: z.string().optional(),
    fleetPublicKey: z.string(),
    keyId: z.string(),
    groups: z.array(z.string()),
    labels: z.record(z.string(), z.string()),
  })
  .strict();
export type EnrollResponse = z.infer<typeof EnrollResponseSchema>;

/** Bodies are small; the client refuses a larger answer, the server a larger request. */
export const MAX_ENROLL_BYTES = 16 * 1024;
