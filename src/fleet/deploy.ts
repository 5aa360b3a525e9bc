import type { KeyObject } from 'node:crypto';
import { invalidInput, notFound } from '../lib/errors.js';
import type { MqttConnection } from '../transport/connection.js';
import {
  encodeJson,
  ImageRefSchema,
  type SignedTarget,
  type Target,
  type TargetScope,
} from '../transport/messages.js';
import { signTarget } from '../transport/targets.js';
import { deviceTopic, groupTargetTopic } from '../transport/topics.js';
import type { FleetRegistry } from './registry.js';

/**
 * A deployment: the app body (opaque here; the agent's target schema owns it) plus the images it
 * needs, pinned to the digests the fleet holds now, in a versioned envelope signed with the fleet key.
 */
export interface DeployInput {
  apps: unknown;
  images: string[];
}

export function parseDeployFile(raw: unknown): DeployInput {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw invalidInput('target file must be a JSON object');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (k !== 'apps' && k !== 'images')
      throw invalidInput(`target file: unknown key ${JSON.stringify(k)} (expected apps, images)`);
  if (!('apps' in o)) throw invalidInput('target file: missing "apps"');
  const images = o.images ?? [];
  if (!Array.isArray(images)) throw invalidInput('target file: "images" must be a list of name:tag');
  return {
    apps: o.apps,
    images: images.map((i, n) => {
      const r = ImageRefSchema.safeParse(i);
      if (!r.success) throw invalidInput(`target file: images[${n}] ${JSON.stringify(i)} is not name:tag`);
      return r.data;
    }),
  };
}

export function buildTarget(
  registry: FleetRegistry,
  fleet: string,
  scope: TargetScope,
  input: DeployInput,
  privateKey: KeyObject,
): SignedTarget {
  const images = input.images.map((name) => {
    const img = registry.image(name);
    if (!img) throw notFound(`image ${name} is not in the fleet: push it first`);
    return { name, digest: img.digest };
  });
  const target: Target = {
    v: 1,
    fleet,
    scope,
    version: registry.nextVersion(scope),
    issuedAt: new Date().toISOString(),
    images,
    apps: input.apps as Target['apps'],
  };
  return signTarget(target, privateKey);
}

export function targetTopic(signed: SignedTarget): string {
  const { fleet, scope } = signed.target;
  return scope.kind === 'device' ? deviceTopic(fleet, scope.id, 'target') : groupTargetTopic(fleet, scope.id);
}

export function publishTarget(conn: MqttConnection, signed: SignedTarget): Promise<void> {
  return conn.publish(targetTopic(signed), encodeJson(signed), { qos: 1, retain: true });
}
