/**
 * Deployments, as the operator asks for them: validate a target against every limit the agent enforces
 * (its target schema, the 1 MiB cap on a target message, image references) BEFORE signing, sign it here
 * (the fleet private key never leaves the server), publish it retained, record it — intent first, so a
 * version is never reused and a deployment that never reached the broker says so.
 *
 * A device override can be cleared: a signed "no target" for the device's scope at its next version, after
 * which the device's groups' targets apply again (the rule is in src/fleet/view.ts). Deploying to a device
 * the fleet has never seen is refused unless asked for (`allowUnknown`): a misspelt id would otherwise wait
 * retained on the broker for a device that never comes.
 */
import type { KeyObject } from 'node:crypto';
import { Mutex } from '../../agent/mutex.js';
import { isVersion } from '../../core/self-update.js';
import { parseTarget } from '../../core/target.js';
import {
  BerthError,
  conflict,
  errorMessage,
  invalidInput,
  notFound,
  unsupported,
  withContext,
} from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import {
  encodeJson,
  ImageRefSchema,
  MAX_TARGET_BYTES,
  type SignedTarget,
  type Target,
  type TargetAgent,
  TargetSchema,
  type TargetScope,
} from '../../transport/messages.js';
import { signTarget } from '../../transport/targets.js';
import { deviceTopic, groupTargetTopic } from '../../transport/topics.js';
import type { FleetBus } from '../bus.js';
import type { RetainedTargets } from '../retained.js';
import type { DeploymentRow, FleetStores } from '../store/index.js';
import {
  deviceProgress,
  effectiveTarget,
  type ProgressSummary,
  type ScopeKey,
  type ScopeVersion,
  snapshotOf,
  summarizeProgress,
} from '../view.js';
import { planRedeploy } from './redeploy.js';
import type { ReleaseService } from './releases.js';

/**
 * What gets deployed: the apps (the agent's target schema), the images they need, by name:tag, and the
 * agent release the devices should run (docs/self-update.md), by version.
 */
export interface DeployInput {
  apps: unknown;
  images: string[];
  agent?: { version: string; allowDowngrade?: boolean | undefined } | undefined;
  /**
   * A redeploy (src/fleet/services/redeploy.ts): each image must still hold exactly this digest when the
   * target is built — the earlier release's content, not whatever its tag names now.
   */
  digests?: Record<string, string> | undefined;
}

/** Where targets go: the server's MQTT connection, or a short link from the local CLI. */
export interface TargetPublisher {
  publish(topic: string, payload: Buffer, opts: { qos: 0 | 1; retain?: boolean }): Promise<void>;
}

export interface DeployServiceOptions {
  stores: FleetStores;
  fleet: string;
  privateKey: KeyObject;
  publisher: () => TargetPublisher | Promise<TargetPublisher>;
  bus?: FleetBus | undefined;
  log: Logger;
  now?: () => number;
  /** agent releases, for targets that name one (`DeployInput.agent`) */
  releases?: ReleaseService | undefined;
}

/** A signature's JSON is at most this long (alg, 16-hex key id, base64 of 64 bytes) — for the size check. */
const SIGNATURE_ALLOWANCE = 160;

/**
 * One target of a batch (`publishMany`): a scope and what it gets — a release (apps + images pinned by
 * digest), or a clear ("no target of this scope any more").
 */
export interface PublishItem {
  scope: TargetScope;
  content?:
    | { apps: unknown; images: Array<{ name: string; digest: string }>; agent?: TargetAgent | undefined }
    | undefined;
  clear?: boolean | undefined;
}

export interface PublishManyResult {
  /** reached the broker and committed */
  published: DeploymentRow[];
  /** the publish failed: they may or may not have reached the broker; still `pending` (republish settles them) */
  inDoubt: DeploymentRow[];
}

export function targetTopic(signed: SignedTarget): string {
  const { fleet, scope } = signed.target;
  return scope.kind === 'device' ? deviceTopic(fleet, scope.id, 'target') : groupTargetTopic(fleet, scope.id);
}

export class DeployService {
  private readonly now: () => number;
  /** publishing and republishing take turns: a republish never sees a half-done publish as lost */
  private readonly publishing = new Mutex();

