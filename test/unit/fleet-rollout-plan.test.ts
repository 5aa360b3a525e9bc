/**
 * Rollout planning, pure: phase specs (counts, percentages, cumulative, ending at 100 %), deterministic
 * assignment (canaries first, stable across calls = across restarts), and the label selector parser with
 * its errors (src/fleet/rollouts/phases.ts, selector.ts).
 */
import test from 'ava';
import { assignPhases, parsePhases, percentOf, phaseSizes } from '../../src/fleet/rollouts/phases.js';
import { formatSelector, matches, parseSelector } from '../../src/fleet/rollouts/selector.js';

const ids = (n: number) => Array.from({ length: n }, (_, i) => `dev-${String(i).padStart(4, '0')}`);

test('phases: counts and percentages, cumulative, rounded up; sizes add up to the selection', (t) => {
  t.deepEqual(phaseSizes(parsePhases([1, '10%', '100%']), 200), [1, 19, 180]);
  t.deepEqual(phaseSizes(parsePhases(['1%', '10%', '100%']), 10_000), [100, 900, 9000]);
  // 1 % of 40 devices is one device (rounded up), not none
  t.deepEqual(phaseSizes(parsePhases(['1%', '100%']), 40), [1, 39]);
  // a count above a later percentage of a small fleet leaves that phase empty
  t.deepEqual(phaseSizes(parsePhases([5, '10%', '100%']), 20), [5, 0, 15]);
  t.is(percentOf(0.7, 1000), 7);
  t.is(percentOf(0.5, 10_000), 50);
  for (const n of [1, 3, 17, 200])
    t.is(
      phaseSizes(parsePhases([2, '33.3%', '100%']), n).reduce((a, b) => a + b),
      n,
    );
});

test('phases: refused with a message naming the phase and what was wrong', (t) => {
  const cases: Array<[unknown[], RegExp]> = [
    [[], /at least one/],
    [['10%', '50%'], /the last phase must be 100%/],
    [['50%', '10%', '100%'], /phase 2 \(10%\) must be above the phase before it \(50%\)/],
    [[5, 5, '100%'], /phase 2 \(5 devices\) must be above/],
    [['0%', '100%'], /phase 1: 0% is not a percentage in \(0, 100\]/],
    [['150%'], /150% is not a percentage/],
    [[0, '100%'], /phase 1: 0 is not a device count/],
    [[1.5, '100%'], /phase 1: 1.5 is not a device count/],
    [['ten', '100%'], /phase 1: "ten" is not a device count/],
    [[{}, '100%'], /phase 1: expected a device count/],
    [Array.from({ length: 33 }, (_, i) => `${i + 1}%`), /at most 32/],
  ];
  for (const [raw, re] of cases) {
    const e = t.throws(() => parsePhases(raw), undefined, JSON.stringify(raw));
    t.regex(e!.message, re);
    t.is((e as { code?: string }).code, 'InvalidInput');
  }
});

test('assignment: canaries first in the given order, the rest a fixed shuffle, the same every time', (t) => {
  const all = ids(200);
  const specs = parsePhases([3, '10%', '100%']);
  const a = assignPhases('42', all, specs, ['dev-0150', 'dev-0007']);
  const b = assignPhases('42', [...all].reverse(), specs, ['dev-0150', 'dev-0007']);
  t.deepEqual(a, b, 'the order the devices come in does not matter');
  t.deepEqual(a.sizes, [3, 17, 180]);
  t.deepEqual(
    a.assignments.slice(0, 2).map((x) => [x.deviceId, x.phase, x.canary]),
    [
      ['dev-0150', 1, true],
      ['dev-0007', 1, true],
    ],
  );
  t.false(a.assignments[2]!.canary);
  t.is(new Set(a.assignments.map((x) => x.deviceId)).size, 200);
  // shuffled: phase 1-2 are not simply the lowest ids; another rollout id shuffles differently
  const early = a.assignments.filter((x) => x.phase === 2).map((x) => x.deviceId);
  t.notDeepEqual(early, all.slice(0, 17));
  t.notDeepEqual(assignPhases('43', all, specs).assignments, assignPhases('42', all, specs).assignments);
});

test('assignment: a canary that is not selected, or named twice, is refused', (t) => {
  t.throws(() => assignPhases('1', ids(5), parsePhases(['100%']), ['nope']), {
    message: /canaries: nope is not one of the selected/,
  });
  t.throws(() => assignPhases('1', ids(5), parsePhases(['100%']), ['dev-0001', 'dev-0001']), {
    message: /named twice/,
  });
});

test('selector: every form parses, matches as documented, and prints canonically', (t) => {
  const r = parseSelector(' site = berlin , tier!=lab,zone in (a, b),role notin (x),gpu,!retired ');
  t.is(formatSelector(r), 'site=berlin,tier!=lab,zone in (a,b),role!=x,gpu,!retired');
  const base = { site: 'berlin', zone: 'a', gpu: 'yes' };
  t.true(matches(r, base));
  t.true(matches(r, { ...base, tier: 'prod' }));
  t.false(matches(r, { ...base, tier: 'lab' }));
  t.false(matches(r, { ...base, site: 'paris' }));
  t.false(matches(r, { ...base, zone: 'c' }));
  t.false(matches(r, { ...base, role: 'x' }));
  t.false(matches(r, { site: 'berlin', zone: 'a' }), 'gpu must be set');
  t.false(matches(r, { ...base, retired: '' }), '!retired: the key must be absent');
  t.true(matches(parseSelector('site==berlin'), { site: 'berlin' }));
  // != matches a device without the key (as in Kubernetes)
  t.true(matches(parseSelector('tier!=lab'), {}));
});

test('selector: errors name the position and what was expected', (t) => {
  const cases: Array<[string, RegExp]> = [
    ['', /selector: empty/],
    ['   ', /selector: empty/],
    ['site=berlin,', /at position 13 \(the end\): expected a label key/],
    ['site=berlin tier=lab', /at position 13 \("tier=lab"\): expected "," between requirements/],
    ['=berlin', /at position 1 \("=berlin"\): expected a label key/],
    ['zone in a,b', /expected "\(" and a list of values/],
    ['zone in (a,b', /expected "," or "\)" in the list of values/],
    ['site=ber lin', /expected ","/],
    ['x'.repeat(1025), /longer than 1024 characters/],
    [Array.from({ length: 40 }, (_, i) => `k${i}`).join(','), /at most 32 requirements/],
  ];
  for (const [text, re] of cases) {
    const e = t.throws(() => parseSelector(text), undefined, text.slice(0, 40));
    t.regex(e!.message, re);
    t.is((e as { code?: string }).code, 'InvalidInput');
  }
});
