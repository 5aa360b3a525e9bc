/**
 * `berth inspect <container|image>…`: docker's inspect, a JSON array with one document per reference.
 * A reference is looked up as a container first (name, id, id prefix, app service), then as an image;
 * `--type` narrows it. Through the agent when one runs, else on the state dir.
 */
import type { Command } from 'commander';
import { BerthError, isBerthError, notFound } from '../lib/errors.js';
import { containerSource } from './container-source.js';
import { containerManager } from './containers.js';
import type { CliContext } from './context.js';
import { printJson, renderTemplate } from './output.js';

export function registerInspect(program: Command, ctx: () => CliContext): void {
  program
    .command('inspect')
    .description('show containers or images as JSON (docker inspect)')
    .argument('<refs...>', 'container (name, id, app service) or image (name:tag)')
    .option('--type <type>', 'container | image (default: a container, else an image)')
    .option('-f, --format <template>', "a template per document, e.g. '{{.State.Status}}'")
    .action(async (refs: string[], o: { type?: string; format?: string }) => {
      if (o.type !== undefined && o.type !== 'container' && o.type !== 'image')
        throw new BerthError('InvalidInput', `--type ${o.type}: expected container or image`);
      const src = await containerSource(ctx(), () => containerManager(ctx()));
      const docs: unknown[] = [];
      for (const ref of refs) {
        let doc: unknown;
        if (o.type !== 'image') {
          doc = await src.inspect(ref).catch((err: unknown) => {
            if (o.type === undefined && isBerthError(err, 'NotFound')) return undefined;
            throw err;
          });
        }
        if (doc === undefined) {
          doc = await src.image(ref).catch((err: unknown) => {
            if (isBerthError(err, 'NotFound'))
              throw notFound(
                o.type === 'image' ? `no such image: ${ref}` : `no such container or image: ${ref}`,
              );
            throw err;
          });
        }
        docs.push(doc);
      }
      if (o.format) {
        for (const d of docs)
          process.stdout.write(`${renderTemplate(o.format, d as Record<string, unknown>)}\n`);
        return;
      }
      printJson(docs);
    });
}
