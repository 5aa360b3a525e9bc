/**
 * Login, logout, "who am I" and first-admin setup: what a browser console needs. A session is an
 * HttpOnly, SameSite=Strict cookie; GET /session returns the CSRF token that changing calls send back in
 * the X-CSRF-Token header (synchronizer token, kept with the session on the server).
 */
import { z } from 'zod/v4';
import { toUser } from '../../operations.js';
import { API_PREFIX, SESSION_COOKIE } from '../app.js';
import type { ApiDeps } from '../deps.js';
import { route } from '../route.js';
import { LoginRequest, SessionSchema, SetupRequest, UserSchema } from '../schemas.js';

function sessionCookie(value: string, maxAgeS: number, secure: boolean): string {
  return [
    `${SESSION_COOKIE}=${value}`,
    `Path=${API_PREFIX}`,
    'HttpOnly',
    'SameSite=Strict',
    `Max-Age=${maxAgeS}`,
    ...(secure ? ['Secure'] : []),
  ].join('; ');
}

export function sessionRoutes(d: ApiDeps) {
  return [
    route({
      method: 'get',
      path: '/session',
      tag: 'session',
      summary: 'Who is calling: user (or token), role, and the CSRF token of a cookie session',
      auth: 'viewer',
      response: SessionSchema,
      handler: ({ actor }) => d.ops.whoami(actor),
    }),
    route({
      method: 'post',
      path: '/session',
      tag: 'session',
      summary: 'Log in: sets the session cookie and returns the CSRF token',
      description: 'Failed logins are rate-limited per user name and per address (429 with Retry-After).',
      auth: 'public',
      audit: 'session.login',
      body: LoginRequest,
      maxBody: 8 * 1024,
      response: SessionSchema,
      handler: async ({ body, source, header, auditTarget }) => {
        auditTarget(body.name);
        const s = await d.identity.login(body.name, body.password, source);
        header(
          'set-cookie',
          sessionCookie(s.cookie, Math.floor((s.expiresAt - Date.now()) / 1000), d.secureCookies),
        );
        return {
          user: s.user.name,
          token: null,
          role: s.user.role,
          via: 'session' as const,
          csrfToken: s.csrf,
          expiresAt: new Date(s.expiresAt).toISOString(),
        };
      },
    }),
    route({
      method: 'delete',
      path: '/session',
      tag: 'session',
      summary: 'Log out: ends the session and clears the cookie',
      auth: 'viewer',
      audit: 'session.logout',
      response: z.null(),
      status: 204,
      handler: ({ actor, header }) => {
        d.identity.logout(actor);
        header('set-cookie', sessionCookie('', 0, d.secureCookies));
        return null;
      },
    }),
    route({
      method: 'post',
      path: '/setup',
      tag: 'session',
      summary: 'Create the first admin with the one-time setup token `berth fleet serve` printed',
      auth: 'public',
      audit: 'setup',
      body: SetupRequest,
      maxBody: 8 * 1024,
      response: UserSchema,
      status: 201,
      handler: async ({ body, auditTarget }) => {
        auditTarget(body.name);
        return toUser(await d.identity.completeSetup(body.token, body.name, body.password));
      },
    }),
  ];
}
