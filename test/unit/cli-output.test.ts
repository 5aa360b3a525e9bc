import { Writable } from 'node:stream';
import test from 'ava';
import { containerStatus, psRow } from '../../src/cli/containers.js';
import { eventLine } from '../../src/cli/events.js';
import { humanDuration, renderListing, renderTemplate } from '../../src/cli/output.js';
import { statsRow } from '../../src/cli/stats.js';
import { parseTimeArg } from '../../src/cli/time.js';
import { createLogger, prettyLine } from '../../src/lib/logger.js';
import { cpuTime, parseProcStat } from '../../src/runtime/top.js';

test('durations read as docker prints them', (t) => {
  const s = 1000;
  t.is(humanDuration(400), 'Less than a second');
  t.is(humanDuration(1 * s), '1 second');
  t.is(humanDuration(59 * s), '59 seconds');
  t.is(humanDuration(60 * s), 'About a minute');
  t.is(humanDuration(119 * s), 'About a minute');
  t.is(humanDuration(3 * 60 * s), '3 minutes');
  t.is(humanDuration(60 * 60 * s), 'About an hour');
  t.is(humanDuration(5 * 3600 * s), '5 hours');
  t.is(humanDuration(3 * 86400 * s), '3 days');
  t.is(humanDuration(20 * 86400 * s), '2 weeks');
  t.is(humanDuration(90 * 86400 * s), '3 months');
  t.is(humanDuration(800 * 86400 * s), '2 years');
});

test('ps STATUS and HEALTH columns', (t) => {
  const now = 1_000_000_000;
  const base = { id: 'a'.repeat(32), name: 'web', image: 'x:1', ports: [] };
  t.is(containerStatus({ ...base, state: 'running', startedAt: now - 1000 }, now), 'Up 1 second');
  t.is(containerStatus({ ...base, state: 'running', startedAt: now - 180_000 }, now), 'Up 3 minutes');
  t.is(
    containerStatus({ ...base, state: 'running', startedAt: now - 5000, health: 'healthy' }, now),
    'Up 5 seconds (healthy)',
  );
  t.is(
    containerStatus(
      { ...base, state: 'exited', exitCode: 137, finishedAt: now - 7_200_000, oomKilled: true },
      now,
    ),
    'Exited (137) 2 hours ago (OOM)',
  );
  t.is(containerStatus({ ...base, state: 'created' }, now), 'Created');
  const row = psRow({ ...base, state: 'running', startedAt: now - 2000, health: 'unhealthy' }, now);
  t.is(row.health, 'unhealthy');
  t.is(row.status, 'Up 2 seconds', 'health has its own column');
  t.is(row.id, 'a'.repeat(12));
});

test('--format: table, json, templates, table templates, nested fields', (t) => {
  const rows = [
    { id: 'abc', name: 'web', status: 'Up 1 second' },
    { id: 'def', name: 'db', status: 'Exited (0) 3 minutes ago' },
  ];
  const cols = [
    { key: 'id', header: 'CONTAINER ID' },
    { key: 'name', header: 'NAME' },
  ];
  t.is(renderListing(rows, cols, undefined), 'CONTAINER ID   NAME\nabc            web\ndef            db\n');
  t.is(renderListing(rows, cols, 'table'), renderListing(rows, cols, undefined));
  t.deepEqual(JSON.parse(renderListing(rows, cols, 'json', [{ full: 1 }])), [{ full: 1 }]);
  t.is(renderListing(rows, cols, '{{.Name}}'), 'web\ndb\n');
  t.is(renderListing(rows, cols, '{{.Names}}: {{.ID}}'), 'web: abc\ndb: def\n', 'docker spellings');
  t.is(renderListing(rows, cols, '{{json .Name}}'), '"web"\n"db"\n');
  t.is(
    renderListing(rows, cols, 'table {{.Name}}\\t{{.Status}}'),
    'NAME   STATUS\nweb    Up 1 second\ndb     Exited (0) 3 minutes ago\n',
  );
  t.is(
    renderTemplate('{{.State.Status}} {{upper .Name}}', { Name: 'x', State: { Status: 'running' } }),
    'running X',
  );
  t.throws(() => renderTemplate('{{.Nope}}', { name: 'x' }), {
    message: /no field \.Nope \(fields: \.name\)/,
  });
});

