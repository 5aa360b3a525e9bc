/**
 * `berth inspect <container>`: one JSON document, shaped like docker's (Id, Name, State, Config,
 * HostConfig, Mounts, NetworkSettings) so habits and scripts carry over, built from the container's record
 * and the config.json it runs with. The same function serves the CLI on the state dir and the agent API.
 */
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import type { ContainerRecord } from './containers.js';
import type { RuntimeSpec } from './spec.js';

export interface ContainerInspect {
  Id: string;
  Name: string;
  Created: string;
  Image: string;
  State: {
    Status: string;
    Running: boolean;
    Pid: number;
    ExitCode: number | null;
    OOMKilled: boolean;
    Error: string;
    StartedAt: string | null;
    FinishedAt: string | null;
    RestartCount: number;
    Health?: { Status: string } | undefined;
  };
  Config: {
    Hostname: string;
    User: string;
    Env: string[];
    Cmd: string[];
    WorkingDir: string;
    Labels: Record<string, string>;
    StopSignal: string;
  };
  HostConfig: {
    NetworkMode: string;
    Memory: number;
    NanoCpus: number;
    PidsLimit: number;
    Privileged: boolean;
    ReadonlyRootfs: boolean;
    CapAdd: string[];
    CapDrop: string[];
    RestartPolicy: { Name: string };
    AutoRemove: boolean;
  };
  Mounts: Array<{ Type: string; Source: string; Destination: string; RW: boolean }>;
  NetworkSettings: {
    IPAddress: string;
    SandboxKey: string;
    Ports: Record<string, Array<{ HostIp: string; HostPort: string }>>;
  };
  /** berth's own: app and service of a target, the bundle, the monitor */
  Berth: {
    app?: string | undefined;
    service?: string | undefined;
    managed: boolean;
    specHash: string;
    bundle: string;
    monitorPid: number | null;
  };
}

const iso = (t: number | null | undefined) => (t ? new Date(t).toISOString() : null);

/** What the bundle says the process is (the merged image + app spec); undefined when not written yet. */
async function readBundle(dir: string): Promise<RuntimeSpec | undefined> {
  try {
    return JSON.parse(await readFile(path.join(dir, 'bundle', 'config.json'), 'utf8')) as RuntimeSpec;
  } catch {
    return undefined;
  }
}

export async function inspectContainer(
  rec: ContainerRecord,
  dir: string,
  extra: { health?: string | undefined } = {},
): Promise<ContainerInspect> {
  const spec = await readBundle(dir);
  const app = rec.request.app;
  const labels = app.labels ?? {};
  const ports: ContainerInspect['NetworkSettings']['Ports'] = {};
  for (const p of rec.ports) {
    const key = `${p.containerPort}/${p.protocol}`;
    ports[key] = [...(ports[key] ?? []), { HostIp: p.hostIp ?? '0.0.0.0', HostPort: String(p.hostPort) }];
  }
  const internal = new Set(['/etc/hosts', '/etc/hostname', '/etc/resolv.conf']);
  const mounts = (spec?.mounts ?? [])
    .filter((m) => m.type === 'bind' && m.source && !internal.has(m.destination))
    .map((m) => ({
      Type: 'bind',
      Source: m.source!,
      Destination: m.destination,
      RW: !(m.options ?? []).includes('ro'),
    }));
  const health = extra.health && extra.health !== 'none' ? { Status: extra.health } : undefined;
  return {
    Id: rec.id,
    Name: rec.name,
    Created: new Date(rec.createdAt).toISOString(),
    Image: rec.image,
    State: {
      Status: rec.state,
      Running: rec.state === 'running',
      Pid: rec.pid ?? 0,
      ExitCode: rec.exitCode,
      OOMKilled: rec.oomKilled,
      Error: rec.error ?? '',
      StartedAt: iso(rec.startedAt),
      FinishedAt: iso(rec.finishedAt),
      RestartCount: rec.restartCount,
      ...(health ? { Health: health } : {}),
    },
    Config: {
      Hostname: spec?.hostname ?? app.hostname ?? '',
      User: spec ? `${spec.process.user.uid}:${spec.process.user.gid}` : (app.user ?? ''),
      Env: spec?.process.env ?? Object.entries(app.env ?? {}).map(([k, v]) => `${k}=${v}`),
      Cmd: spec?.process.args ?? [...(app.entrypoint ?? []), ...(app.command ?? [])],
      WorkingDir: spec?.process.cwd ?? app.workingDir ?? '',
      Labels: labels,
      StopSignal: rec.stopSignal,
    },
    HostConfig: {
      NetworkMode: rec.networkMode,
      Memory: app.resources?.memoryBytes ?? 0,
      NanoCpus: Math.round((app.resources?.cpus ?? 0) * 1e9),
      PidsLimit: app.resources?.pidsLimit ?? 0,
      Privileged: app.privileged === true,
      ReadonlyRootfs: app.readOnlyRootfs === true,
      CapAdd: app.capAdd ?? [],
      CapDrop: app.capDrop ?? [],
      RestartPolicy: { Name: rec.restartPolicy },
      AutoRemove: rec.request.autoRemove === true,
    },
    Mounts: mounts,
    NetworkSettings: { IPAddress: rec.ipAddress ?? '', SandboxKey: rec.netns ?? '', Ports: ports },
    Berth: {
      app: labels['io.berth.app'],
      service: labels['io.berth.service'],
      managed: labels['io.berth.app'] !== undefined,
      specHash: rec.specHash,
      bundle: path.join(dir, 'bundle'),
      monitorPid: rec.monitorPid,
    },
  };
}
