/**
 * The local transport: FleetOperations on the server's own state dir, as the `local` actor (whoever can
 * read the state dir holds the fleet key anyway, so it acts as an admin). Changing calls are audited like
 * API calls, with source `local`.
 */
import { promises as fsp } from 'node:fs';
import type { RolloutAbortBody } from '../api/schemas.js';
import type { Actor } from '../identity/service.js';
import type { FleetOperations } from '../operations.js';
import { deploymentLabel, redeployNote } from '../services/redeploy.js';
import type {
  DeviceListQuery,
  FleetClient,
  MetricListQuery,
  RolloutDeviceListQuery,
  RolloutListQuery,
} from './client.js';

export class LocalFleetClient implements FleetClient {
  readonly where: string;

  constructor(
    private readonly ops: FleetOperations,
    private readonly actor: Actor,
    o: { stateDir: string; close?: () => Promise<void> | void },
  ) {
    this.where = `state dir ${o.stateDir}`;
    this.closeFn = o.close;
  }

  private readonly closeFn: (() => Promise<void> | void) | undefined;

  /** Run a changing call and write its audit row, whatever the outcome. */
  private async audited<T>(
    action: string,
    target: string | null,
    fn: () => T | Promise<T>,
    done?: (out: T) => { target?: string; note?: string },
  ): Promise<T> {
    let result = 'ok';
    let message: string | null = null;
    try {
      const out = await fn();
      const after = done?.(out);
      if (after?.target !== undefined) target = after.target;
      if (after?.note !== undefined) message = after.note;
      return out;
    } catch (err) {
      result = (err as { code?: string }).code ?? 'Internal';
      message = (err as Error).message ?? String(err);
      throw err;
    } finally {
      this.ops.deps.identity.audit({
        actor: `local:${this.actor.name}`,
        role: this.actor.role,
        action,
        target,
        source: 'local',
        result,
        status: null,
        message,
      });
    }
  }

  async whoami() {
    return this.ops.whoami(this.actor);
  }

  async devices(q: DeviceListQuery) {
    return this.ops.devices(this.actor, { sort: 'id', order: 'asc', limit: 50, ...q });
  }
  async device(id: string) {
    return this.ops.device(this.actor, id);
  }
  async events(q: Parameters<FleetClient['events']>[0]) {
    return this.ops.events(this.actor, { limit: 50, ...q });
  }
  async metrics(deviceId: string, q: MetricListQuery) {
    return this.ops.metrics(this.actor, deviceId, q);
  }
  async images() {
    return this.ops.images(this.actor);
  }
  async deployments(q: Parameters<FleetClient['deployments']>[0]) {
    return this.ops.deployments(this.actor, { limit: 50, ...q });
  }

  setLabels(deviceId: string, patch: Parameters<FleetClient['setLabels']>[1]) {
    return this.audited('device.labels', deviceId, () => this.ops.setLabels(this.actor, deviceId, patch));
  }
  revokeDevice(deviceId: string) {
    return this.audited('device.revoke', deviceId, () => this.ops.revokeDevice(this.actor, deviceId));
  }

  async pushImage(source: string, tag: string, onProgress?: (bytes: number, total: number) => void) {
    const st = await fsp.stat(source).catch(() => undefined);
    const total = st?.isFile() ? st.size : 0;
    return this.audited('image.push', tag, () =>
      this.ops.pushImage(this.actor, source, tag, onProgress && ((n) => onProgress(n, Math.max(total, n)))),
    );
  }
  deleteImage(name: string) {
    return this.audited('image.delete', name, () => this.ops.deleteImage(this.actor, name));
  }

  async releases() {
    return this.ops.releases(this.actor);
  }
  async release(version: string) {
    return this.ops.release(this.actor, version);
  }
  deleteRelease(version: string) {
    return this.audited('release.remove', version, () => this.ops.removeRelease(this.actor, version));
  }