  constructor(private readonly o: DeployServiceOptions) {
    this.now = o.now ?? Date.now;
  }

  /**
   * The target `input` would become for `scope` (unsigned, version 0), checked as the agent will check it.
   * Throws InvalidInput naming what is wrong (or NotFound for an image the fleet does not hold).
   */
  validate(input: DeployInput, scope: TargetScope): Target {
    checkScope(scope);
    if (!Array.isArray(input.images) || input.images.length > 256)
      throw invalidInput('images: expected a list of at most 256 name:tag');
    const images = input.images.map((name, i) => {
      const r = ImageRefSchema.safeParse(name);
      if (!r.success) throw invalidInput(`images[${i}] ${JSON.stringify(name)} is not name:tag`);
      const img = this.o.stores.images.get(r.data);
      if (!img) throw notFound(`image ${r.data} is not in the fleet: push it first`);
      const pinned = input.digests?.[r.data];
      if (pinned !== undefined && pinned !== img.digest)
        throw conflict(
          `image ${r.data} is now ${img.digest}, not ${pinned}: the release changed (nothing was published)`,
        );
      return { name: r.data, digest: img.digest };
    });
    const agent = input.agent === undefined ? undefined : this.agentFor(input.agent, scope);
    const target: Target = {
      v: 1,
      fleet: this.o.fleet,
      scope,
      version: Number.MAX_SAFE_INTEGER, // the widest a version can be, for the size check
      issuedAt: new Date(this.now()).toISOString(),
      images,
      apps: input.apps as Target['apps'],
      ...(agent ? { agent } : {}),
    };
    // the size first: it is cheap, and a target too big for any agent is not worth parsing
    let bytes: number;
    try {
      bytes = encodeJson({ v: 1, target }).length + SIGNATURE_ALLOWANCE;
    } catch (err) {
      throw invalidInput(
        `target for ${scope.kind} ${scope.id}: apps are not plain JSON (${(err as Error).message})`,
      );
    }
    if (bytes > MAX_TARGET_BYTES)
      throw invalidInput(
        `target for ${scope.kind} ${scope.id} is ${formatBytes(bytes)} signed; agents refuse target messages over ${formatBytes(MAX_TARGET_BYTES)} (nothing was published)`,
      );
    // the agent's own schema, on exactly what it will receive
    parseTarget({ version: 0, apps: input.apps }, `target for ${scope.kind} ${scope.id}`);
    const checked = TargetSchema.safeParse(target);
    if (!checked.success)
      throw invalidInput(`target envelope: ${checked.error.issues[0]?.message ?? 'invalid'}`);
    return { ...target, version: 0 };
  }

  /** The publisher is there (the local CLI's broker link connected): Unavailable when it cannot be. */
  async ready(): Promise<void> {
    await this.o.publisher();
  }

  /** What the scope's current target holds (none: nothing): apps, images, the agent release it names. */
  currentInput(scope: TargetScope): DeployInput {
    const cur = this.o.stores.deployments.current(scope);
    const signed = cur && !cur.cleared ? this.o.stores.deployments.get(cur.deploymentId)?.signed : undefined;
    if (!signed) return { apps: {}, images: [] };
    const agent = signed.target.agent;
    return {
      apps: signed.target.apps,
      images: signed.target.images.map((i) => i.name),
      ...(agent
        ? { agent: { version: agent.version, ...(agent.allowDowngrade ? { allowDowngrade: true } : {}) } }
        : {}),
    };
  }

  /**
   * What redeploying deployment `id` publishes (the checks: redeploy.ts), for the ordinary deploy path of
   * its scope. `expect`: the scope the caller means (refused when the deployment is another's).
   */
  redeployInput(id: number, expect?: ScopeKey): { source: DeploymentRow; input: DeployInput } {
    const { deployments, images } = this.o.stores;
    const source = deployments.get(id);
    if (!source) throw notFound(`no deployment ${id}`);
    const cur = deployments.current(source.scope);
    const curSigned = cur ? deployments.get(cur.deploymentId)?.signed : undefined;
    const input = planRedeploy(source, {
      expect,
      current:
        cur && curSigned ? { id: cur.deploymentId, cleared: cur.cleared, signed: curSigned } : undefined,
      imageDigest: (name) => images.get(name)?.digest,
    });
    return { source, input };
  }

