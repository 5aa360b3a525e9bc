/**
 * Phases and which device goes in which (pure).
 *
 * A phase is given as a count (`5`: the first 5 devices) or a percentage (`10%`: the first 10 % of the
 * selection, rounded up, so 1 % of 40 devices is 1 device). Both are cumulative — `1,10%,100%` is one
 * device, then up to 10 % of them, then the rest — and the last phase must be `100%`.
 *
 * Assignment is deterministic: canaries first, in the order given, then every other device ordered by
 * sha256(`<rollout id>/<device id>`) — a fixed shuffle, so phases mix sites and id ranges, and the same
 * rollout always assigns the same way. The assignment is computed once, at creation, and stored with the
 * rollout: a server restart reads it back, it never reshuffles.
 */
import { createHash } from 'node:crypto';
import { invalidInput } from '../../lib/errors.js';

export type PhaseSpec = { count: number } | { percent: number };

export const MAX_PHASES = 32;

/** `5` or `"5"` → 5 devices, `"10%"` → 10 %, `"0.5%"` → 0.5 %. */
export function parsePhase(raw: unknown, index: number): PhaseSpec {
  const where = `phase ${index + 1}`;
  if (typeof raw === 'number') {
    if (!Number.isInteger(raw) || raw < 1)
      throw invalidInput(`${where}: ${raw} is not a device count (a whole number ≥ 1) or a percentage`);
    return { count: raw };
  }
  if (typeof raw !== 'string')
    throw invalidInput(`${where}: expected a device count (5) or a percentage ("10%")`);
  const s = raw.trim();
  const pct = /^(\d{1,3}(?:\.\d{1,3})?)%$/.exec(s);
  if (pct) {
    const p = Number(pct[1]);
    if (!(p > 0 && p <= 100)) throw invalidInput(`${where}: ${s} is not a percentage in (0, 100]`);
    return { percent: p };
  }
  if (/^\d{1,9}$/.test(s) && Number(s) >= 1) return { count: Number(s) };
  throw invalidInput(`${where}: ${JSON.stringify(raw)} is not a device count (5) or a percentage ("10%")`);
}

export function formatPhase(p: PhaseSpec): string {
  return 'count' in p ? String(p.count) : `${p.percent}%`;
}

/** Parse and check a list of phases: 1-32 of them, growing, the last exactly 100 %. */
export function parsePhases(raw: readonly unknown[]): PhaseSpec[] {
  if (!Array.isArray(raw) || raw.length === 0)
    throw invalidInput('phases: give at least one, e.g. 1,10%,100%');
  if (raw.length > MAX_PHASES) throw invalidInput(`phases: at most ${MAX_PHASES}`);
  const specs = raw.map((r, i) => parsePhase(r, i));
  let lastPct = 0;
  let lastCount = 0;
  specs.forEach((p, i) => {
    if ('percent' in p) {
      if (p.percent <= lastPct)
        throw invalidInput(
          `phases: phase ${i + 1} (${p.percent}%) must be above the phase before it (${lastPct}%): phases are cumulative`,
        );
      lastPct = p.percent;
    } else {
      if (p.count <= lastCount)
        throw invalidInput(
          `phases: phase ${i + 1} (${p.count} devices) must be above the phase before it (${lastCount}): phases are cumulative`,
        );
      lastCount = p.count;
    }
  });
  const last = specs[specs.length - 1]!;
  if (!('percent' in last) || last.percent !== 100)
    throw invalidInput(
      `phases: the last phase must be 100% (got ${formatPhase(last)}): a rollout ends with every selected device`,
    );
  return specs;
}

/**
 * How many devices each phase adds, for `total` devices. Cumulative targets are made non-decreasing (a
 * count above a later percentage of a small fleet just leaves that later phase empty).
 */
export function phaseSizes(specs: readonly PhaseSpec[], total: number): number[] {
  const sizes: number[] = [];
  let cum = 0;
  for (const p of specs) {
    const want = 'count' in p ? Math.min(p.count, total) : Math.min(total, percentOf(p.percent, total));
    const next = Math.max(cum, want);
    sizes.push(next - cum);
    cum = next;
  }
  return sizes;
}

/** ⌈percent × total / 100⌉ in integers (0.7 % of 1000 is 7, not 7.000000000000001 rounded up to 8). */
export function percentOf(percent: number, total: number): number {
  const milli = Math.round(percent * 1000);
  return Math.floor((milli * total + 99_999) / 100_000);
}

/** The fixed order of a rollout's devices: canaries first (as given), then by sha256(seed/id). */
export function orderDevices(
  seed: string,
  ids: readonly string[],
  canaries: readonly string[] = [],
): string[] {
  const chosen = new Set(canaries);
  const rest = ids
    .filter((id) => !chosen.has(id))
    .map((id) => ({ id, h: createHash('sha256').update(`${seed}/${id}`).digest('hex') }))
    .sort((a, b) => (a.h < b.h ? -1 : a.h > b.h ? 1 : a.id < b.id ? -1 : 1))
    .map((x) => x.id);
  return [...canaries, ...rest];
}

export interface Assignment {
  deviceId: string;
  /** 1-based */
  phase: number;
  /** 0-based place in the rollout's order */
  position: number;
  canary: boolean;
}

/** Every selected device with its phase. Canaries must be selected devices, each named once. */
export function assignPhases(
  seed: string,
  ids: readonly string[],
  specs: readonly PhaseSpec[],
  canaries: readonly string[] = [],
): { assignments: Assignment[]; sizes: number[] } {
  const selected = new Set(ids);
  const seen = new Set<string>();
  for (const c of canaries) {
    if (seen.has(c)) throw invalidInput(`canaries: ${c} is named twice`);
    seen.add(c);
    if (!selected.has(c)) throw invalidInput(`canaries: ${c} is not one of the selected devices`);
  }
  const order = orderDevices(seed, ids, canaries);
  const sizes = phaseSizes(specs, order.length);
  const assignments: Assignment[] = [];
  let pos = 0;
  sizes.forEach((n, i) => {
    for (let k = 0; k < n; k++, pos++)
      assignments.push({ deviceId: order[pos]!, phase: i + 1, position: pos, canary: seen.has(order[pos]!) });
  });
  return { assignments, sizes };
}
