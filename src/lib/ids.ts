import { invalidInput } from './errors.js';

/** Names that become path components or topic levels: letters, digits, `_.-`, not starting with `.` or `-`. */
const SAFE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

export function isSafeName(s: string): boolean {
  return SAFE_NAME.test(s) && s !== '.' && s !== '..';
}

export function assertSafeName(kind: string, s: string): string {
  if (!isSafeName(s)) {
    throw invalidInput(
      `invalid ${kind} ${JSON.stringify(s)}: use 1-128 of [A-Za-z0-9_.-], not starting with . or -`,
    );
  }
  return s;
}