  /** Validate, sign, publish (retained), record. Returns the published deployment. */
  async deploy(
    input: DeployInput,
    scope: TargetScope,
    o: { allowUnknown?: boolean; createdBy?: string | undefined } = {},
  ): Promise<DeploymentRow> {
    // The agent release a scope names stays named by its later targets until another one is named: a
    // device that was offline for the agent deploy still updates when an app deploy reaches it.
    const agent = input.agent ?? this.currentInput(scope).agent;
    const target = this.validate({ ...input, ...(agent ? { agent } : {}) }, scope);
    if (scope.kind === 'device') this.checkDevice(scope.id, o.allowUnknown === true);
    return this.publish(scope, (version) => ({ ...target, version }), { createdBy: o.createdBy });
  }

  /**
   * Clear a device's override: its groups' targets apply again. A signed clear at the device scope's next
   * version (retained), so a device offline now gets it when it comes back.
   */
  async clear(deviceId: string, o: { createdBy?: string | undefined } = {}): Promise<DeploymentRow> {
    const scope: TargetScope = { kind: 'device', id: deviceId };
    checkScope(scope);
    const cur = this.o.stores.deployments.current(scope);
    if (!cur || cur.cleared) throw notFound(`device ${deviceId} has no target of its own to clear`);
    return this.publish(
      scope,
      (version) => ({
        v: 1,
        fleet: this.o.fleet,
        scope,
        version,
        issuedAt: new Date(this.now()).toISOString(),
        images: [],
        apps: {},
        clear: true,
      }),
      { createdBy: o.createdBy, cleared: true },
    );
  }

  /**
   * The release `want` names, pinned; refused when it is not in the fleet, or when a device of the scope
   * (as it last reported its platform) has no executable in it — before anything is published.
   */
  private agentFor(want: NonNullable<DeployInput['agent']>, scope: TargetScope): TargetAgent {
    if (
      typeof want !== 'object' ||
      want === null ||
      typeof want.version !== 'string' ||
      !isVersion(want.version)
    )
      throw invalidInput(`agent: expected {version: "1.2.3", allowDowngrade?: true}`);
    if (want.allowDowngrade !== undefined && typeof want.allowDowngrade !== 'boolean')
      throw invalidInput('agent.allowDowngrade: expected true or false');
    if (!this.o.releases) throw unsupported('this fleet has no agent releases');
    const { agent, release } = this.o.releases.pin(want);
    const ids = scope.kind === 'device' ? [scope.id] : this.o.stores.devices.inGroup(scope.id);
    const missing = new Map<string, string[]>();
    for (const d of this.o.stores.devices.rows(ids)) {
      if (!d.platform || d.revokedAt || release.artifacts[d.platform]) continue;
      missing.set(d.platform, [...(missing.get(d.platform) ?? []), d.id]);
    }
    if (missing.size > 0)
      throw invalidInput(
        `agent release ${release.version} has no executable for ${[...missing]
          .map(
            ([p, ids]) =>
              `${p} (${ids.slice(0, 5).join(', ')}${ids.length > 5 ? `, +${ids.length - 5}` : ''})`,
          )
          .join('; ')}; it has ${Object.keys(release.artifacts).sort().join(', ')} (nothing was published)`,
      );
    return agent;
  }

  private checkDevice(deviceId: string, allowUnknown: boolean): void {
    const d = this.o.stores.devices.get(deviceId);
    if (d?.revokedAt) throw conflict(`device ${deviceId} was revoked; it can no longer receive targets`);
    if (!d && !allowUnknown)
      throw notFound(
        `device ${deviceId} has never been seen by the fleet (misspelt? not enrolled yet?); pass --allow-unknown to deploy to it anyway`,
      );
  }

  private publish(
    scope: TargetScope,
    build: (version: number) => Target,
    o: { createdBy?: string | undefined; cleared?: boolean },
  ): Promise<DeploymentRow> {
    return this.publishing.run(() => this.publishOne(scope, build, o));
  }

