/**
 * `berth agent status` and `berth agent retry`: what the running agent says about itself over its local
 * API (<state-dir>/berth.sock) — the target it applies, why it waits, when it tries again and what failed
 * last — and the operator's "the cause is gone, try now" (the backoff starts over).
 */
import type { Command } from 'commander';
import { type AgentClient, agentSocketPath, connectAgent } from '../agent/api-client.js';
import type { ReportedState } from '../core/report.js';
import { BerthError, type ErrorCode, ErrorCodes, unavailable } from '../lib/errors.js';
import type { CliContext } from './context.js';
import { printJson } from './output.js';

/** The reported state as lines for a person (pure). */
export function describeAgentState(s: ReportedState, now: number): string[] {
  const origin = (o: ReportedState['target']['applied']) => (o ? `${o.kind} ${o.id} ${o.version}` : 'none');
  const t = s.target;
  const lines = [`target:    ${origin(t.applied)}${t.status ? ` (${t.status})` : ''}`];
  if (t.reason) lines.push(`reason:    ${t.reason}`);
  if (t.previous) lines.push(`previous:  ${origin(t.previous)}`);
  for (const w of t.waiting ?? []) lines.push(`waiting:   ${w}`);
  if (t.retry) {
    const inS = Math.ceil((t.retry.at - now) / 1000);
    const when = inS > 0 ? `in ${inS} s` : 'now';
    lines.push(`retry:     ${when} (attempt ${t.retry.attempt}, at ${new Date(t.retry.at).toISOString()})`);
    if (t.retry.lastError) lines.push(`lastError: ${t.retry.lastError}`);
  }
  for (const [name, app] of Object.entries(s.apps)) {
    lines.push(`app ${name}: ${app.status}${app.lastError ? ` — ${app.lastError}` : ''}`);
    for (const [svc, r] of Object.entries(app.services))
      lines.push(
        `  ${svc}: ${r.state}, ${r.health}, ${r.restarts} restarts${r.lastError ? ` — ${r.lastError}` : ''}`,
      );
  }
  if (s.agent) lines.push(`agent:     ${s.agent.version}`);
  return lines;
}

async function agentAt(stateDir: string): Promise<AgentClient> {
  const client = await connectAgent(stateDir);
  if (!client)
    throw unavailable(`no agent answers on ${agentSocketPath(stateDir)}: is \`berth agent\` running?`);
  return client;
}

export function registerAgentStatus(agent: Command, ctx: () => CliContext): void {
  agent
    .command('status')
    .description('what the running agent applies, why it waits, when it retries and its last error')
    .option('--json', 'the reported state as JSON')
    .action(async (o: { json?: boolean }) => {
      const state = (await (await agentAt(ctx().stateDir)).state()) as ReportedState;
      if (o.json) printJson(state);
      else process.stdout.write(`${describeAgentState(state, Date.now()).join('\n')}\n`);
    });
  agent
    .command('retry')
    .description('reconcile now: the cause of the last failure is gone (the retry backoff starts over)')
    .action(async () => {
      const r = await (await agentAt(ctx().stateDir)).command({ kind: 'retry' });
      if (!r.ok) {
        const code = r.error.code as ErrorCode;
        throw new BerthError(ErrorCodes.includes(code) ? code : 'Internal', r.error.message);
      }
      process.stdout.write('retrying now\n');
    });
}
