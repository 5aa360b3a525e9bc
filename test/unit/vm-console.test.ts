import test from 'ava';
import { parseConsole } from '../vm/vm.js';

test('parseConsole takes the script output between the markers and the exit code', (t) => {
  const raw =
    'INIT: started\r\nBERTH-VM-BEGIN uptime=3.50\r\nhello\r\nworld\r\nBERTH-VM-RESULT code=7 uptime=9.25\r\n';
  const r = parseConsole(raw, 1234);
  t.is(r.code, 7);
  t.is(r.output, 'hello\nworld\n');
  t.is(r.guestStartS, 3.5);
  t.is(r.guestEndS, 9.25);
  t.is(r.wallMs, 1234);
});

test('parseConsole reports -1 when the guest never finished', (t) => {
  const r = parseConsole('BERTH-VM-BEGIN uptime=3.50\nKernel panic\n', 10);
  t.is(r.code, -1);
  t.is(r.output, 'Kernel panic\n');
  t.is(r.guestEndS, undefined);
});
