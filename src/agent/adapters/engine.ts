/**
 * ContainerEngine over the runtime's ContainerManager (src/runtime/containers.ts). The agent names
 * containers itself (safe names), so the engine's `id` is the manager's container name; the manager's
 * random id stays internal (directories, cgroup `/berth/<id>`, runtime state).
 *
 * Status mapping: manager `created` → created, `running` → running, `exited` → stopped; containers in
 * flight (`creating`, `removing`) are not listed (the manager's recovery pass finishes or undoes them).
 * The restart policy handed to the manager is always `no`: restarts are the reconciler's business.
 */
import * as path from 'node:path';
import type { Service } from '../../core/target.js';
import { cgroupProcs, readCgroupStats } from '../../device/cgroup.js';
import { conflict, invalidInput } from '../../lib/errors.js';
import { exec } from '../../lib/exec.js';
import type { AppSpec, BindVolume } from '../../runtime/bundle.js';
import { type ContainerManager, type ContainerRecord, statDevice } from '../../runtime/containers.js';
import { inspectContainer } from '../../runtime/inspect.js';
import { type LogEntry, readLogs } from '../../runtime/logs.js';
import type { PortMapping } from '../../runtime/network/network.js';
import { processTable } from '../../runtime/top.js';
import {
  type ContainerEngine,
  type ContainerStats,
  type CreateContainerRequest,
  type EngineContainer,
  type ExecResult,
  type LogLine,
  type LogStreamOptions,
  UPDATE_LOCK_MOUNT,
} from '../ports.js';

const cgroupPathOf = (rec: ContainerRecord) => `/berth/${rec.id}`;

function toEngine(rec: ContainerRecord): EngineContainer | undefined {
  const status =
    rec.state === 'running'
      ? 'running'
      : rec.state === 'exited'
        ? 'stopped'
        : rec.state === 'created'
          ? 'created'
          : undefined;
  if (!status) return undefined;
  return {
    id: rec.name,
    image: rec.image,
    status,
    labels: { ...(rec.request.app.labels ?? {}) },
    exitCode: rec.exitCode ?? undefined,
    startedAt: rec.startedAt ?? undefined,
    finishedAt: rec.finishedAt ?? undefined,
    ip: rec.ipAddress ?? undefined,
    cgroupPath: status === 'running' ? cgroupPathOf(rec) : undefined,
    command: rec.request.app.command,
    createdAt: rec.createdAt,
    runtimeId: rec.id,
    ports: rec.ports.map((p) => ({
      ...(p.hostIp ? { hostIp: p.hostIp } : {}),
      hostPort: p.hostPort,
      containerPort: p.containerPort,
      protocol: p.protocol,
    })),
    oomKilled: rec.oomKilled,
  };
}

/** The target's service spec → the runtime's app spec (volumes resolved to host paths, devices stat'ed). */
export async function serviceToAppSpec(
  spec: Service,
  labels: Record<string, string>,
  volumePaths: Record<string, string>,
  lockDir?: string,
): Promise<AppSpec> {
  const volumes: BindVolume[] = [];
  for (const v of spec.volumes) {
    if (v.type === 'volume') {
      const host = volumePaths[v.source!];
      if (!host) throw invalidInput(`volume ${v.source} has no host path`);
      volumes.push({ source: host, target: v.target, readOnly: v.readOnly });
    } else if (v.type === 'bind') volumes.push({ source: v.source!, target: v.target, readOnly: v.readOnly });
    else throw invalidInput(`tmpfs mount ${v.target}: not supported by the runtime yet`);
  }
  if (lockDir) volumes.push({ source: lockDir, target: UPDATE_LOCK_MOUNT, readOnly: false, ensure: true });
  const devices = [];
  for (const d of spec.devices) devices.push(await statDevice(d.hostPath, d.containerPath));
  return {
    ...(spec.entrypoint ? { entrypoint: spec.entrypoint } : {}),
    ...(spec.command ? { command: spec.command } : {}),
    env: spec.env,
    ...(spec.workingDir ? { workingDir: spec.workingDir } : {}),
    ...(spec.user ? { user: spec.user } : {}),
    ...(spec.hostname ? { hostname: spec.hostname } : {}),
    volumes,
    resources: {
      ...(spec.resources.memoryBytes ? { memoryBytes: spec.resources.memoryBytes } : {}),
      ...(spec.resources.cpus ? { cpus: spec.resources.cpus } : {}),
      ...(spec.resources.pids ? { pidsLimit: spec.resources.pids } : {}),
    },
    network: spec.networkMode,
    restart: 'no',
    capAdd: spec.capAdd,
    capDrop: spec.capDrop,
    privileged: spec.privileged,
    readOnlyRootfs: spec.readOnly,
    devices,
    labels,
    ...(spec.stopSignal ? { stopSignal: spec.stopSignal } : {}),
  };
}

