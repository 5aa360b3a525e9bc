/** Devices, events, metrics, images and deployments: what the fleet reported and what was deployed. */
import { z } from 'zod/v4';
import { unavailable } from '../../../lib/errors.js';
import { authenticate } from '../app.js';
import type { ApiDeps } from '../deps.js';
import { route } from '../route.js';
import {
  DeploymentPage,
  DeploymentQuery,
  DeviceDetailSchema,
  DevicePage,
  DeviceParams,
  DeviceQuery,
  EventPage,
  EventQuery,
  EventStreamQuery,
  ImageList,
  MetricQuery,
  MetricsSchema,
} from '../schemas.js';

export function fleetReadRoutes(d: ApiDeps) {
  return [
    route({
      method: 'get',
      path: '/devices',
      tag: 'devices',
      summary: 'A page of devices: filtered, sorted, keyset-paged on the server',
      description:
        'Filters combine (AND). `next` is the cursor of the following page; `total` counts every match.',
      auth: 'viewer',
      query: DeviceQuery,
      response: DevicePage,
      handler: ({ actor, query }) => d.ops.devices(actor, query),
    }),
    route({
      method: 'get',
      path: '/devices/{id}',
      tag: 'devices',
      summary: 'One device: summary, the deployment that applies, services, reported state and info',
      auth: 'viewer',
      params: DeviceParams,
      response: DeviceDetailSchema,
      handler: ({ actor, params }) => d.ops.device(actor, params.id),
    }),
    route({
      method: 'get',
      path: '/devices/{id}/metrics',
      tag: 'metrics',
      summary: 'Time series of one device (downsampled buckets: avg/min/max/last/count)',
      auth: 'viewer',
      params: DeviceParams,
      query: MetricQuery,
      response: MetricsSchema,
      handler: ({ actor, params, query }) => d.ops.metrics(actor, params.id, query),
    }),
    route({
      method: 'get',
      path: '/events',
      tag: 'events',
      summary: 'Event history, newest first (bounded retention), by device and type',
      auth: 'viewer',
      query: EventQuery,
      response: EventPage,
      handler: ({ actor, query }) => d.ops.events(actor, query),
    }),
    route({
      method: 'get',
      path: '/events/stream',
      tag: 'events',
      summary:
        'Live updates as Server-Sent Events: device online/offline, state, events, deployments, progress',
      description:
        'Each SSE `event:` is the bus event type; `data:` its JSON. A `resync` event means this client fell ' +
        'behind and events were dropped: re-read what you show. Comment lines every 15 s keep the ' +
        'connection; a revoked token or ended session closes the stream.',
      auth: 'viewer',
      query: EventStreamQuery,
      stream: true,
      response: z.string(),
      handler: ({ query, incoming, signal }) => {
        if (!d.events) throw unavailable('live events are not available on this server');
        return d.events.stream(
          { types: query.type, deviceId: query.device },
          () => authenticate(incoming, d.identity).actor.role !== null,
          signal,
        );
      },
    }),
    route({
      method: 'get',
      path: '/images',
      tag: 'images',
      summary: 'Images in the fleet (every platform kept)',
      auth: 'viewer',
      response: ImageList,
      handler: ({ actor }) => ({ items: d.ops.images(actor) }),
    }),
    route({
      method: 'get',
      path: '/deployments',
      tag: 'deployments',
      summary: 'Deployments published, newest first, by device or group',
      auth: 'viewer',
      query: DeploymentQuery,
      response: DeploymentPage,
      handler: ({ actor, query }) => d.ops.deployments(actor, query),
    }),
  ];
}
