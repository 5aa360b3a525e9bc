/**
 * Just enough of ava's `test` API to run the shared conformance suites inside the test VM, where
 * booting ava itself (worker processes, the tsx loader) under TCG emulation would cost more than the
 * tests. Tests run one after another; each result is printed as a line
 *
 *     BERTH-TEST {"title":…,"ok":true,"ms":…,"error":…,"logs":[…]}
 *
 * which the host-side ava test parses (`parseTestLines`) and asserts on. Assertions follow ava's
 * semantics for the subset the suites use; the first failed assertion ends its test.
 */
import { inspect, isDeepStrictEqual } from 'node:util';

export interface TestResult {
  title: string;
  ok: boolean;
  skipped?: boolean;
  ms: number;
  error?: string;
  logs: string[];
}

type Body = (t: MiniContext) => void | Promise<void>;

class AssertionFailed extends Error {}

interface ThrowsExpectation {
  code?: unknown;
  instanceOf?: new (...args: never[]) => unknown;
  message?: string | RegExp;
  name?: string;
}

export class MiniContext {
  readonly logs: string[] = [];
  readonly teardowns: Array<() => unknown> = [];
  failure: string | undefined;
  passed = false;
  assertions = 0;

  constructor(readonly title: string) {}

  private check(ok: boolean, what: string, message?: string): void {
    this.assertions++;
    if (!ok) {
      const why = message ? `${message}: ${what}` : what;
      this.failure ??= why;
      throw new AssertionFailed(why);
    }
  }
  log(...values: unknown[]): void {
    this.logs.push(values.map((v) => (typeof v === 'string' ? v : inspect(v))).join(' '));
  }
  pass(): void {
    this.passed = true;
    this.assertions++;
  }
  fail(message = 'failed'): void {
    this.failure ??= message;
    throw new AssertionFailed(message);
  }
  timeout(): void {}
  plan(): void {}
  teardown(fn: () => unknown): void {
    this.teardowns.push(fn);
  }
  is(actual: unknown, expected: unknown, message?: string): void {
    this.check(Object.is(actual, expected), `${inspect(actual)} is not ${inspect(expected)}`, message);
  }
  not(actual: unknown, expected: unknown, message?: string): void {
    this.check(!Object.is(actual, expected), `${inspect(actual)} is ${inspect(expected)}`, message);
  }
  deepEqual(actual: unknown, expected: unknown, message?: string): void {
    this.check(
      isDeepStrictEqual(actual, expected),
      `${inspect(actual, { depth: 6 })} is not deep-equal to ${inspect(expected, { depth: 6 })}`,
      message,
    );
  }
  notDeepEqual(actual: unknown, expected: unknown, message?: string): void {
    this.check(!isDeepStrictEqual(actual, expected), `${inspect(actual)} deep-equals it`, message);
  }
  true(v: unknown, message?: string): void {
    this.check(v === true, `${inspect(v)} is not true`, message);
  }
  false(v: unknown, message?: string): void {
    this.check(v === false, `${inspect(v)} is not false`, message);
  }
  truthy(v: unknown, message?: string): void {
    this.check(!!v, `${inspect(v)} is not truthy`, message);
  }
  falsy(v: unknown, message?: string): void {
    this.check(!v, `${inspect(v)} is not falsy`, message);
  }
  regex(s: string, re: RegExp, message?: string): void {
    this.check(re.test(s), `${inspect(s)} does not match ${re}`, message);
  }
  async throwsAsync(
    thrower: Promise<unknown> | (() => Promise<unknown>),
    exp: ThrowsExpectation = {},
    message?: string,
  ): Promise<unknown> {
    let err: unknown;
    let threw = false;
    try {
      await (typeof thrower === 'function' ? thrower() : thrower);
    } catch (e) {
      err = e;
      threw = true;
    }
    this.check(threw, 'did not throw', message);
    this.matchError(err, exp, message);
    return err;
  }
  throws(fn: () => unknown, exp: ThrowsExpectation = {}, message?: string): unknown {
    let err: unknown;
    let threw = false;
    try {
      fn();
    } catch (e) {
      err = e;
      threw = true;
    }
    this.check(threw, 'did not throw', message);
    this.matchError(err, exp, message);
    return err;
  }
  async notThrowsAsync(p: Promise<unknown> | (() => Promise<unknown>), message?: string): Promise<void> {
    try {
      await (typeof p === 'function' ? p() : p);
      this.assertions++;
    } catch (e) {
      this.check(false, `threw ${describe(e)}`, message);
    }
  }
  private matchError(err: unknown, exp: ThrowsExpectation, message?: string): void {
    const e = err as { code?: unknown; message?: string; name?: string };
    if (exp.instanceOf)
      this.check(err instanceof exp.instanceOf, `${describe(err)} is not the expected class`, message);
    if ('code' in exp)
      this.check(
        e?.code === exp.code,
        `error code ${inspect(e?.code)} (${describe(err)}), expected ${inspect(exp.code)}`,
        message,
      );
    if (exp.name !== undefined) this.check(e?.name === exp.name, `error name ${e?.name}`, message);
    if (typeof exp.message === 'string')
      this.check(e?.message === exp.message, `message ${e?.message}`, message);
    if (exp.message instanceof RegExp)
      this.check(exp.message.test(e?.message ?? ''), `message ${e?.message}`, message);
  }
}

const describe = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : inspect(e));

export function createMiniAva() {
  const tests: Array<{ title: string; body: Body }> = [];
  const test = (title: string, body: Body) => {
    tests.push({ title, body });
  };
  test.serial = test;

  /** Run every registered test (optionally only titles matching `filter`); returns the results. */
  async function run(opts: { filter?: RegExp; print?: boolean } = {}): Promise<TestResult[]> {
    const results: TestResult[] = [];
    for (const { title, body } of tests) {
      if (opts.filter && !opts.filter.test(title)) continue;
      const t = new MiniContext(title);
      const started = Date.now();
      let error: string | undefined;
      try {
        await body(t);
        if (t.assertions === 0 && !t.passed) error = 'test finished without running any assertions';
      } catch (e) {
        error = e instanceof AssertionFailed ? e.message : ((e as Error)?.stack ?? describe(e));
      }
      for (const td of t.teardowns.reverse()) {
        try {
          await td();
        } catch (e) {
          error ??= `teardown failed: ${describe(e)}`;
        }
      }
      error ??= t.failure;
      const r: TestResult = { title, ok: error === undefined, ms: Date.now() - started, logs: t.logs };
      if (error !== undefined) r.error = error;
      results.push(r);
      if (opts.print ?? true) console.log(`BERTH-TEST ${JSON.stringify(r)}`);
    }
    return results;
  }

  return { test, run };
}

/** The results a guest printed (see the file header). Pure. */
export function parseTestLines(output: string): TestResult[] {
  const out: TestResult[] = [];
  for (const line of output.split('\n')) {
    if (line.startsWith('BERTH-TEST ')) out.push(JSON.parse(line.slice('BERTH-TEST '.length)) as TestResult);
  }
  return out;
}
