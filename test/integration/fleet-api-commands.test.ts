/**
 * Commands over the fleet API (real HTTP, the command link replaced by a recorder that checks each body
 * with the agent's own schema, as the real CommandService does before signing): `retry` reaches the
 * device — the operator's "the cause is gone, try now" for a device backing off (docs/agent.md).
 */
import test from 'ava';
import { type CommandService, parseCommandBody } from '../../src/fleet/commands.js';
import { Caller, startApi } from '../helpers/fleet-api.js';

const LOCAL = { kind: 'local' as const, name: 'root', role: 'admin' as const, userId: null };

test('POST /devices/{id}/commands: retry is sent to the device; an unknown kind is refused before anything is sent', async (t) => {
  const sent: Array<{ deviceId: string; body: unknown }> = [];
  const recorder = {
    send: async (deviceId: string, body: Record<string, unknown>) => {
      const cmd = parseCommandBody(body);
      sent.push({ deviceId, body });
      return { id: 'c1', deviceId, kind: cmd.kind, ok: true, result: { retrying: true } };
    },
  } as unknown as CommandService;
  const api = await startApi(t, { commands: async () => recorder });
  const operator = new Caller(api.url, api.ops.createToken(LOCAL, { name: 'op', role: 'operator' }).token);
  const r = await operator.call('POST', '/devices/d1/commands', { kind: 'retry' });
  t.is(r.status, 200, JSON.stringify(r.body));
  t.like(r.body, { deviceId: 'd1', kind: 'retry', ok: true, result: { retrying: true } });
  t.deepEqual(sent, [{ deviceId: 'd1', body: { kind: 'retry' } }]);
  const bad = await operator.call('POST', '/devices/d1/commands', { kind: 'reboot' });
  t.is(bad.status, 400, JSON.stringify(bad.body));
  t.is(bad.body.code, 'InvalidInput');
  t.is(sent.length, 1, 'nothing sent for the refused one');
});
