/**
 * Few error kinds, rich context. Every error berth raises on purpose is a BerthError with a code; the
 * message names the thing that was wrong. Going up the stack, wrap with `withContext` instead of
 * re-throwing bare strings so the chain of "while doing X" stays readable.
 */
export const ErrorCodes = [
  'NotFound',
  'InvalidInput',
  'Conflict',
  'Unavailable',
  'Corrupt',
  'NoSpace',
  'Unsupported',
  'PermissionDenied',
  /** no or bad credentials (the fleet API's 401) */
  'Unauthenticated',
  /** too many attempts; try again later (the fleet API's 429) */
  'RateLimited',
  'Timeout',
  'Internal',
] as const;
export type ErrorCode = (typeof ErrorCodes)[number];

export class BerthError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BerthError';
    this.code = code;
    this.details = options?.details;
  }
}

export const notFound = (msg: string, cause?: unknown) => new BerthError('NotFound', msg, { cause });
export const invalidInput = (msg: string, cause?: unknown) => new BerthError('InvalidInput', msg, { cause });
export const conflict = (msg: string, cause?: unknown) => new BerthError('Conflict', msg, { cause });
export const corrupt = (msg: string, cause?: unknown) => new BerthError('Corrupt', msg, { cause });
export const unavailable = (msg: string, cause?: unknown) => new BerthError('Unavailable', msg, { cause });
export const noSpace = (msg: string, cause?: unknown) => new BerthError('NoSpace', msg, { cause });
export const unsupported = (msg: string, cause?: unknown) => new BerthError('Unsupported', msg, { cause });
export const permissionDenied = (msg: string, cause?: unknown) =>
  new BerthError('PermissionDenied', msg, { cause });
export const unauthenticated = (msg: string) => new BerthError('Unauthenticated', msg);

/** An error that crossed a wire as `{code, message}` (local API, command results): unknown codes → Internal. */
export function errorFromWire(
  e: { code?: string; message?: string } | undefined,
  fallback: string,
): BerthError {
  const code = (ErrorCodes as readonly string[]).includes(e?.code ?? '')
    ? (e!.code as ErrorCode)
    : 'Internal';
  return new BerthError(code, e?.message ?? fallback);
}

/** The HTTP status each error kind answers with (the agent's local API and the fleet API). */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  NotFound: 404,
  InvalidInput: 400,
  Conflict: 409,
  Unavailable: 503,
  Corrupt: 500,
  NoSpace: 507,
  Unsupported: 501,
  PermissionDenied: 403,
  Unauthenticated: 401,
  RateLimited: 429,
  Timeout: 504,
  Internal: 500,
};

export function isBerthError(err: unknown, code?: ErrorCode): err is BerthError {
  return err instanceof BerthError && (code === undefined || err.code === code);
}

/** errno codes from node's fs layer mapped onto berth's error kinds. */
export function codeForErrno(errno: string | undefined): ErrorCode {
  switch (errno) {
    case 'ENOENT':
      return 'NotFound';
    case 'EEXIST':
    case 'ENOTEMPTY':
    case 'EBUSY':
      return 'Conflict';
    case 'ENOSPC':
    case 'EDQUOT':
    case 'SQLITE_FULL':
      return 'NoSpace';
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return 'PermissionDenied';
    case 'EINVAL':
      return 'InvalidInput';
    case 'ENOSYS':
    case 'EOPNOTSUPP':
    case 'ENOTSUP':
      return 'Unsupported';
    default:
      return 'Internal';
  }
}

/** Wrap any error with "context: message", keeping the code of a BerthError or deriving one from errno. */
export function withContext(context: string, err: unknown): BerthError {
  if (err instanceof BerthError) {
    return new BerthError(err.code, `${context}: ${err.message}`, { cause: err, details: err.details });
  }
  const e = err as NodeJS.ErrnoException;
  const msg = e && typeof e.message === 'string' ? e.message : String(err);
  return new BerthError(codeForErrno(e?.code), `${context}: ${msg}`, { cause: err });
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
