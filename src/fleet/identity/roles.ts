/**
 * Who may do what on the fleet API. Three roles, each including the one below it:
 * - viewer: read everything an operator sees (devices, state, events, metrics, images, deployments);
 * - operator: also change the fleet (deploy, clear, push/delete images, commands, labels, revoke, enrollment);
 * - admin: also manage users, every API token, and read the audit log.
 */
export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export function isRole(s: string): s is Role {
  return (ROLES as readonly string[]).includes(s);
}

/** Does a caller holding `have` satisfy a route that needs `need`? */
export function roleAllows(have: Role, need: Role): boolean {
  return RANK[have] >= RANK[need];
}

/** The weaker of two roles (a token never acts with more than its creator holds now). */
export function lesserRole(a: Role, b: Role): Role {
  return RANK[a] <= RANK[b] ? a : b;
}
