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
