import { spawn } from 'node:child_process';
import { BerthError } from './errors.js';

export interface ExecOptions {
  /** Bytes written to the child's stdin, then closed. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Kill the child (SIGKILL) after this many milliseconds. */
  timeoutMs?: number;
  /** Resolve instead of throwing when the exit code is not 0. */
  allowFailure?: boolean;
  /** Cap on captured stdout/stderr bytes each (default 16 MiB). */
  maxBuffer?: number;
}

export interface ExecResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Run a program with an argument vector. Never a shell string: every external tool berth uses goes
 * through here, wrapped by a typed function that parses its output and maps its errors.
 */
export function exec(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const maxBuffer = opts.maxBuffer ?? 16 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    }
    child.stdout.on('data', (b: Buffer) => {
      if (outLen < maxBuffer) out.push(b);
      outLen += b.length;
    });
    child.stderr.on('data', (b: Buffer) => {
      if (errLen < maxBuffer) err.push(b);
      errLen += b.length;
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      const code = e.code === 'ENOENT' ? 'NotFound' : 'Internal';
      reject(new BerthError(code, `cannot run ${file}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const result: ExecResult = {
        code: code ?? -1,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (result.code !== 0 && !opts.allowFailure) {
        const why = signal ? `killed by ${signal}` : `exit ${result.code}`;
        const tail = result.stderr.trim().split('\n').slice(-5).join('\n');
        reject(
          new BerthError('Internal', `${file} ${args.join(' ')}: ${why}${tail ? `: ${tail}` : ''}`, {
            details: { ...result },
          }),
        );
        return;
      }
      resolve(result);
    });
    child.stdin.on('error', () => {
      /* child may exit before reading stdin; the close handler reports the outcome */
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}
