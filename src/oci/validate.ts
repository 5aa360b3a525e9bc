import type { ZodError } from 'zod';

/** A zod error as "a.b: message; c: message", for messages that name the field. */
export function formatIssues(err: ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}