test('--since/--until: durations, unix times, dates; anything else is named', (t) => {
  const now = Date.UTC(2024, 4, 1, 12, 0, 0);
  t.is(parseTimeArg('10m', '--since', now), now - 600_000);
  t.is(parseTimeArg('1h30m', '--since', now), now - 5_400_000);
  t.is(parseTimeArg('1714564800', '--since', now), 1714564800_000);
  t.is(parseTimeArg('2024-05-01T11:00:00Z', '--since', now), now - 3_600_000);
  t.throws(() => parseTimeArg('yesterday', '--since', now), {
    message: /--since "yesterday": expected a duration/,
  });
});

test('stats rows: CPU % between two samples, memory against the limit or the host', (t) => {
  const host = 8 * 1024 ** 3;
  const r = statsRow(
    { id: 'c1', name: 'web' },
    { cpuUsageNs: 1e9, memoryBytes: 0, at: 10_000 },
    { cpuUsageNs: 1.5e9, memoryBytes: 32 * 1024 ** 2, memoryLimitBytes: 64 * 1024 ** 2, pids: 3, at: 11_000 },
    host,
  );
  t.is(r.cpuPercent, 50);
  t.is(r.memoryPercent, 50);
  t.is(r.pids, 3);
  const unlimited = statsRow(
    { id: 'c1', name: 'web' },
    { cpuUsageNs: 0, memoryBytes: 0, at: 0 },
    { cpuUsageNs: 2e9, memoryBytes: 1024 ** 3, at: 1000 },
    host,
  );
  t.is(unlimited.memoryLimitBytes, host, 'no limit: the host memory, as docker shows');
  t.is(unlimited.cpuPercent, 200, 'two cores busy');
  t.is(unlimited.pids, null);
});

test('events print as docker events lines', (t) => {
  t.is(
    eventLine({
      seq: 1,
      time: Date.UTC(2024, 4, 1, 12, 0, 0, 123),
      type: 'container',
      action: 'die',
      id: 'abc',
      name: 'web',
      attributes: { image: 'x:1', exitCode: 3 },
    }),
    '2024-05-01T12:00:00.123000000Z container die abc (exitCode=3, image=x:1, name=web)',
  );
});

test('top: /proc/<pid>/stat with spaces and parentheses in the name; CPU time as ps prints it', (t) => {
  const stat = '4242 (my (odd) name) S 1 4242 4242 34816 4242 0 0 0 0 0 150 50 0 0 20 0 1 0 12345 0 0';
  t.like(parseProcStat(stat), {
    pid: 4242,
    comm: 'my (odd) name',
    ppid: 1,
    ttyNr: 34816,
    cpuTicks: 200,
    startTicks: 12345,
  });
  t.is(cpuTime(3725), '01:02:05');
  t.is(cpuTime(90_061), '1-01:01:01');
});

class Capture extends Writable {
  text = '';
  constructor(readonly isTTY: boolean) {
    super();
  }
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

test('logs: human lines on a terminal, JSON otherwise or when asked', (t) => {
  const tty = new Capture(true);
  createLogger({ destination: tty, level: 'info' }).info({ deviceId: 'd1', fleet: true }, 'agent running');
  t.regex(tty.text, /^\d\d:\d\d:\d\d\.\d{3} \S*INFO\S* +agent running deviceId=d1 fleet=true\n$/);
  t.notRegex(tty.text, /^\{/);
  const pipe = new Capture(false);
  createLogger({ destination: pipe, level: 'info' }).info({ deviceId: 'd1' }, 'agent running');
  t.like(JSON.parse(pipe.text), { msg: 'agent running', deviceId: 'd1', level: 30 });
  const forced = new Capture(true);
  createLogger({ destination: forced, level: 'info', format: 'json' }).warn('w');
  t.like(JSON.parse(forced.text), { msg: 'w', level: 40 });
  t.is(
    prettyLine(
      JSON.stringify({ level: 50, time: 0, msg: 'failed', err: { message: 'boom here' }, n: 2 }),
    ).slice(13),
    'ERROR failed err="boom here" n=2\n',
  );
});
