/**
 * The iptables backend, for devices without a working `nft`: the same rules as nft.ts, in berth's own
 * chains (`<PREFIX>-POST` masquerade — the subnet going out, loopback-sourced traffic going to the bridge —,
 * `<PREFIX>-DNAT` published ports, `<PREFIX>-FWD` accept for the bridge, `<PREFIX>-RAW` in the raw table
 * dropping packets from the bridge to 127/8) jumped to from the built-in chains; PREROUTING jumps to the
 * DNAT chain only for non-127/8 destinations, OUTPUT for all local ones (127.0.0.1:<port> included). Per-container rules carry `-m comment --comment berth:<id>`
 * and are removed by replaying their `-S` spec with -D. `-w` waits for the xtables lock.
 */
import { exec } from '../../lib/exec.js';
import type { PortMapping } from './nft.js';
import { type ProbeOptions, probeTool } from './probe.js';

const IPT = '/usr/sbin/iptables';

async function ipt(args: string[], allowFailure = false) {
  return exec(IPT, ['-w', '5', ...args], { allowFailure, timeoutMs: 15_000 });
}

/** undefined when iptables can read this host's nat table, else why not. */
export function iptablesProblem(o?: ProbeOptions): Promise<string | undefined> {
  return probeTool(IPT, ['-w', '5', '-t', 'nat', '-S', 'POSTROUTING'], o);
}

export function chainNames(table: string): { post: string; dnat: string; fwd: string; raw: string } {
  const p = table.toUpperCase().slice(0, 20);
  return { post: `${p}-POST`, dnat: `${p}-DNAT`, fwd: `${p}-FWD`, raw: `${p}-RAW` };
}

const LOOPBACK = '127.0.0.0/8';
/** PREROUTING → DNAT chain: local destinations but loopback (those only come from the host itself) */
const PREROUTING_MATCH = ['-m', 'addrtype', '--dst-type', 'LOCAL', '!', '-d', LOOPBACK];
/** before localhost ports worked, PREROUTING jumped for every local destination */
const OLD_PREROUTING_MATCH = ['-m', 'addrtype', '--dst-type', 'LOCAL'];

/** Append `rule` to `chain` unless an identical rule is there (-C). */
async function ensureRule(table: string, chain: string, rule: string[], insert = false): Promise<void> {
  if ((await ipt(['-t', table, '-C', chain, ...rule], true)).code === 0) return;
  await ipt(['-t', table, insert ? '-I' : '-A', chain, ...rule]);
}

async function ensureChain(table: string, chain: string): Promise<void> {
  if ((await ipt(['-t', table, '-S', chain], true)).code === 0) return;
  await ipt(['-t', table, '-N', chain], true);
}

export async function ensureChains(table: string, bridge: string, subnet: string): Promise<void> {
  const c = chainNames(table);
  await ensureChain('nat', c.post);
  await ensureChain('nat', c.dnat);
  await ensureChain('filter', c.fwd);
  await ensureChain('raw', c.raw);
  await ensureRule('nat', 'POSTROUTING', ['-j', c.post]);
  await ipt(['-t', 'nat', '-D', 'PREROUTING', ...OLD_PREROUTING_MATCH, '-j', c.dnat], true);
  await ensureRule('nat', 'PREROUTING', [...PREROUTING_MATCH, '-j', c.dnat]);
  await ensureRule('nat', 'OUTPUT', ['-m', 'addrtype', '--dst-type', 'LOCAL', '-j', c.dnat]);
  await ensureRule('filter', 'FORWARD', ['-j', c.fwd], true);
  await ensureRule('raw', 'PREROUTING', ['-j', c.raw]);
  await ensureRule('nat', c.post, ['-s', subnet, '!', '-o', bridge, '-j', 'MASQUERADE']);
  await ensureRule('nat', c.post, ['-s', LOOPBACK, '-o', bridge, '-j', 'MASQUERADE']);
  await ensureRule('raw', c.raw, ['-i', bridge, '-d', LOOPBACK, '-j', 'DROP']);
  await ensureRule('filter', c.fwd, ['-i', bridge, '-j', 'ACCEPT']);
  await ensureRule('filter', c.fwd, ['-o', bridge, '-j', 'ACCEPT']);
}

export async function addPortMappings(
  table: string,
  containerId: string,
  containerIp: string,
  ports: readonly PortMapping[],
): Promise<void> {
  const { dnat } = chainNames(table);
  for (const p of ports) {
    await ipt([
      '-t',
      'nat',
      '-A',
      dnat,
      ...(p.hostIp ? ['-d', p.hostIp] : []),
      '-p',
      p.protocol,
      '--dport',
      String(p.hostPort),
      '-m',
      'comment',
      '--comment',
      `berth:${containerId}`,
      '-j',
      'DNAT',
      '--to-destination',
      `${containerIp}:${p.containerPort}`,
    ]);
  }
}

/** Split an `iptables -S` line into argv (double quotes as iptables prints them). */
export function splitRuleSpec(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line))
    out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}

export async function removeContainerRules(table: string, containerId: string): Promise<number> {
  const { dnat } = chainNames(table);
  const r = await ipt(['-t', 'nat', '-S', dnat], true);
  if (r.code !== 0) return 0;
  const mine = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('-A ') && splitRuleSpec(l).includes(`berth:${containerId}`));
  for (const line of mine) {
    const spec = splitRuleSpec(line);
    await ipt(['-t', 'nat', '-D', ...spec.slice(1)], true);
  }
  return mine.length;
}

export async function listContainerRules(table: string, containerId: string): Promise<string[]> {
  const r = await ipt(['-t', 'nat', '-S', chainNames(table).dnat], true);
  return r.stdout.split('\n').filter((l) => l.includes(`berth:${containerId}`));
}

export async function deleteChains(table: string): Promise<void> {
  const c = chainNames(table);
  await ipt(['-t', 'nat', '-D', 'POSTROUTING', '-j', c.post], true);
  await ipt(['-t', 'nat', '-D', 'PREROUTING', ...PREROUTING_MATCH, '-j', c.dnat], true);
  await ipt(['-t', 'nat', '-D', 'PREROUTING', ...OLD_PREROUTING_MATCH, '-j', c.dnat], true);
  await ipt(['-t', 'nat', '-D', 'OUTPUT', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', c.dnat], true);
  await ipt(['-t', 'filter', '-D', 'FORWARD', '-j', c.fwd], true);
  await ipt(['-t', 'raw', '-D', 'PREROUTING', '-j', c.raw], true);
  for (const [t, ch] of [
    ['nat', c.post],
    ['nat', c.dnat],
    ['filter', c.fwd],
    ['raw', c.raw],
  ] as const) {
    await ipt(['-t', t, '-F', ch], true);
    await ipt(['-t', t, '-X', ch], true);
  }
}
