/** Agent releases (docs/self-update.md): list, show, remove. Pushing stays `berth fleet release push` on the server. */
import type { ApiDeps } from '../deps.js';
import { route } from '../route.js';
import { Ok, ReleaseList, ReleaseParams, ReleaseSchema } from '../schemas.js';

export function releaseRoutes(d: ApiDeps) {
  return [
    route({
      method: 'get',
      path: '/releases',
      tag: 'releases',
      summary: 'Agent releases, newest version first',
      auth: 'viewer',
      response: ReleaseList,
      handler: ({ actor }) => ({ items: d.ops.releases(actor) }),
    }),
    route({
      method: 'get',
      path: '/releases/{version}',
      tag: 'releases',
      summary: 'One agent release: its executables per platform and the manifest targets pin',
      auth: 'viewer',
      params: ReleaseParams,
      response: ReleaseSchema,
      handler: ({ actor, params }) => d.ops.release(actor, params.version),
    }),
    route({
      method: 'delete',
      path: '/releases/{version}',
      tag: 'releases',
      summary: 'Remove an agent release no current target names (409 otherwise); its blobs go too',
      auth: 'operator',
      audit: 'release.remove',
      params: ReleaseParams,
      response: Ok,
      handler: async ({ actor, params }) => {
        await d.ops.removeRelease(actor, params.version);
        return { ok: true as const };
      },
    }),
  ];
}
