/**
 * Changing the fleet (operator): labels, revocation, deployments (validate, deploy, clear an override,
 * progress), images (push by upload, delete), enrollment tokens; and the devices' enrollment exchange.
 */
import { type Readable, Transform } from 'node:stream';
import { z } from 'zod/v4';
import { BerthError, invalidInput, isBerthError } from '../../../lib/errors.js';
import { EnrollRequestSchema, EnrollResponseSchema, MAX_ENROLL_BYTES } from '../../../transport/enroll.js';
import { FailureLimiter } from '../../identity/rate-limit.js';
import { deploymentLabel, redeployNote } from '../../services/redeploy.js';
import type { ApiDeps } from '../deps.js';
import { route } from '../route.js';
import {
  DeploymentParams,
  DeploymentSchema,
  DeployRequest,
  DeviceParams,
  DeviceSchema,
  EnrollmentCreate,
  EnrollmentCreated,
  EnrollmentList,
  EnrollmentParams,
  ImageParams,
  ImagePushQuery,
  ImageSchema,
  LabelsPatch,
  LabelsSchema,
  ProgressSchema,
  RedeployRequest,
  ValidationSchema,
} from '../schemas.js';

/** Image archives accepted by POST /images (gzip-compressed or not). */
export const IMAGE_UPLOAD_TYPES = ['application/x-tar', 'application/gzip', 'application/octet-stream'];