  private async publishOne(
    scope: TargetScope,
    build: (version: number) => Target,
    o: { createdBy?: string | undefined; cleared?: boolean },
  ): Promise<DeploymentRow> {
    const { stores, privateKey, log } = this.o;
    const { row, signed } = stores.deployments.reserve(scope, (v) => signTarget(build(v), privateKey), {
      now: this.now(),
      createdBy: o.createdBy,
      cleared: o.cleared === true,
    });
    try {
      const publisher = await this.o.publisher();
      await publisher.publish(targetTopic(signed), encodeJson(signed), { qos: 1, retain: true });
    } catch (err) {
      stores.deployments.fail(row.id);
      const e = withContext(`publishing ${scope.kind} ${scope.id} version ${row.version}`, err);
      throw new BerthError(e.code, `${e.message} (nothing was deployed)`, { cause: err });
    }
    const at = this.now();
    stores.deployments.commit(row.id, at);
    log.info(
      { scope: `${scope.kind}/${scope.id}`, version: row.version, cleared: row.cleared },
      'target published',
    );
    this.o.bus?.emit({
      type: 'deployment',
      at,
      id: row.id,
      scope,
      version: row.version,
      cleared: row.cleared,
      createdBy: row.createdBy,
    });
    return { ...row, state: 'published' };
  }

  /** The target a release or a clear becomes for `scope` at `version` (unsigned). */
  targetFor(item: PublishItem, version: number): Target {
    const base = {
      v: 1 as const,
      fleet: this.o.fleet,
      scope: item.scope,
      version,
      issuedAt: new Date(this.now()).toISOString(),
    };
    if (item.clear) return { ...base, images: [], apps: {}, clear: true };
    if (!item.content) throw invalidInput(`${item.scope.kind} ${item.scope.id}: nothing to publish`);
    return {
      ...base,
      images: item.content.images as Target['images'],
      apps: item.content.apps as Target['apps'],
      ...(item.content.agent ? { agent: item.content.agent } : {}),
    };
  }

  /**
   * Publish many targets as one batch, intent first: every deployment is reserved (`pending`) in one
   * transaction — `reserved(rows)` runs inside it, so the caller's own intent is written with them — then
   * published, then the ones that reached the broker are committed in one transaction (`committed(rows)`
   * inside it). A publish that fails leaves its deployment `pending`: it may have reached the broker, and
   * the republish on the next connect settles it (published once, never twice).
   */
  async publishMany(
    items: readonly PublishItem[],
    o: {
      createdBy?: string | undefined;
      reserved?: (rows: DeploymentRow[]) => void;
      committed?: (rows: DeploymentRow[]) => void;
      /** publishes in flight at once (default 256) */
      window?: number;
      /** this many items are published one by one, acknowledged, before the others (default 0) */
      leading?: number;
    } = {},
  ): Promise<PublishManyResult> {
    if (items.length === 0) return { published: [], inDoubt: [] };
    return this.publishing.run(async () => {
      const { stores, privateKey, log } = this.o;
      const publisher = await this.o.publisher();
      const reserved = stores.deployments.transaction(() => {
        const rows = items.map((item) => {
          checkScope(item.scope);
          return stores.deployments.reserve(
            item.scope,
            (v) => signTarget(this.targetFor(item, v), privateKey),
            { now: this.now(), createdBy: o.createdBy, cleared: item.clear === true },
          );
        });
        o.reserved?.(rows.map((r) => r.row));
        return rows;
      });
      const ok: DeploymentRow[] = [];
      const inDoubt: DeploymentRow[] = [];
      const window = o.window ?? 256;
      // the first `leading` go out (and are acknowledged) before any other is sent: a group target before
      // the clears that make devices fall back to it
      const lead = Math.min(o.leading ?? 0, reserved.length);
      for (let i = 0; i < lead; i++) {
        const r = reserved[i]!;
        try {
          await publisher.publish(targetTopic(r.signed), encodeJson(r.signed), { qos: 1, retain: true });
          ok.push(r.row);
        } catch (err) {
          log.warn(
            {
              scope: `${r.row.scope.kind}/${r.row.scope.id}`,
              version: r.row.version,
              err: errorMessage(err),
            },
            'target publish failed; it and the ones after it stay pending until the next republish settles them',
          );
          inDoubt.push(...reserved.slice(i).map((x) => x.row));
          break;
        }
      }
      for (let i = lead; i < reserved.length && inDoubt.length === 0; i += window) {
        const chunk = reserved.slice(i, i + window);
        const results = await Promise.allSettled(
          chunk.map((r) =>
            publisher.publish(targetTopic(r.signed), encodeJson(r.signed), { qos: 1, retain: true }),
          ),
        );
        results.forEach((res, j) => {
          const row = chunk[j]!.row;
          if (res.status === 'fulfilled') ok.push(row);
          else {
            inDoubt.push(row);
            log.warn(
              {
                scope: `${row.scope.kind}/${row.scope.id}`,
                version: row.version,
                err: errorMessage(res.reason),
              },
              'target publish failed; it stays pending until the next republish settles it',
            );
          }
        });
      }
      const at = this.now();
      stores.deployments.transaction(() => {
        for (const r of ok) stores.deployments.commit(r.id, at);
        o.committed?.(ok);
      });
      log.info({ published: ok.length, inDoubt: inDoubt.length }, 'targets published');
      for (const row of ok)
        this.o.bus?.emit({
          type: 'deployment',
          at,
          id: row.id,
          scope: row.scope,
          version: row.version,
          cleared: row.cleared,
          createdBy: row.createdBy,
        });
      return { published: ok.map((r) => ({ ...r, state: 'published' as const })), inDoubt };
    });
  }

