/**
 * The web console end to end: a real fleet server (embedded authenticated broker, its stores, bus and
 * services) with the HTTP API and the console on a loopback port, and a real headless Chromium (Debian's
 * `chromium`, driven by playwright-core) on a fresh profile. Every page a test opens is watched: a CSP
 * violation, an uncaught page error or an alert() (an injected script running) fails the test.
 */
import { accessSync, constants, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import type { EmbeddedAsset } from '../../src/fleet/console/assets.js';
import type { Role } from '../../src/fleet/identity/roles.js';
import { IdentityService } from '../../src/fleet/identity/service.js';
import { IdentityStore } from '../../src/fleet/identity/store.js';
import { serveApiOn } from './fleet-api.js';
import { type FleetSide, startFleet } from './fleet-harness.js';
import { missingFeature } from './privileged.js';

export const CHROMIUM = process.env.BERTH_CHROMIUM ?? '/usr/bin/chromium';
export const ARTIFACTS = path.resolve('test-artifacts', 'console');

/** Why the browser cannot run here, or undefined when CHROMIUM is an executable file. */
export function chromiumMissing(): string | undefined {
  try {
    accessSync(CHROMIUM, constants.X_OK);
    return undefined;
  } catch (err) {
    return (
      `no headless browser: ${CHROMIUM} is not an executable (${(err as NodeJS.ErrnoException).code}); ` +
      "scripts/bootstrap.sh installs Debian's chromium (BERTH_CHROMIUM names another)"
    );
  }
}

/**
 * Probe for the browser before a browser test sets anything up. Without it the test is skipped with the
 * reason on a developer machine and fails with it under BERTH_REQUIRE_PRIVILEGED=1 (CI), never silently.
 */
export function needChromium(t: ExecutionContext): boolean {
  const missing = chromiumMissing();
  if (missing === undefined) return true;
  missingFeature(t, missing);
  return false;
}

let built: Promise<EmbeddedAsset[]> | undefined;
/** The console as the berth bundle embeds it (scripts/console-build.mjs), built once per test process. */
export function consoleAssets(): Promise<EmbeddedAsset[]> {
  // @ts-expect-error: a plain ES module of the build scripts (JSDoc-typed)
  built ??= import('../../scripts/console-build.mjs').then(
    (m) => m.buildConsole() as Promise<EmbeddedAsset[]>,
  );
  return built;
}

export interface ConsoleFleet {
  fleet: FleetSide;
  url: string;
  /** the identity service over the server's fleet.db (users, audit) */
  identity: IdentityService;
  /** a user with a password, for logging in from the page */
  addUser(name: string, role: Role, password?: string): Promise<{ name: string; password: string }>;
}

export async function startConsoleFleet(t: ExecutionContext): Promise<ConsoleFleet> {
  const fleet = await startFleet(t);
  // the API as `berth fleet serve --http` starts it, with the console built from this checkout
  const api = await serveApiOn(t, fleet, { console: await consoleAssets() });
  const identity = new IdentityService(new IdentityStore(fleet.stores.db));
  return {
    fleet,
    url: api.server.url,
    identity,
    addUser: async (name, role, password = `pw-${name}-0123456789`) => {
      await identity.addUser(name, role, password);
      return { name, password };
    },
  };
}

export interface Watched {
  page: Page;
  /** CSP violations, page errors and dialogs seen so far */
  problems: string[];
}

/** Headless Chromium with a fresh profile, closed at teardown. */
export async function launchBrowser(t: ExecutionContext): Promise<BrowserContext> {
  const missing = chromiumMissing();
  if (missing !== undefined) throw new Error(missing);
  const profile = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
    viewport: { width: 1360, height: 900 },
    deviceScaleFactor: 1,
    timeout: 60_000,
  });
  t.teardown(async () => {
    await context.close().catch(() => undefined);
    await fsp.rm(profile, { recursive: true, force: true });
  });
  return context;
}

/** A new page that records what must never happen: a CSP violation, an uncaught error, a dialog. */
export async function watchedPage(context: BrowserContext): Promise<Watched> {
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('dialog', (d) => {
    problems.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  page.on('console', (m) => {
    const text = m.text();
    if (/Content Security Policy|Refused to (execute|load|apply|connect)/i.test(text))
      problems.push(`CSP: ${text}`);
  });
  // (a string: this runs in the page, not in node)
  await page.addInitScript({
    content:
      "document.addEventListener('securitypolicyviolation', (e) => " +
      "console.error('Refused to load: CSP violation ' + e.violatedDirective + ' ' + e.blockedURI));",
  });
  return { page, problems };
}

export async function login(
  page: Page,
  url: string,
  user: { name: string; password: string },
): Promise<void> {
  await page.goto(url);
  await page.getByLabel('User name').fill(user.name);
  await page.getByLabel('Password').fill(user.password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('user').waitFor();
}

/** Run axe-core in the page; the serious and critical violations (rule id: nodes). */
export async function axe(page: Page): Promise<string[]> {
  const source = await fsp.readFile(path.resolve('node_modules/axe-core/axe.min.js'), 'utf8');
  // injected through the DevTools protocol, so the page's CSP does not apply to it
  await page.evaluate(source);
  const result = (await page.evaluate("axe.run(document, { resultTypes: ['violations'] })")) as {
    violations: Array<{ id: string; impact: string; nodes: Array<{ target: string[] }> }>;
  };
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

export async function screenshot(page: Page, name: string): Promise<string> {
  await fsp.mkdir(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

export type { Browser };
