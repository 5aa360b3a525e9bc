/**
 * Whether a firewall tool works on this host, and when it does not, what it said. One failed run is not
 * an answer: on a loaded device a probe can run past its time limit, and another program changing the
 * ruleset at that moment can fail a netlink request. So a probe is asked up to `attempts` times; a tool
 * that is not installed is answered at once.
 */

import { errorMessage, isBerthError } from '../../lib/errors.js';
import { exec } from '../../lib/exec.js';

export interface ProbeOptions {
  attempts?: number;
  timeoutMs?: number;
  /** between attempts (tests: 0) */
  pauseMs?: number;
}

/** undefined: `file args…` exited 0; otherwise why not (its last stderr line, or how it ended). */
export async function probeTool(
  file: string,
  args: readonly string[],
  o: ProbeOptions = {},
): Promise<string | undefined> {
  const attempts = o.attempts ?? 3;
  let why = 'not tried';
  for (let i = 0; i < attempts; i++) {
    if (i > 0 && (o.pauseMs ?? 200) > 0) await new Promise((r) => setTimeout(r, o.pauseMs ?? 200));
    try {
      const r = await exec(file, args, { allowFailure: true, timeoutMs: o.timeoutMs ?? 10_000 });
      if (r.code === 0) return undefined;
      const said = r.stderr.trim().split('\n').pop();
      why = r.signal ? `timed out (killed by ${r.signal})` : said || `exit ${r.code}`;
    } catch (err) {
      // not installed (or not executable): asking again changes nothing
      if (isBerthError(err) && err.code === 'NotFound') return `${file} is not installed`;
      why = errorMessage(err);
    }
  }
  return why;
}
