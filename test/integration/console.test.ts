/**
 * The web console in a real headless Chromium against a real fleet server (embedded authenticated broker,
 * ingest, bus, HTTP API) with simulated devices speaking the real protocol: login and role, the pages with
 * their data and live updates, what a viewer is offered and what a forged request from the page gets, HTML
 * in device data shown as text, axe-core on every page, the CSP never violated, and 10,000 devices paged
 * in the page with the timings printed. Screenshots go to test-artifacts/console/.
 */
import { createPublicKey } from 'node:crypto';
import test, { type ExecutionContext } from 'ava';
import { CONSOLE_CSP } from '../../src/fleet/console/assets.js';
import { loadFleetPrivateKey } from '../../src/fleet/keys.js';
import { parseTopic } from '../../src/transport/topics.js';
import {
  axe,
  consoleAssets,
  launchBrowser,
  login,
  needChromium,
  screenshot,
  startConsoleFleet,
  watchedPage,
} from '../helpers/console.js';
import { type SimulatorOptions, startSimulator } from '../helpers/device-sim.js';
import { FLEET, waitFor } from '../helpers/fleet-harness.js';
import { putTestImage } from '../helpers/fleet-images.js';

const XSS = '<img src=x onerror=window.__xss=1>';

// Run in the page (as source text: the test's transpiler would add helpers the page does not have).
const FORGE_AS_VIEWER = `async (id) => {
  const session = await (await fetch('/api/v1/session')).json();
  const send = (headers) =>
    fetch('/api/v1/devices/' + id + '/commands', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ kind: 'report' }),
    }).then(async (r) => ({ status: r.status, code: (await r.json()).code }));
  return {
    withCsrf: await send({ 'x-csrf-token': session.csrfToken }),
    withoutCsrf: await send({}),
    user: await fetch('/api/v1/users', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': session.csrfToken },
      body: JSON.stringify({ name: 'mallory', role: 'admin', password: 'password-1234' }),
    }).then((r) => r.status),
  };
}`;
const FORGE_AS_OPERATOR = `async (id) => {
  const session = await (await fetch('/api/v1/session')).json();
  const send = (headers) =>
    fetch('/api/v1/devices/' + id + '/commands', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ kind: 'report', timeoutMs: 10000 }),
    }).then(async (r) => ({ status: r.status, message: (await r.json()).message }));
  return { without: await send({}), wrong: await send({ 'x-csrf-token': 'x'.repeat(43) }), right: await send({ 'x-csrf-token': session.csrfToken }) };
}`;

/**
 * A console fleet with `images` (tags of one small test image) and simulated devices speaking the real
 * protocol (the fleet's key and account filled in), every device online before it returns.
 */
async function consoleWithDevices(
  t: ExecutionContext,
  o: { images?: string[] } & Omit<SimulatorOptions, 'url' | 'fleet' | 'publicKey' | 'account'>,
) {
  const { images = [], ...simulated } = o;
  const c = await startConsoleFleet(t);
  const { fleet } = c;
  if (images.length > 0) {
    const img = await putTestImage(fleet.store, { layerSizes: [1000] });
    for (const tag of images) await fleet.addImage(tag, img.digest, img.mediaType);
  }
  const sim = await startSimulator({
    url: fleet.server.brokerUrl,
    fleet: FLEET,
    publicKey: createPublicKey(await loadFleetPrivateKey(fleet.dir)),
    account: fleet.server.fleetAccount,
    ...simulated,
  });
  t.teardown(() => sim.stop());
  await sim.ready();
  await waitFor(
    () => fleet.stores.devices.list({ online: true }).total === sim.ids.length,
    15_000,
    'all online',
  );
  return { c, fleet, sim };
}

