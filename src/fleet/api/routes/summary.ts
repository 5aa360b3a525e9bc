/** The fleet at a glance (the console's overview, `berth fleet` dashboards): counts, not pages. */
import { z } from 'zod/v4';
import type { ApiDeps } from '../deps.js';
import { route } from '../route.js';
import { named } from '../schemas.js';

const Counts = z.array(
  z.strictObject({ key: z.string().nullable().describe('null: not reported'), count: z.number().int() }),
);

export const FleetSummarySchema = named(
  'FleetSummary',
  z.strictObject({
    total: z.number().int().describe('devices not revoked'),
    online: z.number().int(),
    revoked: z.number().int(),
    byStatus: Counts,
    byPlatform: Counts.describe('the 20 biggest'),
    byAgentVersion: Counts.describe('the 20 biggest'),
  }),
);
export type FleetSummary = z.output<typeof FleetSummarySchema>;

export function summaryRoutes(d: ApiDeps) {
  return [
    route({
      method: 'get',
      path: '/summary',
      tag: 'devices',
      summary: 'Device counts by presence, status, platform and agent version (revoked devices apart)',
      auth: 'viewer',
      response: FleetSummarySchema,
      handler: () => d.ops.deps.stores.devices.summary(),
    }),
  ];
}
