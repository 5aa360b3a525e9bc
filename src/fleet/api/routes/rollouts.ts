/**
 * Staged rollouts (issue 12): read (viewer), create/validate and the operator's actions (operator), each
 * audited. Progress also streams on GET /events/stream as `rollout`, `rollout.progress` and `rollout.device`
 * events (docs/rollouts.md).
 */
import type { ApiDeps } from '../deps.js';
import { route } from '../route.js';
import {
  RolloutAbort,
  RolloutCreate,
  RolloutDevicePage,
  RolloutDeviceQuery,
  RolloutPage,
  RolloutParams,
  RolloutPreviewSchema,
  RolloutQuery,
  RolloutSchema,
  RolloutValidate,
} from '../schemas.js';

const describeBody = (b: { group?: string; selector?: string; devices?: string[]; all?: true }) =>
  b.group !== undefined
    ? `group ${b.group}`
    : b.selector !== undefined
      ? `labels ${b.selector}`
      : b.devices !== undefined
        ? `${b.devices.length} devices`
        : 'all devices';

export function rolloutRoutes(d: ApiDeps) {
  const action = (name: 'start' | 'pause' | 'resume' | 'approve', summary: string) =>
    route({
      method: 'post',
      path: `/rollouts/{id}/${name}`,
      tag: 'rollouts',
      summary,
      description:
        'A rollout in a state this does not apply to is a 409 naming its state; nothing is published.',
      auth: 'operator',
      audit: `rollout.${name}`,
      params: RolloutParams,
      response: RolloutSchema,
      handler: ({ actor, params }) => d.ops.rolloutAction(actor, params.id, name),
    });
  return [
    route({
      method: 'get',
      path: '/rollouts',
      tag: 'rollouts',
      summary: 'Rollouts, newest first',
      auth: 'viewer',
      query: RolloutQuery,
      response: RolloutPage,
      handler: ({ actor, query }) => d.ops.rollouts(actor, query),
    }),
    route({
      method: 'get',
      path: '/rollouts/{id}',
      tag: 'rollouts',
      summary: 'One rollout with its per-phase counts',
      auth: 'viewer',
      params: RolloutParams,
      response: RolloutSchema,
      handler: ({ actor, params }) => d.ops.rollout(actor, params.id),
    }),
    route({
      method: 'get',
      path: '/rollouts/{id}/devices',
      tag: 'rollouts',
      summary: "A rollout's devices in its order: phase, outcome, what it was sent and what it ran before",
      auth: 'viewer',
      params: RolloutParams,
      query: RolloutDeviceQuery,
      response: RolloutDevicePage,
      handler: ({ actor, params, query }) => d.ops.rolloutDevices(actor, params.id, query),
    }),
    route({
      method: 'post',
      path: '/rollouts/validate',
      tag: 'rollouts',
      summary:
        'Every pre-check of a rollout without storing it: selection, phase sizes, images and platforms',
      auth: 'operator',
      audit: 'rollout.validate',
      body: RolloutValidate,
      maxBody: 2 * 1024 * 1024,
      response: RolloutPreviewSchema,
      handler: ({ actor, body, auditTarget }) => {
        auditTarget(describeBody(body));
        return d.ops.validateRollout(actor, body);
      },
    }),
    route({
      method: 'post',
      path: '/rollouts',
      tag: 'rollouts',
      summary: 'Create a rollout and start it (unless draft)',
      description:
        'Pre-checked first (400/404 naming the problem, nothing stored). A newer rollout holding devices of an ' +
        'active one supersedes it when it starts.',
      auth: 'operator',
      audit: 'rollout.create',
      body: RolloutCreate,
      maxBody: 2 * 1024 * 1024,
      response: RolloutSchema,
      status: 201,
      handler: async ({ actor, body, auditTarget }) => {
        auditTarget(describeBody(body));
        const r = await d.ops.createRollout(actor, body);
        auditTarget(`rollout ${r.id}`);
        return r;
      },
    }),
    action('start', 'Start a draft rollout'),
    action('pause', 'Pause: nothing new is published and no phase starts (errors still abort)'),
    action('resume', 'Resume a paused rollout'),
    action('approve', 'Approve the next phase of a rollout waiting for approval'),
    route({
      method: 'post',
      path: '/rollouts/{id}/abort',
      tag: 'rollouts',
      summary: 'Abort; moved devices get their previous target back unless rollback is false',
      auth: 'operator',
      audit: 'rollout.abort',
      params: RolloutParams,
      body: RolloutAbort,
      response: RolloutSchema,
      handler: ({ actor, params, body }) => d.ops.rolloutAction(actor, params.id, 'abort', body),
    }),
  ];
}
