/** Signed remote commands to a device, answered by the device (the key stays on the server). */
import type { ApiDeps } from '../deps.js';
import { route } from '../route.js';
import { CommandAnswerSchema, CommandRequest, DeviceParams } from '../schemas.js';

export function commandRoutes(d: ApiDeps) {
  return [
    route({
      method: 'post',
      path: '/devices/{id}/commands',
      tag: 'commands',
      summary: 'Send restart | logs | report | purgeVolume | retry to a device and wait for its answer',
      description:
        'The command is signed with the fleet key on the server, expires on the device after expiresS, ' +
        'and runs once. 504 when the device does not answer within timeoutMs.',
      auth: 'operator',
      audit: 'device.command',
      params: DeviceParams,
      body: CommandRequest,
      maxBody: 16 * 1024,
      response: CommandAnswerSchema,
      handler: async ({ actor, params, body, auditTarget }) => {
        auditTarget(
          `${params.id} ${body.kind}${body.app ? ` ${body.app}` : ''}${body.service ? `/${body.service}` : ''}`,
        );
        return d.ops.command(actor, params.id, body);
      },
    }),
  ];
}
