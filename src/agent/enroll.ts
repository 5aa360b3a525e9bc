/**
 * The device's side of enrollment: trade an enrollment token, once, for this device's broker credentials,
 * the fleet public key, the fleet name and the broker URL (`POST <server>/api/v1/enroll`), and keep them in
 * `<state-dir>/enrollment.json` (0600). From then on `berth agent` runs from that file with no other flags.
 *
 * HTTPS is verified against the system CAs, or `ca` (the `--ca` file) for a private PKI; plain http is
 * refused unless the server is on a loopback address (a one-machine lab or a test). The answer is
 * size-capped and schema-checked before anything is written.
 */
import { promises as fsp } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import * as path from 'node:path';
import { readTextIfPresent, writeFileAtomic } from '../lib/atomic.js';
import { BerthError, corrupt, errorFromWire, invalidInput, unavailable } from '../lib/errors.js';
import type { EnrollResponse } from '../transport/enroll.js';

/**
 * The wire schemas are zod v4 (shared with the fleet's OpenAPI side), ~400 KB the rest of berth (zod 3)
 * does not load: imported when an enrollment is read or made, not at every start of every command.
 */
const wire = () => import('../transport/enroll.js');

export const ENROLLMENT_FILE = 'enrollment.json';

export interface Enrollment extends EnrollResponse {
  /** the server it was enrolled at */
  server: string;
  enrolledAt: string;
}

export async function readEnrollment(stateDir: string): Promise<Enrollment | undefined> {
  const file = path.join(stateDir, ENROLLMENT_FILE);
  const text = await readTextIfPresent(file);
  if (text === undefined) return undefined;
  try {
    const raw = JSON.parse(text) as Record<string, unknown>;
    const { server, enrolledAt, ...rest } = raw;
    if (typeof server !== 'string' || typeof enrolledAt !== 'string') throw new Error('missing server');
    const { EnrollResponseSchema } = await wire();
    return { ...EnrollResponseSchema.parse(rest), server, enrolledAt };
  } catch (err) {
    throw corrupt(`${file} is not an enrollment this agent wrote: move it aside and enroll again`, err);
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '[::1]' || host === '::1' || /^127\./.test(host);
}

/** POST the token; resolves with the fleet's answer (checked), rejects with the fleet's error. */
export async function requestEnrollment(o: {
  server: string;
  token: string;
  deviceId: string;
  platform?: string;
  agentVersion?: string;
  ca?: Buffer | undefined;
  timeoutMs?: number;
}): Promise<EnrollResponse> {
  const { EnrollResponseSchema, MAX_ENROLL_BYTES } = await wire();
  let url: URL;
  try {
    url = new URL('api/v1/enroll', o.server.endsWith('/') ? o.server : `${o.server}/`);
  } catch {
    throw invalidInput(`--enroll ${o.server}: not a URL`);
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopback(url.hostname)))
    throw invalidInput(`--enroll ${o.server}: use https:// (plain http only to a loopback address)`);
  const body = JSON.stringify({
    token: o.token,
    deviceId: o.deviceId,
    ...(o.platform ? { platform: o.platform } : {}),
    ...(o.agentVersion ? { agentVersion: o.agentVersion } : {}),
  });
  const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: o.timeoutMs ?? 30_000,
        ...(o.ca ? { ca: o.ca } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let n = 0;
        res.on('data', (c: Buffer) => {
          n += c.length;
          if (n > MAX_ENROLL_BYTES) {
            req.destroy(new Error(`answer larger than ${MAX_ENROLL_BYTES} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err) => reject(unavailable(`enrolling at ${url.origin}: ${err.message}`, err)));
    req.end(body);
  });
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw unavailable(`enrolling at ${url.origin}: HTTP ${status}, not JSON`);
  }
  if (status < 200 || status >= 300) {
    const e = errorFromWire(json as { code?: string; message?: string }, `HTTP ${status}`);
    throw new BerthError(e.code, `enrollment refused by ${url.origin}: ${e.message}`);
  }
  const r = EnrollResponseSchema.safeParse(json);
  if (!r.success) throw corrupt(`enrolling at ${url.origin}: the answer is not an enrollment`);
  if (r.data.deviceId !== o.deviceId)
    throw corrupt(`enrolling at ${url.origin}: enrolled as ${r.data.deviceId}, asked for ${o.deviceId}`);
  return r.data;
}

/** Enroll and keep the answer (0600) in the state dir. */
export async function enroll(
  stateDir: string,
  o: Parameters<typeof requestEnrollment>[0],
): Promise<Enrollment> {
  const answer = await requestEnrollment(o);
  const e: Enrollment = { ...answer, server: o.server, enrolledAt: new Date().toISOString() };
  await fsp.mkdir(stateDir, { recursive: true });
  await writeFileAtomic(path.join(stateDir, ENROLLMENT_FILE), `${JSON.stringify(e, null, 2)}\n`, 0o600);
  return e;
}
