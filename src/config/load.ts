import { readFileSync } from 'node:fs';
import type { ZodError } from 'zod';
import { formatPath, type ParsedSource, parseSource, zodSourceIssues } from '../core/source-issues.js';
import { invalidInput, withContext } from '../lib/errors.js';
import { type Config, ConfigSchema } from './schema.js';

type Tree = Record<string, unknown>;

/** Deep-merge plain objects; later sources win; undefined never overrides. */
export function mergeTrees(...trees: Tree[]): Tree {
  const out: Tree = {};
  for (const t of trees) {
    for (const [k, v] of Object.entries(t)) {
      if (v === undefined) continue;
      const prev = out[k];
      if (isPlain(v) && isPlain(prev)) out[k] = mergeTrees(prev, v);
      else if (isPlain(v)) out[k] = mergeTrees(v);
      else out[k] = v;
    }
  }
  return out;
}

function isPlain(v: unknown): v is Tree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Names of config keys as the environment spells them. */
const ENV_KEYS: Record<string, string[]> = {
  BERTH_STATE_DIR: ['stateDir'],
  BERTH_RUN_DIR: ['runDir'],
  BERTH_LOG_LEVEL: ['logLevel'],
  BERTH_LOG_FORMAT: ['logFormat'],
  BERTH_PLATFORM: ['platform'],
  BERTH_STORAGE_DRIVER: ['storage', 'driver'],
  BERTH_DEVMAPPER_POOL_NAME: ['storage', 'devmapper', 'poolName'],
  BERTH_RUNTIME: ['runtime', 'name'],
  BERTH_RUNTIME_PATH: ['runtime', 'path'],
  BERTH_MQTT_BROKER: ['mqtt', 'broker'],
  BERTH_DEVICE_ID: ['mqtt', 'deviceId'],
  BERTH_FLEET: ['mqtt', 'fleet'],
  BERTH_MQTT_USERNAME: ['mqtt', 'username'],
  BERTH_MQTT_PASSWORD: ['mqtt', 'password'],
};

export function envTree(env: NodeJS.ProcessEnv): Tree {
  const out: Tree = {};
  for (const [name, keyPath] of Object.entries(ENV_KEYS)) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    setPath(out, keyPath, v);
  }
  return out;
}

export function setPath(tree: Tree, keyPath: string[], value: unknown): void {
  let node = tree;
  for (const k of keyPath.slice(0, -1)) {
    if (!isPlain(node[k])) node[k] = {};
    node = node[k] as Tree;
  }
  node[keyPath[keyPath.length - 1]!] = value;
}

/** A config file is a few KB; anything near this is not one. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

function readConfigSource(file: string): { tree: Tree; src: ParsedSource } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw withContext(`cannot read config file ${file}`, err);
  }
  // YAML is a superset of JSON; bounded in size, nesting and alias expansion before it is parsed, and a
  // syntax error names the file, line and column
  const src = parseSource(text, file, { maxBytes: MAX_CONFIG_BYTES }, `config file ${file}`);
  const parsed = src.value;
  if (parsed === null || parsed === undefined) return { tree: {}, src };
  if (!isPlain(parsed)) throw invalidInput(`config file ${file}: expected a mapping at the top level`);
  return { tree: parsed, src };
}

/**
 * Every problem, each as `what: key: message`, with `file:line:col` when the key is in the config file
 * (it may come from the environment or a flag instead) and "did you mean" for a misspelled key.
 */
export function formatZodError(err: ZodError, what: string, src?: ParsedSource): string {
  return zodSourceIssues(err, ConfigSchema)
    .map((i) => {
      const inFile = src && hasPath(src.value, i.path) ? src.locate(i.path, i.atKey) : undefined;
      const where = inFile ? ` (${src!.file}:${inFile.line}:${inFile.col})` : '';
      return `${what}: ${formatPath(i.path)}: ${i.message}${where}`;
    })
    .join('; ');
}

function hasPath(v: unknown, p: ReadonlyArray<string | number>): boolean {
  let cur = v;
  for (const k of p) {
    if (!cur || typeof cur !== 'object' || !(String(k) in (cur as object))) return false;
    cur = (cur as Record<string, unknown>)[String(k)];
  }
  return true;
}

export interface LoadConfigInput {
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
  flags?: Tree;
}

/** Build the effective configuration: defaults < file < environment < flags. Throws InvalidInput naming the key. */
export function loadConfig(input: LoadConfigInput = {}): Config {
  const file = input.file ? readConfigSource(input.file) : undefined;
  const merged = mergeTrees(file?.tree ?? {}, envTree(input.env ?? process.env), input.flags ?? {});
  const res = ConfigSchema.safeParse(merged);
  if (!res.success) throw invalidInput(formatZodError(res.error, 'invalid configuration', file?.src));
  return res.data;
}
