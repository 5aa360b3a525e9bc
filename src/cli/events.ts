/**
 * `berth events [--since T] [--until T] [--format json|template]`: what happened to containers and images
 * (src/runtime/events.ts), as docker events prints it. Without --until it follows until Ctrl-C; without
 * --since it shows only what happens from now on. Through the agent when one runs, else on the state dir.
 */
import type { Command } from 'commander';
import type { BerthEvent } from '../runtime/events.js';
import { containerSource } from './container-source.js';
import { containerManager } from './containers.js';
import type { CliContext } from './context.js';
import { renderTemplate } from './output.js';
import { parseTimeArg } from './time.js';

/** docker's line: `2024-05-01T12:00:00.123000000Z container die 3f2a… (exitCode=0, image=x, name=web)` */
export function eventLine(e: BerthEvent): string {
  const iso = new Date(e.time).toISOString().replace(/\.(\d{3})Z$/, '.$1000000Z');
  const attrs = { ...e.attributes, name: e.name };
  const list = Object.keys(attrs)
    .sort()
    .map((k) => `${k}=${attrs[k as keyof typeof attrs]}`)
    .join(', ');
  return `${iso} ${e.type} ${e.action} ${e.id} (${list})`;
}

export function registerEvents(program: Command, ctx: () => CliContext): void {
  program
    .command('events')
    .description('container and image events: create, start, die, oom, kill, stop, restart, destroy, import…')
    .option('--since <time>', 'events since: a duration (10m), a unix time or a date')
    .option('--until <time>', 'stop at: a duration, a unix time or a date (default: follow until Ctrl-C)')
    .option('--format <format>', "json (one object a line) | a template, e.g. '{{.Action}} {{.Name}}'")
    .action(async (o: { since?: string; until?: string; format?: string }) => {
      const now = Date.now();
      const since = o.since !== undefined ? parseTimeArg(o.since, '--since', now) : undefined;
      const until = o.until !== undefined ? parseTimeArg(o.until, '--until', now) : undefined;
      const src = await containerSource(ctx(), () => containerManager(ctx()));
      const ac = new AbortController();
      const onSig = () => ac.abort();
      process.once('SIGINT', onSig);
      const print = (e: BerthEvent) => {
        const line =
          o.format === 'json'
            ? JSON.stringify(e)
            : o.format
              ? renderTemplate(o.format, {
                  ...e,
                  status: e.action,
                  actor: { id: e.id, attributes: e.attributes },
                })
              : eventLine(e);
        process.stdout.write(`${line}\n`);
      };
      try {
        await src.events(
          { since, until, follow: until === undefined || until > now, signal: ac.signal },
          print,
        );
      } finally {
        process.off('SIGINT', onSig);
      }
    });
}
