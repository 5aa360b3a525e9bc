/**
 * What `berth fleet deploy` reads: a deploy file ({apps, images}), a target JSON ({version?, apps}) or a
 * docker-compose file (converted by src/core/compose.ts). Apps are validated against the agent's target
 * schema here, so a fleet never signs a target its devices would refuse; images default to every
 * name:tag image the services use.
 */
import { z } from 'zod';
import { loadTargetText, MAX_TARGET_FILE_BYTES } from '../core/compose.js';
import { targetImages } from '../core/target.js';
import { invalidInput } from '../lib/errors.js';
import { DEFAULT_MAX_DEPTH, parseJsonOrThrow } from '../lib/json-bounds.js';
import { AgentVersionSchema, ImageRefSchema } from '../transport/messages.js';
import type { DeployInput } from './services/deploy.js';

/**
 * A deploy file: `{apps, images, agent?}` (images as name:tag; agent `{version, allowDowngrade?}`, the
 * agent release the devices should run); anything else is refused by name.
 */
export function parseDeployFile(raw: unknown): DeployInput {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw invalidInput('target file must be a JSON object');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (k !== 'apps' && k !== 'images' && k !== 'agent')
      throw invalidInput(`target file: unknown key ${JSON.stringify(k)} (expected apps, images, agent)`);
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
    ...('agent' in o ? { agent: parseAgent(o.agent) } : {}),
  };
}

function parseAgent(raw: unknown): NonNullable<DeployInput['agent']> {
  const r = DeployAgentSchema.safeParse(raw);
  if (!r.success)
    throw invalidInput(
      `target file: agent: ${r.error.issues[0]?.message ?? 'invalid'} (expected {version: "1.2.3", allowDowngrade?: true})`,
    );
  return r.data;
}

const DeployAgentSchema = z
  .object({ version: AgentVersionSchema, allowDowngrade: z.boolean().optional() })
  .strict();

export function readDeployText(text: string, fileName: string, opts: { app?: string } = {}): DeployInput {
  if (!/\.ya?ml$/i.test(fileName)) {
    const raw = parseJsonOrThrow(
      text,
      { maxBytes: MAX_TARGET_FILE_BYTES, maxDepth: DEFAULT_MAX_DEPTH },
      fileName,
    );
    if (raw && typeof raw === 'object' && 'images' in raw) {
      const input = parseDeployFile(raw);
      loadTargetText(JSON.stringify({ version: 0, apps: input.apps }), fileName);
      return input;
    }
  }
  const t = loadTargetText(text, fileName, { ...(opts.app ? { app: opts.app } : {}), version: 0 });
  const images = targetImages(t).filter((i) => ImageRefSchema.safeParse(i).success);
  return { apps: t.apps, images };
}
