import { spawn } from 'node:child_process';
import { pipeline } from 'node:stream/promises';
import { BerthError } from '../lib/errors.js';
import { exec } from '../lib/exec.js';
import { storageErrorCode } from './native-storage.js';

/**
 * The layer extractor in C (`berth-storage extract`, native/storage/extract.c): the uncompressed tar is
 * piped to its stdin; it writes the files with every path resolved inside the root by openat2
 * RESOLVE_IN_ROOT (kernel ≥ 5.6). The caller hashes the same bytes on the way (the DiffID) unless they
 * are a content-store blob whose digest is the DiffID (apply.ts), and removes the snapshot on any error.
 * `bytes`: what the helper read, the whole uncompressed layer.
 */
export interface NativeTarget {
  root: string;
  overlay: boolean;
  lowers: readonly string[];
}

/** Does the C extractor at `bin` work on this machine (openat2 RESOLVE_IN_ROOT)? */
export async function probeNativeExtract(bin: string): Promise<boolean> {
  const r = await exec(bin, ['extract', '--probe'], { allowFailure: true }).catch(() => undefined);
  return r?.code === 0;
}

/**
 * The uncompressed tar comes from `file` (read by the helper itself), or from `streams` (e.g.
 * [decompressor, hasher]) piped into its stdin.
 */
export type NativeInput = { file: string } | { streams: readonly NodeJS.ReadableStream[] };

export async function extractNative(
  bin: string,
  input: NativeInput,
  target: NativeTarget,
): Promise<{ entries: number; bytes: number }> {
  const args = ['extract', target.root];
  if ('file' in input) args.push('--input', input.file);
  if (target.overlay) {
    args.push('--overlay');
    for (const l of target.lowers) args.push('--lower', l);
  }
  const child = spawn(bin, args, {
    stdio: ['file' in input ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout?.on('data', (b: Buffer) => stdout.push(b));
  child.stderr?.on('data', (b: Buffer) => {
    if (stderr.length < 64) stderr.push(b);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', (e) => reject(new BerthError('Internal', `cannot run berth-storage: ${e.message}`)));
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  // the helper stops reading when a layer is refused: the pipe then breaks, and its own error is the one
  // to report
  const fed =
    'file' in input
      ? Promise.resolve(undefined)
      : (pipeline as (...s: unknown[]) => Promise<void>)(...input.streams, child.stdin).then(
          () => undefined,
          (err: unknown) => err,
        );
  const { code, signal } = await exited;
  const feedError = await fed;
  if (code !== 0) {
    // the source failed first (a bad gzip stream…): the helper then only saw the data end early
    if (feedError && !brokenPipe(feedError)) throw feedError;
    const line = Buffer.concat(stderr).toString('utf8').trim().split('\n').pop() ?? '';
    const msg =
      line.replace(/^berth-storage: extract: /, '').replace(/ \(errno \d+\)$/, '') ||
      `berth-storage extract: ${signal ? `killed by ${signal}` : `exit ${code}`}`;
    throw new BerthError(storageErrorCode(code ?? -1), msg, { details: { exitCode: code } });
  }
  if (feedError) throw feedError;
  const out = JSON.parse(Buffer.concat(stdout).toString('utf8')) as { entries: number; bytes: number };
  return { entries: out.entries, bytes: out.bytes };
}

function brokenPipe(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code;
  return code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ERR_STREAM_DESTROYED';
}
