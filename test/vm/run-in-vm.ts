/**
 * CLI for the test VM (see vm.ts):
 *
 *   node --import tsx test/vm/run-in-vm.ts prepare                 # fetch kernel, build initramfs
 *   node --import tsx test/vm/run-in-vm.ts [--share DIR] [--disk SIZE_MIB]... [--timeout S] [--mem MIB]
 *        [--module NAME]... (--script FILE | -- COMMAND ARGS...)
 *
 * The share (default: the current directory) is mounted at the same path in the guest and is the working
 * directory. Prints the script's output, then `vm: code=N wall=…s guest=…s`, and exits with the code.
 */
import { readFile } from 'node:fs/promises';
import { ensureInitramfs, ensureKernel, runInVm, type VmDisk } from './vm.js';

const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'prepare') {
    const t0 = Date.now();
    const k = await ensureKernel();
    const initrd = await ensureInitramfs(k);
    console.log(`vm: kernel ${k.version} at ${k.vmlinux}, initramfs ${initrd} (${Date.now() - t0} ms)`);
    return 0;
  }
  let share = process.cwd();
  let script: string | undefined;
  let timeoutMs = 240_000;
  let memoryMiB = 1024;
  const disks: VmDisk[] = [];
  const modules: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--share') share = next();
    else if (a === '--disk') disks.push({ sizeBytes: Number(next()) * 1024 * 1024 });
    else if (a === '--timeout') timeoutMs = Number(next()) * 1000;
    else if (a === '--mem') memoryMiB = Number(next());
    else if (a === '--module') modules.push(next());
    else if (a === '--script') script = await readFile(next(), 'utf8');
    else if (a === '--') {
      script = `${argv
        .slice(i + 1)
        .map(quote)
        .join(' ')}\n`;
      break;
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!script) throw new Error('give --script FILE or -- COMMAND ...');
  const r = await runInVm({ script, shareDir: share, disks, modules, timeoutMs, memoryMiB });
  process.stdout.write(r.output);
  if (r.code < 0) process.stderr.write(`vm: no result from the guest; console:\n${r.console}\n`);
  const guest = r.guestEndS !== undefined ? `${r.guestEndS}s (script started at ${r.guestStartS}s)` : '?';
  console.log(`vm: code=${r.code} wall=${(r.wallMs / 1000).toFixed(1)}s guest=${guest}`);
  return r.code < 0 ? 125 : r.code;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`vm: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(125);
  },
);
