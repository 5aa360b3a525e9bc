import { z } from 'zod';
import { UPDATE_PHASES } from '../core/self-update.js';
import { isSafeName } from '../lib/ids.js';

/**
 * What devices report, as the fleet server decodes it (pure): the retained reported state, events and
 * metrics from the agent's outbox, and device info. Each is size-capped before parsing (decodeJson) and
 * checked here before anything is stored. The agent builds these in src/core/report.ts and
 * src/agent/reporter.ts; docs/protocol.md describes them.
 */
/** Size caps, checked before JSON.parse: reported state (many apps), and everything else a device reports. */
export const MAX_STATE_BYTES = 256 * 1024;
export const MAX_REPORT_BYTES = 64 * 1024;

const safeName = z.string().refine(isSafeName, { message: 'expected 1-128 of [A-Za-z0-9_.-]' });
const text = (max: number) => z.string().max(max);
/**
 * A device's time, ms since the epoch: a JavaScript Date ends at 8.64e15 ms, and a time past it (a broken
 * clock, or on purpose) would make every page that shows it fail to render the date.
 */
const epochMs = z.number().int().min(0).max(8_640_000_000_000_000);

/**
 * Where an applied target came from: a device's own target, one of its groups', or a file on the device
 * (`local`). The version is the one the operator deployed for that scope.
 */
export const TargetRefSchema = z
  .object({
    kind: z.enum(['device', 'group', 'local']),
    id: text(128),
    version: z.number().int().nonnegative(),
  })
  .strict();
export type TargetRef = z.infer<typeof TargetRefSchema>;

export const ServiceReportSchema = z
  .object({
    image: text(512),
    state: z.enum(['running', 'stopped', 'created', 'absent', 'updating']),
    health: z.enum(['none', 'starting', 'healthy', 'unhealthy']),
    restarts: z.number().int().nonnegative(),
    containerId: text(128).optional(),
    exitCode: z.number().int().optional(),
    lastError: text(4096).optional(),
  })
  .strict();

export const AppReportSchema = z
  .object({
    status: text(32),
    lastError: text(4096).optional(),
    services: z.record(safeName, ServiceReportSchema),
  })
  .strict();

export const ReportedStateSchema = z
  .object({
    schema: z.literal(1),
    target: z
      .object({
        /** the applied target (null: none yet) */
        applied: TargetRefSchema.nullable(),
        status: text(32).nullable(),
        reason: text(4096).optional(),
        /** the target this one replaced (what a rollback returns to) */
        previous: TargetRefSchema.nullable(),
        waiting: z.array(text(1024)).max(64).optional(),
        /** the agent's next reconcile try after a failed or waiting one (docs/agent.md) */
        retry: z
          .object({
            at: epochMs,
            attempt: z.number().int().nonnegative(),
            lastError: text(4096).optional(),
          })
          .strict()
          .optional(),
      })
      .strict(),
    apps: z.record(safeName, AppReportSchema),
    /** the agent itself: its version and where its latest self-update stands (docs/self-update.md) */
    agent: z
      .object({
        version: text(64),
        update: z
          .object({
            version: text(64),
            phase: z.enum(UPDATE_PHASES),
            from: text(64).optional(),
            reason: text(4096).optional(),
            progress: z
              .object({ done: z.number().nonnegative(), total: z.number().nonnegative() })
              .strict()
              .optional(),
            at: epochMs,
          })
          .strict()
          .optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((s) => Object.keys(s.apps).length <= 64, { message: 'at most 64 apps' });
export type WireReportedState = z.infer<typeof ReportedStateSchema>;

/** One event from the agent's outbox: a type and a time; the rest is kept as the device sent it. */
export const EventSchema = z
  .object({
    type: z.string().regex(/^[a-z][a-z0-9-]{0,63}$/),
    at: epochMs.optional(),
    seq: z.number().int().nonnegative().optional(),
  })
  .passthrough();
export type WireEvent = z.infer<typeof EventSchema>;

/**
 * The agent refused a target sent to it (wrong key, bad schema, wrong topic, a replay): the fleet shows the
 * device as `rejected` and `deploy --wait` fails for it. The scope and version are as the (unverified)
 * target claimed them, so they may be absent for a message that did not even parse.
 */
export const TargetRejectedSchema = z
  .object({
    type: z.literal('target-rejected'),
    scope: z
      .object({ kind: z.enum(['device', 'group']), id: safeName })
      .strict()
      .optional(),
    version: z.number().int().nonnegative().optional(),
    reason: text(4096),
  })
  .passthrough();

/** A metrics sample: numbers at any depth (flattened by the fleet), a time. */
export const MetricsSchema = z
  .object({
    at: epochMs,
    seq: z.number().int().nonnegative().optional(),
  })
  .passthrough();

/** Device info (os, cpu, memory, disks, network): kept as sent, so only its shape at the top is checked. */
export const InfoSchema = z.object({}).passthrough();
