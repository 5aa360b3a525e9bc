import { z } from 'zod';
import { invalidInput } from '../lib/errors.js';
import { DEFAULT_MAX_DEPTH, parseJsonBounded } from '../lib/json-bounds.js';
import { type Digest, isDigest } from './digest.js';
import { formatIssues } from './validate.js';

const digestSchema = z
  .string()
  .refine(isDigest, { message: 'expected sha256:<64 lowercase hex>' }) as unknown as z.ZodType<Digest>;

export const PlatformSchema = z.object({
  architecture: z.string().min(1),
  os: z.string().min(1),
  'os.version': z.string().optional(),
  'os.features': z.array(z.string()).optional(),
  variant: z.string().optional(),
  features: z.array(z.string()).optional(),
});
export type Platform = z.infer<typeof PlatformSchema>;

export const DescriptorSchema = z.object({
  mediaType: z.string().min(1),
  digest: digestSchema,
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).optional(),
  annotations: z.record(z.string()).optional(),
  platform: PlatformSchema.optional(),
  artifactType: z.string().optional(),
});
export type Descriptor = z.infer<typeof DescriptorSchema>;

export const ManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema),
  annotations: z.record(z.string()).optional(),
  subject: DescriptorSchema.optional(),
});
export type Manifest = z.infer<typeof ManifestSchema>;

export const IndexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(DescriptorSchema),
  annotations: z.record(z.string()).optional(),
});
export type Index = z.infer<typeof IndexSchema>;

export const ImageConfigSchema = z.object({
  architecture: z.string(),
  os: z.string(),
  variant: z.string().optional(),
  created: z.string().optional(),
  author: z.string().optional(),
  config: z
    .object({
      User: z.string().optional(),
      ExposedPorts: z.record(z.object({}).passthrough()).nullish(),
      Env: z.array(z.string()).nullish(),
      Entrypoint: z.array(z.string()).nullish(),
      Cmd: z.array(z.string()).nullish(),
      Volumes: z.record(z.object({}).passthrough()).nullish(),
      WorkingDir: z.string().optional(),
      Labels: z.record(z.string()).nullish(),
      StopSignal: z.string().optional(),
      Healthcheck: z
        .object({
          Test: z.array(z.string()).optional(),
          Interval: z.number().optional(),
          Timeout: z.number().optional(),
          StartPeriod: z.number().optional(),
          Retries: z.number().optional(),
        })
        .passthrough()
        .optional(),
    })
    .passthrough()
    .optional(),
  rootfs: z.object({
    type: z.literal('layers'),
    diff_ids: z.array(digestSchema),
  }),
  history: z.array(z.object({}).passthrough()).optional(),
});
export type ImageConfig = z.infer<typeof ImageConfigSchema>;

/** Manifests, indexes and configs: a big image's config with a long history is a few MB. */
export const MAX_JSON_DOC_BYTES = 64 * 1024 * 1024;

/** Parse JSON bytes against a schema; errors name the document and the failing field. */
export function parseJsonDoc<T>(schema: z.ZodType<T>, bytes: Uint8Array | string, what: string): T {
  // image authors write these: bounded in depth before anything recursive (JSON.stringify, zod) walks them
  const parsed = parseJsonBounded(bytes, { maxBytes: MAX_JSON_DOC_BYTES, maxDepth: DEFAULT_MAX_DEPTH });
  if (!parsed.ok) throw invalidInput(`${what}: ${parsed.reason}`);
  const raw = parsed.value;
  const res = schema.safeParse(raw);
  if (!res.success) throw invalidInput(`${what} is malformed: ${formatIssues(res.error)}`);
  return res.data;
}