  validateDeployment(req: Parameters<FleetClient['deploy']>[0]) {
    return this.audited('deployment.validate', scopeText(req), () =>
      this.ops.validateDeployment(this.actor, req),
    );
  }
  deploy(req: Parameters<FleetClient['deploy']>[0]) {
    return this.audited('deployment.create', scopeText(req), () => this.ops.deploy(this.actor, req));
  }
  clearOverride(deviceId: string) {
    return this.audited('deployment.clear', deviceId, () => this.ops.clearOverride(this.actor, deviceId));
  }
  redeploy(deploymentId: number, req: Parameters<FleetClient['redeploy']>[1]) {
    return this.audited(
      'deployment.redeploy',
      `deployment ${deploymentId}`,
      () => this.ops.redeploy(this.actor, deploymentId, req),
      (dep) => ({ target: deploymentLabel(dep), note: redeployNote(deploymentId, req.reason) }),
    );
  }
  async progress(deploymentId: number) {
    return this.ops.progress(this.actor, deploymentId);
  }

  validateRollout(req: Parameters<FleetClient['validateRollout']>[0]) {
    return this.audited('rollout.validate', null, () => this.ops.validateRollout(this.actor, req));
  }
  createRollout(req: Parameters<FleetClient['createRollout']>[0]) {
    return this.audited('rollout.create', null, () => this.ops.createRollout(this.actor, req));
  }
  rollouts(q: RolloutListQuery) {
    return this.ops.rollouts(this.actor, { limit: 50, ...q });
  }
  rollout(id: number) {
    return this.ops.rollout(this.actor, id);
  }
  rolloutDevices(id: number, q: RolloutDeviceListQuery) {
    return this.ops.rolloutDevices(this.actor, id, { limit: 100, ...q });
  }
  rolloutAction(id: number, action: Parameters<FleetClient['rolloutAction']>[1], body?: RolloutAbortBody) {
    return this.audited(`rollout.${action}`, `rollout ${id}`, () =>
      this.ops.rolloutAction(this.actor, id, action, body),
    );
  }

  async enrollmentTokens() {
    return this.ops.enrollmentTokens(this.actor);
  }
  createEnrollmentToken(req: Parameters<FleetClient['createEnrollmentToken']>[0]) {
    return this.audited('enrollment.create', null, () => this.ops.createEnrollmentToken(this.actor, req));
  }
  revokeEnrollmentToken(id: string) {
    return this.audited('enrollment.revoke', id, () => this.ops.revokeEnrollmentToken(this.actor, id));
  }

  command(deviceId: string, req: Parameters<FleetClient['command']>[1]) {
    return this.audited('device.command', `${deviceId} ${req.kind}`, () =>
      this.ops.command(this.actor, deviceId, req),
    );
  }

  async users() {
    return this.ops.users(this.actor);
  }
  addUser(u: Parameters<FleetClient['addUser']>[0]) {
    return this.audited('user.create', u.name, () => this.ops.addUser(this.actor, u));
  }
  updateUser(name: string, patch: Parameters<FleetClient['updateUser']>[1]) {
    return this.audited('user.update', name, () => this.ops.updateUser(this.actor, name, patch));
  }
  deleteUser(name: string) {
    return this.audited('user.delete', name, () => this.ops.deleteUser(this.actor, name));
  }

  async tokens() {
    return this.ops.tokens(this.actor);
  }
  createToken(req: Parameters<FleetClient['createToken']>[0]) {
    return this.audited('token.create', `${req.name} (${req.role})`, () =>
      this.ops.createToken(this.actor, req),
    );
  }
  revokeToken(id: string) {
    return this.audited('token.revoke', id, () => this.ops.revokeToken(this.actor, id));
  }

  async audit(q: Parameters<FleetClient['audit']>[0]) {
    return this.ops.audit(this.actor, { limit: 100, ...q });
  }

  async close(): Promise<void> {
    await this.closeFn?.();
  }
}

function scopeText(r: { device?: string | undefined; group?: string | undefined }): string {
  return r.device !== undefined ? `device ${r.device}` : `group ${r.group}`;
}
