import type { FleetImageRow } from '../fleet/registry.js';
import { FleetRegistry } from '../fleet/registry.js';
import { unsupported } from '../lib/errors.js';
import type { CliContext } from './context.js';

/** Import an image into the fleet's store and list it (every platform kept). */
export async function pushImage(c: CliContext, source: string, tag: string): Promise<FleetImageRow> {
  void c;
  void source;
  void tag;
  void FleetRegistry;
  throw unsupported('fleet push needs src/content/import.ts (landing on main)');
}
