import type { Command } from 'commander';
import { readEnrollment } from '../agent/enroll.js';
import { invalidInput } from '../lib/errors.js';
import { ImageRefSchema } from '../transport/messages.js';
import { buildAgentConnection, pullProgress, withEnrollment } from './agent.js';
import type { CliContext } from './context.js';
import { addMqttOptions, connectTimeoutMs, type MqttFlags } from './mqtt-options.js';
import { humanSize } from './output.js';

/** `berth pull name:tag --broker …`: one image from the fleet into the local store, resumable. */
export function registerPull(program: Command, ctx: () => CliContext): void {
  addMqttOptions(
    program
      .command('pull <name:tag>')
      .description('pull an image from the fleet over MQTT without running it (resumes an interrupted pull)')
      .option('--device-id <id>', 'device identity for topics (config mqtt.deviceId)')
      .option('--fleet-key <file|pem>', 'fleet public key (config mqtt.fleetPublicKey)')
      .option('--window <chunks>', 'credit window: chunks granted to the fleet and not yet recorded', '32')
      .option('--no-fanout', 'never join a fan-out stream')
      .option(
        '--unpack',
        'also unpack it into committed snapshots, as `berth image unpack` does (in this process)',
      ),
  ).action(
    async (
      ref: string,
      opts: MqttFlags & {
        deviceId?: string;
        fleetKey?: string;
        window: string;
        fanout: boolean;
        unpack?: boolean;
      },
    ) => {
      if (!ImageRefSchema.safeParse(ref).success)
        throw invalidInput(`image reference ${ref}: expected name:tag`);
      const c = ctx();
      const timeoutMs = connectTimeoutMs(opts);
      // an enrolled device pulls with its own credentials
      const flags = withEnrollment(opts, await readEnrollment(c.stateDir));
      const agent = await buildAgentConnection(c, flags, false, `berth-pull-${process.pid}`);
      const started = Date.now();
      try {
        // Unavailable (exit 1) when the broker does not answer in time: never a silent exit 0.
        await agent.start(true, timeoutMs);
        const { bar, fn } = pullProgress(`pull ${ref}`);
        const r = await agent.pullImage(ref, { onProgress: fn });
        bar.finish();
        const s = agent.fetcher.stats;
        c.log.info({ ...s, ms: Date.now() - started }, 'pull stats');
        process.stdout.write(
          `${r.name} ${r.digest} ${r.platform} ${humanSize(r.size)} (fetched ${humanSize(r.fetchedBytes)}, resumed ${humanSize(s.resumedBytes)}, re-sent ${humanSize(s.duplicateBytes)})\n`,
        );
      } finally {
        await agent.stop();
      }
      // pull and unpack in one process, as `ctr images pull` and `docker pull` do: no second start
      if (opts.unpack) await (await import('./storage.js')).unpackRecorded(c, ref);
    },
  );
}
