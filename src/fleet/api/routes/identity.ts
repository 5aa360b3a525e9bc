/** Users (admin), API tokens (own; admin: all) and the audit log (admin). */
import { z } from 'zod/v4';
import type { ApiDeps } from '../deps.js';
import { route } from '../route.js';
import {
  AuditPage,
  AuditQuery,
  TokenCreate,
  TokenCreated,
  TokenList,
  TokenSchema,
  UserCreate,
  UserList,
  UserName,
  UserSchema,
  UserUpdate,
} from '../schemas.js';

const UserParams = z.strictObject({ name: UserName });
const TokenParams = z.strictObject({ id: z.string().regex(/^[0-9a-f]{12}$/, 'a token id: 12 hex digits') });

export function identityRoutes(d: ApiDeps) {
  return [
    route({
      method: 'get',
      path: '/users',
      tag: 'users',
      summary: 'List users',
      auth: 'admin',
      response: UserList,
      handler: ({ actor }) => ({ items: d.ops.users(actor) }),
    }),
    route({
      method: 'post',
      path: '/users',
      tag: 'users',
      summary: 'Add a user',
      auth: 'admin',
      audit: 'user.create',
      body: UserCreate,
      maxBody: 8 * 1024,
      response: UserSchema,
      status: 201,
      handler: ({ actor, body, auditTarget }) => {
        auditTarget(body.name);
        return d.ops.addUser(actor, body);
      },
    }),
    route({
      method: 'patch',
      path: '/users/{name}',
      tag: 'users',
      summary: 'Change a role (admin) or a password (admin, or yourself with currentPassword)',
      auth: 'viewer',
      audit: 'user.update',
      params: UserParams,
      body: UserUpdate,
      maxBody: 8 * 1024,
      response: UserSchema,
      handler: ({ actor, params, body }) => d.ops.updateUser(actor, params.name, body),
    }),
    route({
      method: 'delete',
      path: '/users/{name}',
      tag: 'users',
      summary: 'Delete a user (their sessions and tokens go too; never the last admin)',
      auth: 'admin',
      audit: 'user.delete',
      params: UserParams,
      response: z.null(),
      status: 204,
      handler: ({ actor, params }) => {
        d.ops.deleteUser(actor, params.name);
        return null;
      },
    }),
    route({
      method: 'get',
      path: '/tokens',
      tag: 'tokens',
      summary: 'List API tokens (yours; an admin sees all)',
      auth: 'viewer',
      response: TokenList,
      handler: ({ actor }) => ({ items: d.ops.tokens(actor) }),
    }),
    route({
      method: 'post',
      path: '/tokens',
      tag: 'tokens',
      summary: 'Create an API token (role at most yours); the secret is in this answer only',
      auth: 'viewer',
      audit: 'token.create',
      body: TokenCreate,
      maxBody: 8 * 1024,
      response: TokenCreated,
      status: 201,
      handler: ({ actor, body, auditTarget }) => {
        const made = d.ops.createToken(actor, body);
        auditTarget(`${made.info.id} (${made.info.name}, ${made.info.role})`);
        return made;
      },
    }),
    route({
      method: 'delete',
      path: '/tokens/{id}',
      tag: 'tokens',
      summary: 'Revoke an API token (yours; an admin: any)',
      auth: 'viewer',
      audit: 'token.revoke',
      params: TokenParams,
      response: TokenSchema,
      handler: ({ actor, params }) => d.ops.revokeToken(actor, params.id),
    }),
    route({
      method: 'get',
      path: '/audit',
      tag: 'audit',
      summary: 'The audit log, newest first: who, what, when, from where, result',
      auth: 'admin',
      query: AuditQuery,
      response: AuditPage,
      handler: ({ actor, query }) => d.ops.audit(actor, query),
    }),
  ];
}
