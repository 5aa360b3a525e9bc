/** Pure text helpers of the console (unit-tested in test/unit/console-text.test.ts). */

/** The search box: `key=value` or `key=` / `label:key` are labels, anything else an id prefix. */
export function searchQuery(q: string): { prefix?: string; label?: string[] } {
  const words = q.trim().split(/\s+/).filter(Boolean);
  const label: string[] = [];
  let prefix: string | undefined;
  for (const w of words) {
    if (w.includes('=')) label.push(w.endsWith('=') ? w.slice(0, -1) : w);
    else if (w.startsWith('label:')) label.push(w.slice(6));
    else prefix = w;
  }
  return { ...(prefix ? { prefix } : {}), ...(label.length ? { label } : {}) };
}

/** Overlap of the tail we have and a newer tail: append only the lines after the common part. */
export function mergeTail(have: string[], fresh: string[]): string[] {
  if (have.length === 0) return fresh;
  const max = Math.min(have.length, fresh.length);
  for (let n = max; n > 0; n--) {
    let same = true;
    for (let i = 0; i < n; i++)
      if (have[have.length - n + i] !== fresh[i]) {
        same = false;
        break;
      }
    if (same) return [...have, ...fresh.slice(n)];
  }
  return [...have, ...fresh];
}

/** The colour family of a device or rollout status (the badge's and the overview bar's). */
export function statusTone(status: string): 'ok' | 'info' | 'warn' | 'bad' | 'muted' {
  if (/^(converged|running|active|succeeded|healthy|ok)$/.test(status)) return 'ok';
  if (/^(applying|waiting|pending|starting|paused|waiting-approval|verifying)$/.test(status)) return 'info';
  if (/^(rolled-back|expired|superseded)$/.test(status)) return 'warn';
  if (/^(failed|rejected|revoked|aborted|exited|unhealthy)$/.test(status)) return 'bad';
  return 'muted';
}

/**
 * A metric series' name as a chart legend says it: `service.<app>.<service>.<metric>` → `app/service`,
 * `memory.usedBytes` → `used`, `memory.totalBytes` → `total`, a device-wide `cpuPercent` → `device`.
 */
export function seriesLabel(name: string): string {
  const svc = /^service\.(.+)\.([^.]+)\.[^.]+$/.exec(name);
  if (svc) return `${svc[1]}/${svc[2]}`;
  const last = name.split('.').pop() ?? name;
  if (/^used/i.test(last)) return 'used';
  if (/^total/i.test(last)) return 'total';
  if (/^free/i.test(last)) return 'free';
  if (!name.includes('.')) return 'device';
  return name;
}

/**
 * A pending reconcile retry as the device page says it: `retry in 42 s (attempt 9)`, minutes from two
 * minutes on, `retry due` once the time has passed (the device's next report says how it went). `at` is
 * the device's clock; a device whose clock is off shows off by as much.
 */
export function retryText(at: string, attempt: number, now: number): string {
  const s = Math.ceil((Date.parse(at) - now) / 1000);
  const when = !Number.isFinite(s)
    ? 'retry pending'
    : s <= 0
      ? 'retry due'
      : s < 120
        ? `retry in ${s} s`
        : s < 7200
          ? `retry in ${Math.round(s / 60)} min`
          : `retry in ${Math.round(s / 3600)} h`;
  return `${when} (attempt ${attempt})`;
}

/** At most `max` characters of a device's text (an error can be 4 KiB), `…` where it was cut. */
export function clip(text: string, max: number): { text: string; cut: boolean } {
  const chars = [...text];
  if (chars.length <= max) return { text, cut: false };
  return { text: `${chars.slice(0, max - 1).join('')}…`, cut: true };
}