  /**
   * Make the broker retain every scope's current target again — only those it lacks when `retained` says
   * what it holds (src/fleet/retained.ts; a broker that lost its store gets everything). Deployments left
   * `pending` by a crash or a failed publish may have reached the broker: they become current (see
   * reserve) and are published only if the broker does not hold them. Returns how many were published.
   */
  async republish(o: { retained?: () => Promise<RetainedTargets | undefined> } = {}): Promise<number> {
    return this.publishing.run(async () => {
      const { stores } = this.o;
      for (const p of stores.deployments.pending()) stores.deployments.commit(p.id, this.now()); // see reserve()
      const publisher = await this.o.publisher();
      const held = o.retained ? await o.retained() : undefined;
      // a revoked device's own target stays cleared (revocation emptied it on the broker)
      const all = stores.deployments
        .currentSigned()
        .filter((s) => s.target.scope.kind !== 'device' || !stores.devices.get(s.target.scope.id)?.revokedAt)
        .filter((s) => !held || (held.get(targetTopic(s)) ?? -1) < s.target.version);
      for (const signed of all)
        await publisher.publish(targetTopic(signed), encodeJson(signed), { qos: 1, retain: true });
      return all.length;
    });
  }

  /**
   * Where every device the deployment concerns stands (pure evaluation over the stored reports): the device
   * of a device scope, or every device that follows the group. `deploy --wait` polls this.
   */
  progress(want: ScopeKey & { version: number }): ProgressSummary {
    const { stores } = this.o;
    // a deployment that names an agent release is done on a device once it runs that release too
    const dep = stores.deployments.byVersion(want, want.version);
    const agent = dep ? stores.deployments.get(dep.id)?.signed.target.agent?.version : undefined;
    const ids = want.kind === 'device' ? [want.id] : stores.devices.inGroup(want.id);
    const scopeTargets = new Map<string, ScopeVersion>();
    const targetOf = (s: ScopeKey) => {
      const k = `${s.kind}/${s.id}`;
      if (!scopeTargets.has(k)) {
        const cur = stores.deployments.current(s);
        if (cur) scopeTargets.set(k, cur);
      }
      return scopeTargets.get(k);
    };
    const rows = stores.devices.rows(ids);
    const progress = rows.map((d) =>
      deviceProgress({ ...want, agent }, snapshotOf(d, effectiveTarget(d.id, d.groups, targetOf))),
    );
    if (want.kind === 'device' && rows.length === 0)
      progress.push({
        deviceId: want.id,
        state: 'applying',
        online: false,
        reported: '-',
        detail: 'never seen',
      });
    return summarizeProgress(progress);
  }
}

function checkScope(scope: TargetScope): void {
  if (!TargetSchema.shape.scope.safeParse(scope).success)
    throw invalidInput(`${scope?.kind ?? 'scope'} ${JSON.stringify(scope?.id)}: use 1-128 of [A-Za-z0-9_.-]`);
}

function formatBytes(n: number): string {
  return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}
