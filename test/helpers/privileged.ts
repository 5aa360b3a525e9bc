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
  const why = `needs ${missing.join(', ')}`;
  if (process.env.BERTH_REQUIRE_PRIVILEGED === '1') {
    t.fail(`privileged test cannot run: ${why} (BERTH_REQUIRE_PRIVILEGED=1)`);
  } else {
    t.log(`skipped: ${why}`);
    t.pass();
  }
  return false;
}
