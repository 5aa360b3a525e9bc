/**
 * The idle agent's memory (issue 16; figures in packaging/README.md "Agent memory"). Two measures, both
 * for the long-running agent only (the fleet server and the short CLI commands keep V8's defaults):
 *
 * - **A young generation that does not grow.** V8 starts new space at 1 MiB per semi-space and grows it to
 *   16 when the agent's traffic keeps it busy (+22 MiB measured with 10 containers). The flag that caps it
 *   (`--max-semi-space-size`) only counts at start, and passed in NODE_OPTIONS it changes V8's flag hash, so
 *   the single executable's code cache is rejected and the whole bundle compiles again (+8 MiB, +0.15 s).
 *   `--semi-space-growth-factor` is read whenever new space would grow, so setting it to 1 once the bundle is
 *   compiled (src/cli/program.ts, before the agent's modules load: later, new space has grown already)
 *   keeps the small young generation and the code cache. (0 crashes V8: 1 is the floor.)
 * - **Start-up pages handed back** (PageOut below): a settled agent asks `berth-storage page-out` to return
 *   the clean pages of its read-only file mappings (its executable) to the kernel; what it uses again is
 *   read back on the next fault, so its RSS becomes its working set.
 */
import { setFlagsFromString } from 'node:v8';
import type { Clock, TimerHandle } from '../lib/clock.js';
import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { RunOutcome } from './reconciler.js';

/** Keep V8's young generation at its starting size for the rest of this process (see above). */
export function keepYoungGenerationSmall(): void {
  setFlagsFromString('--semi-space-growth-factor=1');
}

export interface PageOutOptions {
  /** how long after the agent starts, and after it converges to a new target, the pages go back; 0: never */
  afterMs: number;
  clock: Clock;
  /** hands the pages back (berth-storage page-out on this process) */
  run: () => Promise<{ bytes: number; ranges: number }>;
  log: Logger;
}

/**
 * When to page out: `afterMs` after the agent starts, and `afterMs` after each reconcile that converged to
 * a target version not seen converged at the last page-out (an update touched the puller, the unpacker and
 * the compilers: their pages go back once it is done). The periodic converged passes of the same version
 * do not re-arm it — paging out the working set again would only read it back. A new trigger while one is
 * pending moves it later (the agent is still busy). A helper that cannot do it (an old kernel, no
 * CAP_SYS_NICE, no helper) turns this off after saying why once.
 */
export class PageOut {
  private timer: TimerHandle | undefined;
  private converged: number | undefined;
  private stopped = false;
  private running = false;
  /** completed page-outs (for status and tests) */
  done = 0;
  lastBytes = 0;

  constructor(private readonly o: PageOutOptions) {}

  start(): void {
    this.arm();
  }

  /** feed every reconcile outcome (Agent.onReconciled) */
  outcome(out: RunOutcome): void {
    if (out.status !== 'converged' || out.version === this.converged) return;
    this.converged = out.version;
    this.arm();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) this.o.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    if (this.stopped || this.o.afterMs <= 0) return;
    if (this.timer) this.o.clock.clearTimeout(this.timer);
    this.timer = this.o.clock.setTimeout(() => {
      this.timer = undefined;
      void this.fire();
    }, this.o.afterMs);
  }

  private async fire(): Promise<void> {
    if (this.stopped || this.running) return;
    this.running = true;
    try {
      const r = await this.o.run();
      this.done++;
      this.lastBytes = r.bytes;
      this.o.log.debug({ advisedBytes: r.bytes, ranges: r.ranges }, 'start-up pages handed back');
    } catch (err) {
      this.stop();
      this.o.log.info({ err: errorMessage(err) }, 'cannot hand start-up pages back; the agent keeps them');
    } finally {
      this.running = false;
    }
  }
}