export class RuntimeEngine implements ContainerEngine {
  constructor(private readonly manager: ContainerManager) {}

  async list(): Promise<EngineContainer[]> {
    const out: EngineContainer[] = [];
    for (const rec of await this.manager.list({ all: true })) {
      const c = toEngine(rec);
      if (c) out.push(c);
    }
    return out;
  }

  async create(req: CreateContainerRequest): Promise<{ id: string }> {
    const app = await serviceToAppSpec(req.spec, req.labels, req.volumePaths, req.lockDir);
    const ports: PortMapping[] =
      req.spec.networkMode === 'bridge'
        ? req.spec.ports.map((p) => ({
            hostPort: p.hostPort ?? p.containerPort,
            containerPort: p.containerPort,
            protocol: p.protocol,
            ...(p.hostIp ? { hostIp: p.hostIp } : {}),
          }))
        : [];
    const rec = await this.manager.create({
      name: req.name,
      source: req.rootfsDir ? { kind: 'dir', path: req.rootfsDir } : { kind: 'image', ref: req.image },
      app,
      ports,
      ...(req.autoRemove ? { autoRemove: true } : {}),
    });
    return { id: rec.name };
  }

  async start(id: string): Promise<void> {
    await this.manager.start(id);
  }

  async stop(id: string, opts: { timeoutMs: number; signal?: string | undefined }): Promise<void> {
    if (opts.signal) {
      await this.manager.kill(id, opts.signal).catch(() => undefined);
      if (await this.manager.waitExit(id, opts.timeoutMs)) {
        await this.manager.inspect(id);
        return;
      }
    }
    await this.manager.stop(id, Math.max(0, opts.timeoutMs / 1000));
  }

  async kill(id: string, signal = 'SIGKILL'): Promise<void> {
    await this.manager.kill(id, signal);
  }

  async remove(id: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.manager.remove(id, { force: opts.force ?? false });
  }

  async exec(
    id: string,
    argv: string[],
    opts: { timeoutMs: number; env?: Record<string, string>; cwd?: string; input?: string },
  ): Promise<ExecResult> {
    const cmd = await this.manager.execCommand(id, argv, {
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    const r = await exec(cmd.file, cmd.args, {
      env: cmd.env,
      timeoutMs: opts.timeoutMs,
      allowFailure: true,
      ...(opts.input !== undefined ? { input: opts.input } : {}),
    });
    return { exitCode: r.code, stdout: r.stdout, stderr: r.stderr };
  }

  async logs(id: string, opts: { tail?: number }): Promise<string[]> {
    const rec = await this.manager.inspect(id);
    const entries = await readLogs(
      path.join(this.manager.containerDir(rec.id)),
      opts.tail !== undefined ? { tail: opts.tail } : {},
    );
    return entries.map((e) => e.log.replace(/\n$/, ''));
  }

  async streamLogs(id: string, opts: LogStreamOptions, emit: (line: LogLine) => void): Promise<void> {
    await this.manager.streamLogs(id, { ...opts, pollMs: 100 }, (e: LogEntry) =>
      emit({ stream: e.stream === 'stderr' ? 'stderr' : 'stdout', log: e.log, time: e.time }),
    );
  }

  async stats(id: string): Promise<ContainerStats> {
    const rec = await this.manager.inspect(id);
    return readCgroupStats(cgroupPathOf(rec));
  }

  async inspect(id: string, extra: { health?: string | undefined }): Promise<unknown> {
    const rec = await this.manager.inspect(id);
    return inspectContainer(rec, this.manager.containerDir(rec.id), extra);
  }

  async top(id: string): Promise<{ titles: string[]; processes: string[][] }> {
    const rec = await this.manager.inspect(id);
    if (rec.state !== 'running') throw conflict(`container ${id} is not running`);
    return processTable(await cgroupProcs(cgroupPathOf(rec)));
  }

  async setHosts(id: string, entries: ReadonlyArray<{ ip: string; names: string[] }>): Promise<void> {
    await this.manager.setExtraHosts(id, entries);
  }

  setIsolation(
    members: readonly string[],
    pairs: ReadonlyArray<readonly [string, string]>,
  ): Promise<boolean> {
    return this.manager.isolate(members, pairs);
  }

  async updateLabels(id: string, labels: Record<string, string>): Promise<void> {
    await this.manager.updateLabels(id, labels);
  }
}