export function changeRoutes(d: ApiDeps) {
  const enrollFailures = new FailureLimiter({ max: 20, windowMs: 15 * 60_000 });
  return [
    route({
      method: 'patch',
      path: '/devices/{id}/labels',
      tag: 'devices',
      summary: 'Set and remove labels of a device',
      auth: 'operator',
      audit: 'device.labels',
      params: DeviceParams,
      body: LabelsPatch,
      maxBody: 64 * 1024,
      response: LabelsSchema,
      handler: ({ actor, params, body }) => d.ops.setLabels(actor, params.id, body),
    }),
    route({
      method: 'post',
      path: '/devices/{id}/revoke',
      tag: 'devices',
      summary: 'Revoke a device: its broker credentials go, it is disconnected and refused from then on',
      auth: 'operator',
      audit: 'device.revoke',
      params: DeviceParams,
      response: DeviceSchema,
      handler: ({ actor, params }) => d.ops.revokeDevice(actor, params.id),
    }),
    route({
      method: 'delete',
      path: '/devices/{id}/target',
      tag: 'deployments',
      summary: "Clear a device's own target (override): its groups' targets apply again",
      description: 'Published as a signed clear at the device scope’s next version (retained).',
      auth: 'operator',
      audit: 'deployment.clear',
      params: DeviceParams,
      response: DeploymentSchema,
      handler: ({ actor, params }) => d.ops.clearOverride(actor, params.id),
    }),
    route({
      method: 'post',
      path: '/deployments/validate',
      tag: 'deployments',
      summary: 'Check a deployment without publishing it: schema, images in the fleet, size',
      auth: 'operator',
      audit: 'deployment.validate',
      body: DeployRequest,
      response: ValidationSchema,
      handler: ({ actor, body, auditTarget }) => {
        auditTarget(body.device !== undefined ? `device ${body.device}` : `group ${body.group}`);
        return d.ops.validateDeployment(actor, body);
      },
    }),
    route({
      method: 'post',
      path: '/deployments',
      tag: 'deployments',
      summary: 'Deploy: sign (on the server) and publish a new target version for a device or a group',
      description:
        'A device id the fleet has never seen is refused (404) unless allowUnknown; a revoked device is a 409. ' +
        'Follow the devices with GET /deployments/{id}/progress or the event stream.',
      auth: 'operator',
      audit: 'deployment.create',
      body: DeployRequest,
      response: DeploymentSchema,
      status: 201,
      handler: async ({ actor, body, auditTarget }) => {
        auditTarget(body.device !== undefined ? `device ${body.device}` : `group ${body.group}`);
        const dep = await d.ops.deploy(actor, body);
        auditTarget(dep.text);
        return dep;
      },
    }),
    route({
      method: 'post',
      path: '/deployments/{id}/redeploy',
      tag: 'deployments',
      summary: 'Publish the release of an earlier deployment again, as its scope’s next version',
      description:
        'The apps and the images (pinned to the digests it published) of a published deployment, through the ' +
        'same path as a deploy (a group: a one-phase rollout, `rolloutId`); the agent release the scope names now ' +
        'stays. 404: unknown id, or an image of it no longer in the fleet; 409: a cleared override, a failed or ' +
        'pending deployment, another scope than `device`/`group` names, an image name that now holds other ' +
        'content, or a release the scope runs already. Nothing is published when refused.',
      auth: 'operator',
      audit: 'deployment.redeploy',
      params: DeploymentParams,
      body: RedeployRequest,
      response: DeploymentSchema,
      status: 201,
      handler: async ({ actor, params, body, auditTarget, auditNote }) => {
        auditTarget(`deployment ${params.id}`);
        const dep = await d.ops.redeploy(actor, params.id, body);
        auditTarget(deploymentLabel(dep));
        auditNote(redeployNote(params.id, body.reason));
        return dep;
      },
    }),
    route({
      method: 'get',
      path: '/deployments/{id}/progress',
      tag: 'deployments',
      summary: 'Where every device the deployment concerns stands (what `deploy --wait` polls)',
      auth: 'viewer',
      params: DeploymentParams,
      response: ProgressSchema,
      handler: ({ actor, params }) => d.ops.progress(actor, params.id),
    }),
    route({
      method: 'post',
      path: '/images',
      tag: 'images',
      summary: 'Push an image: upload an oci-archive or docker-archive (optionally gzipped) as the body',
      description:
        'Streamed into the fleet’s content store, every blob verified against its digest as it passes; ' +
        'bounded by the server’s --max-upload. A bad archive leaves nothing behind.',
      auth: 'operator',
      audit: 'image.push',
      query: ImagePushQuery,
      upload: {
        contentTypes: IMAGE_UPLOAD_TYPES,
        description: 'the archive bytes (`skopeo copy … oci-archive:x.tar`, `docker save`)',
      },
      response: ImageSchema,
      status: 201,
      handler: async ({ actor, query, incoming, auditTarget }) => {
        auditTarget(query.tag);
        const type = (incoming.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        if (!IMAGE_UPLOAD_TYPES.includes(type))
          throw invalidInput(
            `content-type: expected one of ${IMAGE_UPLOAD_TYPES.join(', ')}, got ${type || 'none'}`,
          );
        const max = d.maxUploadBytes;
        const declared = Number(incoming.headers['content-length']);
        if (Number.isFinite(declared) && declared > max)
          throw invalidInput(`body: larger than the ${max} byte upload limit`);
        try {
          return await d.ops.pushImage(
            actor,
            { stream: limitStream(incoming, max), name: `upload of ${query.tag}` },
            query.tag,
          );
        } catch (err) {
          // a blob that does not match its digest is bad input here, not a broken server
          if (isBerthError(err, 'Corrupt')) throw new BerthError('InvalidInput', err.message, { cause: err });
          throw err;
        }
      },
    }),
    route({
      method: 'delete',
      path: '/images/{name}',
      tag: 'images',
      summary: 'Forget an image (refused while a current deployment pins it); URL-encode the name',
      auth: 'operator',
      audit: 'image.delete',
      params: ImageParams,
      response: z.null(),
      status: 204,
      handler: ({ actor, params }) => {
        d.ops.deleteImage(actor, params.name);
        return null;
      },
    }),
    route({
      method: 'get',
      path: '/enrollment-tokens',
      tag: 'enrollment',
      summary: 'Enrollment tokens (never their secrets)',
      auth: 'operator',
      response: EnrollmentList,
      handler: async ({ actor }) => ({ items: await d.ops.enrollmentTokens(actor) }),
    }),
    route({
      method: 'post',
      path: '/enrollment-tokens',
      tag: 'enrollment',
      summary: 'Make an enrollment token (groups, labels, expiry, uses); the token is in this answer only',
      auth: 'operator',
      audit: 'enrollment.create',
      body: EnrollmentCreate,
      maxBody: 16 * 1024,
      response: EnrollmentCreated,
      status: 201,
      handler: async ({ actor, body, auditTarget }) => {
        const made = await d.ops.createEnrollmentToken(actor, body);
        auditTarget(made.info.id);
        return made;
      },
    }),
    route({
      method: 'delete',
      path: '/enrollment-tokens/{id}',
      tag: 'enrollment',
      summary: 'Revoke an enrollment token (devices enrolled with it stay)',
      auth: 'operator',
      audit: 'enrollment.revoke',
      params: EnrollmentParams,
      response: z.null(),
      status: 204,
      handler: async ({ actor, params }) => {
        await d.ops.revokeEnrollmentToken(actor, params.id);
        return null;
      },
    }),
    route({
      method: 'post',
      path: '/enroll',
      tag: 'enrollment',
      summary: 'A device exchanges an enrollment token for its MQTT credentials, the fleet key and broker',
      description:
        'Called by `berth agent --enroll`. No user credentials: the enrollment token in the body is the ' +
        'credential (403 when unknown, expired, used up or revoked). Failures are rate-limited per address.',
      auth: 'public',
      audit: 'device.enroll',
      body: EnrollRequestSchema,
      maxBody: MAX_ENROLL_BYTES,
      response: EnrollResponseSchema,
      status: 201,
      handler: async ({ body, source, auditTarget }) => {
        auditTarget(body.deviceId);
        const wait = enrollFailures.retryAfter(source);
        if (wait > 0)
          throw new BerthError(
            'RateLimited',
            `too many failed enrollments from ${source}; try again in ${Math.ceil(wait / 1000)} s`,
            { details: { retryAfterSeconds: Math.ceil(wait / 1000) } },
          );
        try {
          return await d.ops.enroll(body, source);
        } catch (err) {
          enrollFailures.fail(source);
          throw err;
        }
      },
    }),
  ];
}

/** The upload, refused once it passes `max` bytes (a stream error: the import cleans up). */
export function limitStream(src: Readable, max: number): Readable {
  let n = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      if (n > max) return cb(invalidInput(`body: larger than the ${max} byte upload limit`));
      cb(null, chunk);
    },
  });
  src.on('error', (err) => t.destroy(err));
  src.on('aborted', () => t.destroy(invalidInput('body: the upload was cut off')));
  // The limit can trip before the importer reads (one HTTP chunk over it): with no 'error' listener yet
  // that was an uncaught exception that took the fleet server down. The stream keeps its error
  // (`errored`), so the importer still fails with it when it starts reading.
  t.on('error', () => src.unpipe(t));
  return src.pipe(t);
}
