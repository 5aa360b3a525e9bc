/**
 * The console with a real device, all real: `berth fleet serve --http` from the built bundle (so the console
 * served is the one embedded in it), a real `berth agent` enrolled with a token made on the page, real
 * containers. In the browser: log in → push an image by upload (progress) → make an enrollment token →
 * the agent comes online on the devices page without a reload → a compose file with a mistake shows the
 * server's error at its line → fixed, deployed from the page → converges → the service's logs, where a line
 * with HTML stays text → restart the service → the restart is in the device's events.
 */
import * as path from 'node:path';
import test from 'ava';
import { axe, launchBrowser, login, needChromium, screenshot, watchedPage } from '../helpers/console.js';
import { sampleArchive, startEnrolledAgent, startFleetServer } from '../helpers/enrolled-agent.js';
import { tempDir } from '../helpers/fleet-harness.js';
import { needPrivileges } from '../helpers/privileged.js';

const PASSWORD = 'console-admin-password';
const XSS = '<img src=x onerror=window.__xss=1>';

test('log in, a real agent comes online, deploy a compose app from the page, it converges, its logs, restart, the restart in the events', async (t) => {
  if (!needPrivileges(t) || !needChromium(t)) return;
  t.timeout(420_000);
  const work = await tempDir(t, 'console-agent');
  const fleetDir = path.join(work, 'fleet');
  const deviceDir = path.join(work, 'device');
  const deviceId = `console-${process.pid}`;
  const { url } = await startFleetServer(t, { fleetDir, fleet: 'console', password: PASSWORD });
  const archive = await sampleArchive(work);

  const browser = await launchBrowser(t);
  const { page, problems } = await watchedPage(browser);
  await login(page, url, { name: 'admin', password: PASSWORD });

  // push by upload from the images page
  await page.goto(`${url}/#/images`);
  await page.getByText('No image in the fleet yet').waitFor();
  await page.getByLabel(/Archive/).setInputFiles(archive);
  await page.getByLabel('Name and tag').fill('sample:v1');
  await page.getByRole('button', { name: 'Upload' }).click();
  await page.getByRole('cell', { name: 'sample:v1' }).waitFor({ timeout: 60_000 });
  t.regex((await page.getByRole('row', { name: /sample:v1/ }).textContent()) ?? '', /linux\/amd64/);

  // an enrollment token made on the page, with the command the device runs
  await page.goto(`${url}/#/admin/enrollment`);
  await page.getByLabel('Groups').fill('lab');
  await page.getByLabel('Labels').fill('site=console');
  await page.getByRole('button', { name: 'Create', exact: true }).click();
  const token = ((await page.getByTestId('secret').textContent()) ?? '').trim();
  t.regex(token, /^bet_/);
  t.true(
    ((await page.locator('.secret-value').nth(1).textContent()) ?? '').includes(
      `--enroll ${url} --token ${token}`,
    ),
  );
  await page.getByRole('button', { name: 'Done' }).click();

  // the devices page is open when the device enrolls: it appears, online, without a reload
  await page.goto(`${url}/#/devices`);
  await page.getByText('No device matches these filters.').waitFor();
  const agent = await startEnrolledAgent(t, {
    work,
    deviceDir,
    deviceId,
    url,
    token,
    config:
      'agent:\n  healthWindowMs: 2000\n  retryMinMs: 100\n  retryMaxMs: 2000\n  idleIntervalMs: 500\n  metricsIntervalMs: 2000\n',
  });
  const row = page.getByRole('row', { name: new RegExp(deviceId) });
  await row.getByText('online').waitFor({ timeout: 30_000 });
  t.regex((await row.textContent()) ?? '', /site=console/);

  // deploy from the page: a mistake first, shown at its line; then the fixed file
  await page.getByRole('checkbox', { name: `Select ${deviceId}` }).check();
  await page.getByRole('link', { name: 'Deploy to these…' }).click();
  await page.getByLabel('Compose file or target JSON').waitFor();
  t.is(await page.getByLabel('Device ids (comma or space separated)').inputValue(), deviceId);
  const compose = (restart: string) =>
    [
      'name: hello',
      'services:',
      '  web:',
      '    image: sample:v1',
      `    restart: ${restart}`,
      '    network_mode: none',
      '    stop_grace_period: 1s',
      `    command: ["sh", "-c", "echo '${XSS}'; exec /bin/app"]`,
      '',
    ].join('\n');
  await page.getByLabel('Compose file or target JSON').fill(compose('bogus'));
  await page.getByRole('button', { name: 'Validate' }).click();
  const problem = page.getByRole('alert', { name: 'Problems' });
  await problem.waitFor();
  t.regex((await problem.textContent()) ?? '', /line 5.*restart/);
  t.is(await page.locator('.gutter li.bad').textContent(), '5');
  t.deepEqual(await axe(page), [], 'deploy page with a problem');
  await page.getByLabel('Compose file or target JSON').fill(compose('always'));
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  const progress = page.getByRole('region', { name: `progress of ${deviceId}: device 1` });
  await progress
    .getByText('1 of 1 converged')
    .waitFor({ timeout: 180_000 })
    .catch(async (err) => {
      await screenshot(page, 'agent-deploy-failed');
      throw new Error(`${err}\n${(await page.locator('main').textContent()) ?? ''}\n${agent.tail()}`);
    });

  // the device page: converged, the service running; its logs with the HTML line as text
  await page.goto(`${url}/#/devices/${deviceId}`);
  await page
    .getByRole('definition')
    .filter({ hasText: /^device 1/ })
    .first()
    .waitFor();
  const services = page.locator('table.services');
  await services.getByText('running').waitFor({ timeout: 30_000 });
  await page.locator('.chart canvas').first().waitFor({ timeout: 30_000 });
  await screenshot(page, 'agent-device-docs');
  await services.getByRole('button', { name: 'Logs' }).click();
  const logs = page.getByTestId('logs');
  await logs.getByText(XSS).waitFor({ timeout: 30_000 });
  t.is(await page.locator('img[src=x]').count(), 0);
  t.is(await page.evaluate('globalThis.__xss'), undefined);
  await page.locator('.chart canvas').first().waitFor({ timeout: 30_000 });
  t.deepEqual(await axe(page), [], 'device page with logs');
  await screenshot(page, 'agent-device');

  // restart the service from the page: the device answers, and the restart shows in its events
  await services.getByRole('button', { name: 'Restart', exact: true }).click();
  await page.getByText(`restart of hello/web asked`).waitFor({ timeout: 30_000 });
  await page
    .getByTestId('events')
    .getByText(/command-result.*kind: restart · ok: true/)
    .first()
    .waitFor({ timeout: 30_000 });

  // an image a deployment uses cannot be deleted: the page says why
  await page.goto(`${url}/#/images`);
  await page
    .getByRole('row', { name: /sample:v1/ })
    .getByRole('button', { name: 'Delete' })
    .click();
  await page.getByRole('button', { name: 'Yes, delete' }).click();
  await page.getByText(/sample:v1 deleted failed — Conflict/).waitFor();
  await page.getByRole('cell', { name: 'sample:v1' }).waitFor();
  t.deepEqual(problems, []);
});
