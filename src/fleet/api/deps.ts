import type { Logger } from '../../lib/logger.js';
import type { IdentityService } from '../identity/service.js';
import type { FleetOperations } from '../operations.js';
import type { SseHub } from './sse.js';

/** What the routes are built over (the composition root, src/fleet/api/index.ts, makes it). */
export interface ApiDeps {
  ops: FleetOperations;
  identity: IdentityService;
  log: Logger;
  /** HTTPS: session cookies get `Secure` */
  secureCookies: boolean;
  version: string;
  /** the largest image upload accepted (bytes) */
  maxUploadBytes: number;
  /** live events (absent: the stream route answers 503) */
  events?: SseHub | undefined;
}