test('the console is served at / beside the API: strict CSP, no inline script or style, gzip, caching', async (t) => {
  const { url } = await startConsoleFleet(t);
  const index = await fetch(`${url}/`, { headers: { 'accept-encoding': 'gzip' } });
  t.is(index.status, 200);
  t.is(index.headers.get('content-security-policy'), CONSOLE_CSP);
  for (const d of ["script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "default-src 'none'"])
    t.true(CONSOLE_CSP.includes(d), d);
  t.false(CONSOLE_CSP.includes('unsafe'), 'no unsafe-inline / unsafe-eval');
  t.is(index.headers.get('x-frame-options'), 'DENY');
  t.is(index.headers.get('x-content-type-options'), 'nosniff');
  t.is(index.headers.get('cache-control'), 'no-cache');
  const html = await index.text();
  t.regex(html, /<script type="module" src="\/assets\/app-[A-Z0-9]+\.js"><\/script>/);
  t.notRegex(html, /<script(?![^>]*\ssrc=)[^>]*>/, 'no inline script');
  t.notRegex(html, /\sstyle=|<style/, 'no inline style');
  t.notRegex(html, /csrf|token|password|secret/i, 'no secret in the page');
  // every embedded asset is served, hashed ones cached for good, with 304 on a matching ETag
  for (const a of await consoleAssets()) {
    const r = await fetch(`${url}${a.path}`);
    t.is(r.status, 200, a.path);
    t.is(r.headers.get('content-type'), a.type);
    const body = Buffer.from(await r.arrayBuffer());
    t.is(body.length, a.size, `${a.path} gunzipped for a client without gzip`);
    if (a.immutable) t.regex(r.headers.get('cache-control') ?? '', /immutable/);
    const again = await fetch(`${url}${a.path}`, { headers: { 'if-none-match': r.headers.get('etag')! } });
    t.is(again.status, 304);
  }
  // the API keeps its paths: an unknown API route is the API's JSON 404, not the app
  const api = await fetch(`${url}/api/v1/nope`);
  t.is(api.status, 404);
  t.is(((await api.json()) as { code: string }).code, 'NotFound');
  t.is((await fetch(`${url}/assets/nope.js`)).status, 404);
  t.is((await fetch(`${url}/`, { method: 'POST' })).status, 404);
});

test('login, every page with simulated devices, live updates, axe-core clean, CSP never violated; screenshots', async (t) => {
  if (!needChromium(t)) return;
  const c = await startConsoleFleet(t);
  const { fleet } = c;
  const img = await putTestImage(fleet.store, { layerSizes: [1000] });
  await fleet.addImage('app:1', img.digest, img.mediaType);
  await fleet.addImage('app:2', img.digest, img.mediaType);
  const publicKey = createPublicKey(await loadFleetPrivateKey(fleet.dir));
  const sim = await startSimulator({
    url: fleet.server.brokerUrl,
    fleet: FLEET,
    count: 24,
    idPrefix: 'edge',
    groups: (_id, i) => (i < 4 ? ['canary', 'site-a'] : ['site-a']),
    publicKey,
    account: fleet.server.fleetAccount,
    failShare: 0.2,
    metricsMs: 300,
    platform: 'linux/arm64',
  });
  t.teardown(() => sim.stop());
  await sim.ready();
  await waitFor(() => fleet.stores.devices.list({ online: true }).total === 24, 15_000, 'all online');
  const apps = (tag: string) => ({ web: { services: { main: { image: `app:${tag}` } } } });
  const { deploy } = fleet.server.services;
  await deploy.deploy({ apps: apps('1'), images: ['app:1'] }, { kind: 'group', id: 'site-a' });
  await waitFor(() => deploy.progress({ kind: 'group', id: 'site-a', version: 1 }).done, 15_000, 'v1 done');
  await deploy.deploy({ apps: apps('2'), images: ['app:2'] }, { kind: 'group', id: 'site-a' });
  await waitFor(() => deploy.progress({ kind: 'group', id: 'site-a', version: 2 }).done, 15_000, 'v2 done');
  const failed = fleet.stores.devices.list({ status: 'rolled-back' }).total ?? 0;
  t.true(failed > 0, 'some devices rolled back');

  const admin = await c.addUser('alice', 'admin');
  const browser = await launchBrowser(t);
  const { page, problems } = await watchedPage(browser);

  // everything behind the login: the app shows the login form, the API refuses
  await page.goto(`${c.url}/#/devices`);
  await page.getByRole('heading', { name: 'berth fleet console' }).waitFor();
  t.deepEqual(await axe(page), [], 'login page');
  await screenshot(page, '01-login');
  await page.getByLabel('User name').fill('alice');
  await page.getByLabel('Password').fill('wrong password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('alert').filter({ hasText: 'Unauthenticated' }).waitFor();
  await login(page, c.url, admin);
  t.regex((await page.getByTestId('user').textContent()) ?? '', /alice\s+admin/);

  // overview: counts from the server, failures with their reasons
  await page.goto(`${c.url}/#/`);
  await page.getByRole('heading', { name: 'Fleet overview' }).waitFor();
  await page.getByText('By platform').waitFor();
  const tile = page.locator('a.tile', { hasText: 'Rolled back' }).locator('.tile-value');
  t.is((await tile.textContent()) ?? '', String(failed));
  t.is(
    (await page.locator('a.tile', { hasText: 'Online' }).locator('.tile-value').textContent()) ?? '',
    '24',
  );
  await page.getByRole('link', { name: 'linux/arm64' }).waitFor();
  t.true((await page.locator('.failures li').count()) > 0);
  t.deepEqual(await axe(page), [], 'overview');
  await screenshot(page, '02-overview');

  // live: a device goes away and the overview follows without a reload
  const gone = sim.ids[23]!;
  await sim.stop();
  await waitFor(() => fleet.stores.devices.list({ online: false }).total === 24, 15_000, 'offline');
  await page.locator('a.tile', { hasText: 'Offline' }).locator('.tile-value', { hasText: '24' }).waitFor();
  t.truthy(gone);

  // devices: filter by status through the form, the URL keeps it
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Devices' }).click();
  await page.getByTestId('devices-table').waitFor();
  t.is(await page.locator('[data-testid=devices-table] tbody tr').count(), 24);
  await page.getByLabel('Status').selectOption('rolled-back');
  await page.locator('#devices-count', { hasText: `of ${failed}` }).waitFor();
  t.regex(page.url(), /status=rolled-back/);
  t.deepEqual(await axe(page), [], 'devices');
  await screenshot(page, '03-devices');
  await page.getByLabel('Search').fill('edge-0000');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForURL(/q=edge-0000/);

  // device detail: identity, target, services, metrics charts, events
  const one = sim.ids[0]!;
  await page.goto(`${c.url}/#/devices/${one}`);
  await page.getByRole('heading', { name: 'Identity' }).waitFor();
  await page.getByText('group site-a 2', { exact: false }).first().waitFor();
  await page.locator('.chart canvas').first().waitFor();
  await page.getByTestId('events').waitFor();
  t.deepEqual(await axe(page), [], 'device detail');
  await screenshot(page, '04-device');

  await page.goto(`${c.url}/#/images`);
  await page.getByRole('cell', { name: 'app:2' }).waitFor();
  t.deepEqual(await axe(page), [], 'images');
  await screenshot(page, '05-images');

  await page.goto(`${c.url}/#/deploy`);
  await page.getByLabel('Compose file or target JSON').waitFor();
  t.deepEqual(await axe(page), [], 'deploy');
  await screenshot(page, '06-deploy');

  await page.goto(`${c.url}/#/rollouts`);
  await page.getByRole('heading', { name: 'Rollouts', exact: true }).waitFor();
  t.deepEqual(await axe(page), [], 'rollouts');

  for (const tab of ['tokens', 'users', 'audit']) {
    await page.goto(`${c.url}/#/admin/${tab}`);
    await page.getByRole('heading', { name: 'Administration' }).waitFor();
    await page.locator('table, .state-empty').first().waitFor();
    t.deepEqual(await axe(page), [], `admin ${tab}`);
    await screenshot(page, `07-admin-${tab}`);
  }
  // an API token is shown once, then only its id
  await page.goto(`${c.url}/#/admin/tokens`);
  await page.getByLabel('Name').fill('ci');
  await page.getByRole('button', { name: 'Create token' }).click();
  const secret = (await page.getByTestId('secret').textContent()) ?? '';
  t.regex(secret.trim(), /^berth_/);
  await page.getByRole('button', { name: 'Done' }).click();
  await page.getByRole('cell', { name: 'ci', exact: true }).waitFor();
  t.false((await page.content()).includes(secret.trim()), 'the secret is gone from the page');

  // logout ends the session for the API too
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('heading', { name: 'berth fleet console' }).waitFor();
  const after = await page.evaluate("fetch('/api/v1/session').then((r) => r.status)");
  t.is(after, 401);
  t.deepEqual(problems, []);
});

test('a viewer is offered no change, and changes forged from the page are refused (role, CSRF)', async (t) => {
  if (!needChromium(t)) return;
  const { c, sim } = await consoleWithDevices(t, { count: 3, idPrefix: 'view' });
  const viewer = await c.addUser('vic', 'viewer');
  const operator = await c.addUser('olga', 'operator');
  const browser = await launchBrowser(t);
  const { page, problems } = await watchedPage(browser);

  await login(page, c.url, viewer);
  t.regex((await page.getByTestId('user').textContent()) ?? '', /vic\s+viewer/);
  t.is(await page.getByRole('link', { name: 'Deploy' }).count(), 0, 'no Deploy in the menu');
  await page.goto(`${c.url}/#/devices`);
  await page.getByTestId('devices-table').waitFor();
  t.is(await page.locator('input[type=checkbox]').count(), 0, 'no bulk selection');
  await page.goto(`${c.url}/#/devices/${sim.ids[0]}`);
  await page.getByRole('heading', { name: 'Apps and services' }).waitFor();
  for (const name of ['Revoke device', 'Re-report', 'Restart', 'Restart app', 'Logs'])
    t.is(await page.getByRole('button', { name, exact: true }).count(), 0, name);
  await page.goto(`${c.url}/#/deploy`);
  await page.getByText('may look but not deploy').waitFor();
  await page.goto(`${c.url}/#/images`);
  await page.getByRole('heading', { name: 'Images' }).waitFor();
  t.is(await page.getByRole('button', { name: 'Upload' }).count(), 0);
  await page.goto(`${c.url}/#/rollouts?create=1`);
  await page.getByText('No rollout yet.').waitFor();
  t.is(await page.getByRole('link', { name: 'New rollout' }).count(), 0, 'no New rollout');
  t.is(await page.getByRole('button', { name: 'Start rollout' }).count(), 0, 'no create form');
  await page.goto(`${c.url}/#/admin`);
  t.is(await page.getByRole('link', { name: 'Users' }).count(), 0);
  t.is(await page.getByRole('link', { name: 'Audit log' }).count(), 0);

  // forged from the page's own context: with the session cookie, with and without the CSRF token
  const forged = (await page.evaluate(`(${FORGE_AS_VIEWER})(${JSON.stringify(sim.ids[0])})`)) as {
    withCsrf: { status: number; code: string };
    withoutCsrf: { status: number; code: string };
    user: number;
  };
  t.deepEqual(forged.withCsrf, { status: 403, code: 'PermissionDenied' }, 'role refused');
  t.deepEqual(forged.withoutCsrf, { status: 403, code: 'PermissionDenied' });
  t.is(forged.user, 403);

  // an operator's session without the CSRF header is refused too; with it the same call goes through
  await page.getByRole('button', { name: 'Log out' }).click();
  await login(page, c.url, operator);
  const op = (await page.evaluate(`(${FORGE_AS_OPERATOR})(${JSON.stringify(sim.ids[0])})`)) as Record<
    'without' | 'wrong' | 'right',
    { status: number; message?: string }
  >;
  t.is(op.without.status, 403);
  t.regex(op.without.message ?? '', /CSRF/);
  t.is(op.wrong.status, 403);
  t.is(op.right.status, 200);
  const refused = c.identity
    .auditLog({ limit: 50 })
    .filter((a) => a.action === 'device.command' && a.result !== 'ok');
  t.true(refused.length >= 4, 'the refused calls are audited');
  t.deepEqual(problems, []);
});

test('HTML in device data is shown as text: a device id, its platform and agent version', async (t) => {
  if (!needChromium(t)) return;
  const c = await startConsoleFleet(t);
  const { fleet } = c;
  // such an id cannot come over MQTT (the topic parser refuses it) — the page must not trust that
  t.is(parseTopic(`berth/v1/${FLEET}/devices/${XSS}/status`), undefined);
  const at = Date.now();
  fleet.stores.devices.applyStatus([{ deviceId: XSS, online: true, at, platform: XSS, agentVersion: XSS }]);
  const admin = await c.addUser('ada', 'admin');
  const browser = await launchBrowser(t);
  const { page, problems } = await watchedPage(browser);
  await login(page, c.url, admin);
  const views: Array<[string, () => Promise<void>]> = [
    ['#/', () => page.getByRole('link', { name: XSS }).first().waitFor()],
    ['#/devices', () => page.locator('a.devid', { hasText: XSS }).waitFor()],
    [
      `#/devices/${encodeURIComponent(XSS)}`,
      () => page.getByRole('heading', { name: `Device ${XSS}` }).waitFor(),
    ],
  ];
  for (const [view, shown] of views) {
    await page.goto(`${c.url}/${view}`);
    await shown();
    t.is(await page.locator('img[src=x]').count(), 0, view);
    t.is(await page.evaluate('globalThis.__xss'), undefined, view);
  }
  t.deepEqual(problems, []);
});

test('a pending reconcile retry on the device page: countdown, attempt, the error as bounded text; Retry now reaches the device, audited; offline it is not offered', async (t) => {
  if (!needChromium(t)) return;
  // the agent's own words after a failed pull, with HTML in them and 4 KiB long (the wire's bound)
  const lastError = `Unavailable: fetch web:2: ${XSS} ${'fleet overloaded '.repeat(300)}`.slice(0, 4096);
  const { c, fleet, sim } = await consoleWithDevices(t, {
    count: 3,
    idPrefix: 'retry',
    // the first and third device wait 10 minutes for their 9th try; the second has nothing pending
    retry: (_id, i) => (i !== 1 ? { at: Date.now() + 600_000, attempt: 9, lastError } : undefined),
  });
  const [pending, fine, later] = sim.ids as [string, string, string];
  await waitFor(
    () => fleet.stores.devices.detail(pending)?.state?.target.retry !== undefined,
    15_000,
    'the retry reported',
  );
  const viewer = await c.addUser('vera', 'viewer');
  const operator = await c.addUser('otto', 'operator');
  const browser = await launchBrowser(t);
  const { page, problems } = await watchedPage(browser);

  // a viewer sees the retry but is offered no button
  await login(page, c.url, viewer);
  await page.goto(`${c.url}/#/devices/${pending}`);
  await page
    .getByTestId('retry')
    .getByText(/^retry in (9|10) min \(attempt 9\)$/)
    .waitFor();
  t.is(await page.getByRole('button', { name: 'Retry now' }).count(), 0, 'no Retry now for a viewer');
  await page.getByRole('button', { name: 'Log out' }).click();

  await login(page, c.url, operator);
  await page.goto(`${c.url}/#/devices/${pending}`);
  const retryNow = page.getByRole('button', { name: 'Retry now' });
  await retryNow.waitFor();
  t.regex((await page.getByTestId('retry').textContent()) ?? '', /retry in (9|10) min \(attempt 9\)/);
  // the error: as text, never markup, and cut to a bound
  const shown = (await page.getByTestId('retry-error').textContent()) ?? '';
  t.true(shown.startsWith(`Unavailable: fetch web:2: ${XSS} fleet overloaded`), shown.slice(0, 80));
  t.true(shown.length <= 300 && shown.endsWith('…'), `${shown.length} characters shown`);
  t.is(await page.locator('img[src=x]').count(), 0);
  t.is(await page.evaluate('globalThis.__xss'), undefined);
  t.deepEqual(await axe(page), [], 'device with a pending retry');
  await screenshot(page, '10-device-retry');

  // Retry now: the signed command reaches the device, which answers; the call is audited; the device's
  // next report has nothing pending and the page follows it live
  await retryNow.click();
  await page.getByRole('status').getByText(`${pending} is retrying now`).waitFor();
  t.deepEqual(sim.commandLog, [{ deviceId: pending, kind: 'retry' }]);
  const audited = c.identity.auditLog({ limit: 20 }).filter((a) => a.action === 'device.command');
  t.like(audited[0], { actor: 'user:otto', target: `${pending} retry`, result: 'ok' });
  await page.getByTestId('retry').waitFor({ state: 'detached' });
  t.is(await retryNow.count(), 0);

  // a device with nothing pending shows nothing of it
  await page.goto(`${c.url}/#/devices/${fine}`);
  await page.getByRole('heading', { name: 'Target' }).waitFor();
  await page.getByRole('heading', { name: 'Apps and services' }).waitFor();
  t.is(await page.getByTestId('retry').count(), 0);
  t.is(await page.getByText(/retry in|retry due/).count(), 0);
  t.is(await page.getByRole('button', { name: 'Retry now' }).count(), 0);

  // offline, the retry shown is the device's last report, and nobody would answer the command
  await sim.stop();
  await waitFor(() => fleet.stores.devices.get(later)?.online === false, 15_000, 'offline');
  await page.goto(`${c.url}/#/devices/${later}`);
  await page.getByTestId('retry').getByText('offline: as last reported').waitFor();
  t.true(await page.getByRole('button', { name: 'Retry now' }).isDisabled());
  t.is(sim.commandLog.length, 1, 'nothing more sent');
  t.deepEqual(problems, []);
});

test('a group deploy from the Deploy page answers with the rollout it became: a link to its page, and the list has it', async (t) => {
  if (!needChromium(t)) return;
  const { c, fleet, sim } = await consoleWithDevices(t, {
    images: ['app:1'],
    count: 3,
    idPrefix: 'shop',
    groups: () => ['shops'],
  });
  const operator = await c.addUser('dora', 'operator');
  const browser = await launchBrowser(t);
  const { page, problems } = await watchedPage(browser);
  await login(page, c.url, operator);

  await page.goto(`${c.url}/#/deploy`);
  await page.getByLabel('A group').check();
  await page.getByLabel('Group', { exact: true }).fill('shops');
  await page
    .getByLabel('Compose file or target JSON')
    .fill('name: web\nservices:\n  main:\n    image: app:1\n');
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  const link = page.getByTestId('deploy-rollout');
  await link.waitFor();
  const made = fleet.server.services.rollouts.list({ limit: 10 }).items.map((v) => v.row);
  t.is(made.length, 1, 'the group deploy is one rollout');
  const id = made[0]!.id;
  t.like(made[0], { name: 'deploy', group: 'shops', createdBy: 'user:dora' });
  t.is((await link.textContent())?.trim(), `rollout ${id}`);
  await page.getByRole('status').getByText(`published group shops 1 as rollout ${id}`).waitFor();
  await page.getByText('3 of 3 converged').waitFor();
  t.deepEqual(await axe(page), [], 'deploy page after a group deploy');
  await screenshot(page, '11-deploy-group');

  // the link leads to the rollout's page, and the rollouts list shows it
  await link.click();
  await page.waitForURL(new RegExp(`#/rollouts/${id}$`));
  await page.getByRole('heading', { name: `Rollout deploy (#${id})` }).waitFor();
  await page.getByRole('link', { name: 'Rollouts', exact: true }).click();
  const row = page
    .getByTestId('rollouts-table')
    .getByRole('row')
    .filter({
      has: page.getByRole('link', { name: `deploy (#${id})` }),
    });
  await row.getByText('group shops').waitFor();
  await row.locator('.badge-succeeded').waitFor({ timeout: 30_000 });

  // a device deploy stays a direct override: no rollout to link to
  await page.goto(`${c.url}/#/deploy?devices=${sim.ids[0]}`);
  await page
    .getByLabel('Compose file or target JSON')
    .fill('name: web\nservices:\n  main:\n    image: app:1\n');
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  await page.getByRole('status').getByText('published device 1').waitFor();
  await page.getByRole('heading', { name: `${sim.ids[0]}: device 1` }).waitFor();
  t.is(await page.getByTestId('deploy-rollout').count(), 0);
  t.is(fleet.server.services.rollouts.list({ limit: 10 }).items.length, 1);
  t.deepEqual(problems, []);
});

test('release history on the device page: current marked, Redeploy behind a confirmation that says what it publishes; a viewer sees no button; axe clean', async (t) => {
  if (!needChromium(t)) return;
  const { c, fleet, sim } = await consoleWithDevices(t, {
    images: ['app:1', 'app:2'],
    count: 2,
    idPrefix: 'hist',
    groups: () => ['lab'],
  });
  const deployGroup = (tag: string) =>
    fleet.server.services.rollouts.deployGroup(
      { apps: { web: { services: { main: { image: tag } } } }, images: [tag] },
      'lab',
      { createdBy: 'user:earlier' },
    );
  const v1 = (await deployGroup('app:1')).deployment;
  await deployGroup('app:2');
  const device = sim.ids[0]!;
  await waitFor(
    () => fleet.stores.devices.get(device)?.applied?.version === 2,
    15_000,
    'the device runs group lab 2',
  );
  const viewer = await c.addUser('hugo', 'viewer');
  const operator = await c.addUser('olga', 'operator');
  const browser = await launchBrowser(t);
  const { page, problems } = await watchedPage(browser);
  const history = page.getByTestId('history-table');
  const row = (version: number) =>
    history
      .getByRole('row')
      .filter({ has: page.getByRole('rowheader', { name: new RegExp(`^${version}\\b`) }) });

  // a viewer: the history of the scope the device follows, the current one marked, no Redeploy
  await login(page, c.url, viewer);
  await page.goto(`${c.url}/#/devices/${device}`);
  await page.getByRole('heading', { name: 'Releases of group lab' }).waitFor();
  await row(1).waitFor();
  t.is(await history.getByRole('row').count(), 3, 'a header and two releases');
  t.regex((await row(2).textContent()) ?? '', /current.*app:2.*user:earlier/);
  t.regex((await row(1).textContent()) ?? '', /app:1.*user:earlier/);
  t.false(((await row(1).textContent()) ?? '').includes('current'));
  t.is(await page.getByRole('button', { name: 'Redeploy' }).count(), 0, 'no Redeploy for a viewer');
  t.deepEqual(await axe(page), [], 'device page with release history (viewer)');
  await page.getByRole('button', { name: 'Log out' }).click();

  // an operator: Redeploy on the earlier release only, behind a confirmation naming both versions
  await login(page, c.url, operator);
  await page.goto(`${c.url}/#/devices/${device}`);
  await row(1).waitFor();
  t.is(await row(2).getByRole('button', { name: 'Redeploy' }).count(), 0, 'not on the current release');
  await row(1).getByRole('button', { name: 'Redeploy' }).click();
  await row(1).getByText('Publish version 1 of group lab as version 3?').waitFor();
  t.deepEqual(await axe(page), [], 'redeploy confirmation');
  await screenshot(page, '12-release-history');
  t.is(fleet.stores.deployments.nextVersion({ kind: 'group', id: 'lab' }), 3, 'nothing published yet');
  await row(1).getByRole('button', { name: 'Yes, redeploy' }).click();
  await page.getByRole('status').getByText('Published version 1 of group lab again').waitFor();
  await row(3).waitFor();
  t.regex((await row(3).textContent()) ?? '', /current.*app:1.*user:olga.*redeploy of version 1/);
  const audited = c.identity.auditLog({ limit: 20 }).filter((a) => a.action === 'deployment.redeploy');
  t.like(audited[0], {
    actor: 'user:olga',
    target: 'group lab 3',
    result: 'ok',
    message: `redeploy of deployment ${v1.id}`,
  });
  await waitFor(
    () => sim.ids.every((id) => sim.state(id)?.target.applied?.version === 3),
    15_000,
    'the devices run group lab 3',
  );
  t.is(sim.state(device)?.apps.web?.services.main?.image, 'app:1');
  t.deepEqual(problems, []);
});

test('a rollout made on the page over simulated devices with failures: phase bars move, approve, abort, rolled back', async (t) => {
  if (!needChromium(t)) return;
  // 6 of the 20 devices fail their health window; which phase they land in is the rollout's (hashed) order
  const { c, fleet } = await consoleWithDevices(t, {
    images: ['app:1', 'app:2'],
    count: 20,
    idPrefix: 'ro',
    groups: () => ['g1'],
    failShare: 0.3,
    applyMs: 20,
    windowMs: 40,
  });
  const { deploy, rollouts } = fleet.server.services;
  await deploy.deploy(
    { apps: { web: { services: { main: { image: 'app:1' } } } }, images: ['app:1'] },
    { kind: 'group', id: 'g1' },
  );
  await waitFor(() => deploy.progress({ kind: 'group', id: 'g1', version: 1 }).done, 15_000, 'g1 1');

  const operator = await c.addUser('rita', 'operator');
  const browser = await launchBrowser(t);
  const { page, problems } = await watchedPage(browser);
  await login(page, c.url, operator);
  await page.goto(`${c.url}/#/rollouts`);
  await page.getByText('No rollout yet.').waitFor();
  await page.getByRole('link', { name: 'New rollout' }).click();
  await page.getByLabel('Group', { exact: true }).fill('g1');
  await page.getByLabel(/^Phases \(/).fill('5, 50%, 75%, 100%');
  await page.getByLabel('Success threshold %').fill('0');
  await page.getByLabel('Error threshold %').fill('100');
  await page.getByLabel(/approves each phase/).check();
  await page
    .getByLabel('Rollout compose file or target JSON')
    .fill('name: web\nservices:\n  main:\n    image: app:2\n');
  await page.getByRole('button', { name: 'Check' }).click();
  await page.getByRole('status').filter({ hasText: '20 devices in phases of 5 / 5 / 5 / 5' }).waitFor();
  t.deepEqual(await axe(page), [], 'rollout create form');
  await page.getByRole('button', { name: 'Start rollout' }).click();
  await page.waitForURL(/#\/rollouts\/\d+$/);
  const id = Number(/rollouts\/(\d+)$/.exec(page.url())![1]);

  // phase 1 runs, passes and waits for approval; its bar shows its five devices done, the others queued
  const settled = (n: number) =>
    page.locator(`[aria-label^="phase ${n}: "][aria-label$=" superseded, 0 pending, 0 queued"]`);
  const approve = page.getByRole('button', { name: 'Approve next phase' });
  const done = async (n: number) => {
    await settled(n).waitFor({ timeout: 30_000 });
    const label = (await settled(n).getAttribute('aria-label')) ?? '';
    const [, converged, failed] = /(\d+) converged, (\d+) failed/.exec(label)!.map(Number);
    t.is(converged! + failed!, 5, label);
    return failed!;
  };
  let failed = await done(1);
  await approve.waitFor({ timeout: 30_000 });
  await page
    .locator('[aria-label="phase 2: 0 converged, 0 failed, 0 superseded, 0 pending, 5 queued"]')
    .waitFor();
  t.deepEqual(await axe(page), [], 'rollout detail');
  await screenshot(page, '08-rollout');

  // approved twice: phases 2 and 3 move (live, no reload); with 6 of 20 devices failing, some of the 15 fail
  for (const n of [2, 3]) {
    await approve.click();
    failed += await done(n);
    await approve.waitFor({ timeout: 30_000 });
  }
  t.true(failed >= 1, 'failures shown in the phase bars');
  await page.getByTestId('rollout-devices').locator('.badge-failed').first().waitFor();

  // abort: the fifteen moved devices go back to their previous target
  await page.getByRole('button', { name: 'Abort' }).click();
  await page.getByRole('button', { name: 'Yes, abort' }).click();
  await page.locator('dl.kv .badge-aborted').waitFor({ timeout: 30_000 });
  t.is(rollouts.view(id).row.state, 'aborted');
  t.regex(rollouts.view(id).row.reason ?? '', /from the console by rita/);
  await page.getByText('done: 15 of 15 back on their previous target').waitFor({ timeout: 30_000 });
  t.is(await approve.count(), 0);
  await screenshot(page, '09-rollout-aborted');
  await page.goto(`${c.url}/#/rollouts`);
  await page.getByTestId('rollouts-table').getByText('aborted').waitFor();
  t.deepEqual(await axe(page), [], 'rollouts list');
  t.deepEqual(problems, []);
});

test('10,000 simulated devices: the devices page filters and pages from the server (times printed)', async (t) => {
  if (!needChromium(t)) return;
  const c = await startConsoleFleet(t);
  const { fleet } = c;
  const publicKey = createPublicKey(await loadFleetPrivateKey(fleet.dir));
  const started = Date.now();
  const sim = await startSimulator({
    url: fleet.server.brokerUrl,
    fleet: FLEET,
    count: 10_000,
    idPrefix: 'sim',
    groups: (_id, i) => [i % 10 === 0 ? 'canary' : 'main'],
    publicKey,
    account: fleet.server.fleetAccount,
    connections: 4,
    platform: 'linux/arm64',
  });
  t.teardown(() => sim.stop());
  await sim.ready();
  await waitFor(() => fleet.stores.devices.list({ limit: 1 }).total === 10_000, 60_000, '10,000 devices');
  t.log(`10,000 simulated devices known to the fleet in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const admin = await c.addUser('max', 'operator');
  const browser = await launchBrowser(t);
  const { page, problems } = await watchedPage(browser);
  await login(page, c.url, admin);
  await page.goto(`${c.url}/#/devices`);
  await page.locator('#devices-count', { hasText: 'of 10,000' }).waitFor();

  const lastMeasure = () =>
    page.evaluate(`(() => {
      const all = performance.getEntriesByName('devices-load');
      return all.length ? { n: all.length, ms: all[all.length - 1].duration } : { n: 0, ms: -1 };
    })()`) as Promise<{ n: number; ms: number }>;
  const timings: Array<[string, number]> = [];
  const step = async (what: string, act: () => Promise<void>, expect: string) => {
    const before = (await lastMeasure()).n;
    await act();
    await page.locator('#devices-count', { hasText: expect }).waitFor();
    await waitFor(async () => (await lastMeasure()).n > before, 10_000, `${what} measured`);
    timings.push([what, (await lastMeasure()).ms]);
  };
  await step('next page', () => page.getByRole('button', { name: 'Next' }).click(), '51–100 of 10,000');
  await step('next page', () => page.getByRole('button', { name: 'Next' }).click(), '101–150 of 10,000');
  await step(
    'previous page',
    () => page.getByRole('button', { name: 'Previous' }).click(),
    '51–100 of 10,000',
  );
  await step(
    'filter group=canary',
    () =>
      page
        .getByLabel('Group')
        .fill('canary')
        .then(() => page.getByLabel('Group').press('Enter')),
    '1–50 of 1,000',
  );
  await step(
    'sort by last seen',
    () => page.getByRole('button', { name: 'Last seen' }).click(),
    '1–50 of 1,000',
  );
  await step(
    'search id prefix',
    async () => {
      await page.getByLabel('Search').fill('sim-099');
      await page.getByRole('button', { name: 'Search' }).click();
    },
    '1–10 of 10',
  );
  await step(
    'filter online',
    async () => void (await page.getByLabel('Online').selectOption('true')),
    '1–10 of 10',
  );
  // correctness: the rows shown are the server's
  const ids = await page.locator('[data-testid=devices-table] tbody a.devid').allInnerTexts();
  t.deepEqual(
    ids,
    fleet.stores.devices
      .list({ group: 'canary', idPrefix: 'sim-099', online: true, sort: 'lastSeen' })
      .items.map((d) => d.id),
  );
  for (const [what, ms] of timings)
    t.log(`devices page, ${what}: ${ms.toFixed(0)} ms (from the action to the rows in the DOM)`);
  const worst = Math.max(...timings.map(([, ms]) => ms));
  t.log(`worst ${worst.toFixed(0)} ms (aim ≤ 300 ms; machine shared with other engineers)`);
  console.log(
    `console-10k: ${timings.map(([w, ms]) => `${w}=${ms.toFixed(0)}ms`).join(' ')} worst=${worst.toFixed(0)}ms`,
  );
  t.deepEqual(problems, []);
});
