/**
 * Service discovery inside an app, as docker-compose users expect: a service reaches another of its app by
 * the service's name (`db`, also `db.<app>` and the container's own name) when they share an app network
 * (none listed = the app's "default" network). The agent writes the answer into each container's
 * /etc/hosts. Pure: containers in, the entries each container should list out.
 */
export interface HostsMember {
  id: string;
  app: string;
  service: string;
  /** bridge-mode address; members without one (host/none network) neither list nor are listed */
  ip?: string | undefined;
  networks: readonly string[];
  startedAt?: number | undefined;
}

export interface HostsEntry {
  ip: string;
  names: string[];
}

export function appHosts(members: readonly HostsMember[]): Map<string, HostsEntry[]> {
  const out = new Map<string, HostsEntry[]>();
  const withIp = members.filter((m) => m.ip);
  // newest first: during a hand-over both containers of a service run; the name means the new one
  const ordered = [...withIp].sort(
    (a, b) => a.service.localeCompare(b.service) || (b.startedAt ?? 0) - (a.startedAt ?? 0),
  );
  for (const m of withIp) {
    const nets = new Set(m.networks.length ? m.networks : ['default']);
    const entries: HostsEntry[] = [];
    for (const o of ordered) {
      if (o.id === m.id || o.app !== m.app) continue;
      const shared = (o.networks.length ? o.networks : ['default']).some((n) => nets.has(n));
      if (!shared) continue;
      entries.push({ ip: o.ip!, names: [o.service, `${o.service}.${o.app}`, o.id] });
    }
    out.set(m.id, entries);
  }
  return out;
}
