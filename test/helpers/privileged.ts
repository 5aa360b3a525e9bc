import { existsSync } from 'node:fs';
import type { ExecutionContext } from 'ava';

/**
 * Gate for tests that need root and a kernel feature. On a developer machine without them the test is
 * skipped with the reason; with BERTH_REQUIRE_PRIVILEGED=1 (CI) a missing capability fails the test.
 * Returns true when the test may go on.
 */
export function needPrivileges(
  t: ExecutionContext,
  what: { root?: boolean; paths?: string[] } = { root: true },
): boolean {
  const missing: string[] = [];
  if ((what.root ?? true) && process.getuid?.() !== 0) missing.push('root');
  for (const p of what.paths ?? []) if (!existsSync(p)) missing.push(p);
  if (missing.length === 0) return true;
  missingFeature(t, `privileged test cannot run: needs ${missing.join(', ')}`);
  return false;
}

/**
 * A host feature the test needs is absent: with BERTH_REQUIRE_PRIVILEGED=1 (CI) the test fails naming it;
 * on a developer machine it ends as skipped, the reason logged. ava counts a test without an assertion as
 * a failure, so the skip is the one `t.pass()` of the suite that stands for "not run" — always beside a
 * log line saying why, never after a check.
 */
export function missingFeature(t: ExecutionContext, why: string): void {
  if (process.env.BERTH_REQUIRE_PRIVILEGED === '1') {
    t.fail(`${why} (BERTH_REQUIRE_PRIVILEGED=1)`);
  } else {
    t.log(`skipped: ${why}`);
    t.pass();
  }
}
