/**
 * The device stack, built in one place: the runtime (berth-runtime, runc or crun, under berth-monitor),
 * container networking, the snapshotter, the images on it (AgentImages: image → rootfs) and the
 * ContainerManager over them. `berth agent` (startDeviceAgent) and the docker-like commands (CliContext's
 * `device`) both get theirs here, so a container `berth run` makes and one the agent makes come from the
 * same wiring, with the same native parts (NativeParts, handed in by the composition root).
 *
 * Parts a command may not need open on first use: the snapshotter (opened and recovered) and the image
 * code load when an image rootfs is first prepared, remounted or released — `berth ps` never loads them
 * — and the runtime binary is located when first run. `open()` does both now (the agent, which needs them
 * all and must fail at start, not later).
 */
import type { Config } from '../../config/schema.js';
import type { ContentStore } from '../../content/store.js';
import type { Db } from '../../db/database.js';
import type { Logger } from '../../lib/logger.js';
import type { NativeParts } from '../../lib/native.js';
import { ContainerManager, ociArch } from '../../runtime/containers.js';
import { HostClaims } from '../../runtime/network/host-claims.js';
import { NetworkManager } from '../../runtime/network/network.js';
import { DefaultRootfsProvider, type ImageRootfs } from '../../runtime/rootfs.js';
import { LazyRuntime, type OciRuntime, runtimeFromConfig } from '../../runtime/runtime.js';
import type { Snapshotter } from '../../snapshots/snapshotter.js';
import type { AgentImages, ImagePuller } from './images.js';

export interface DeviceStackOptions {
  db: Db;
  store: ContentStore;
  config: Config;
  stateDir: string;
  log: Logger;
  /** where the native programs run from (development: native/build; packaged: extracted) */
  native: NativeParts;
  /** argv the monitor runs after an auto-remove (`run -d --rm`) container exits: `berth rm -f <id>` */
  autoRemoveCommand?: ((id: string) => string[]) | undefined;
  /** the agent's fleet link, which fetches images; without one a fetch is Unavailable */
  puller?: ImagePuller | undefined;
}

export class DeviceStack {
  readonly manager: ContainerManager;
  private readonly runtime: LazyRuntime;
  private snapshotterP?: Promise<Snapshotter>;
  private imagesP?: Promise<AgentImages>;

  constructor(private readonly o: DeviceStackOptions) {
    const cfg = o.config;
    this.runtime = new LazyRuntime(() => runtimeFromConfig(cfg.runtime, o.stateDir, o.native));
    const native = o.native;
    this.manager = new ContainerManager({
      db: o.db,
      stateDir: o.stateDir,
      runtime: this.runtime,
      get monitorPath() {
        return native.path('monitor');
      },
      network: new NetworkManager(o.db, cfg.network, {
        stateDir: o.stateDir,
        claims: new HostClaims(cfg.runDir),
        log: o.log,
      }),
      rootfs: new DefaultRootfsProvider(this.imageRootfs()),
      arch: ociArch(),
      logMaxSize: cfg.runtime.logMaxSize,
      logMaxFiles: cfg.runtime.logMaxFiles,
      log: o.log,
      ...(o.autoRemoveCommand ? { autoRemoveCommand: o.autoRemoveCommand } : {}),
    });
  }

  /** The configured snapshotter, opened (and its recovery run) once. */
  snapshotter(): Promise<Snapshotter> {
    this.snapshotterP ??= import('../../snapshots/factory.js').then(({ createSnapshotter }) =>
      createSnapshotter({
        db: this.o.db,
        stateDir: this.o.stateDir,
        storage: this.o.config.storage,
        native: this.o.native,
        log: this.o.log,
      }),
    );
    return this.snapshotterP;
  }

  /** Images on the snapshotter: fetch (with a puller), unpack, rootfs, gc. */
  images(): Promise<AgentImages> {
    this.imagesP ??= Promise.all([this.snapshotter(), import('./images.js')]).then(
      ([snapshotter, { AgentImages }]) =>
        new AgentImages({
          db: this.o.db,
          store: this.o.store,
          snapshotter,
          stateDir: this.o.stateDir,
          puller: this.o.puller,
          log: this.o.log,
        }),
    );
    return this.imagesP;
  }

  /** Everything opened now: the runtime binary located, the snapshotter recovered, the images ready. */
  async open(): Promise<{ runtime: OciRuntime; snapshotter: Snapshotter; images: AgentImages }> {
    const runtime = this.runtime.resolve();
    const [snapshotter, images] = await Promise.all([this.snapshotter(), this.images()]);
    return { runtime, snapshotter, images };
  }

  /** Close what was opened (the snapshotter); containers keep running under their monitors. */
  async close(): Promise<void> {
    if (!this.snapshotterP) return;
    const sn = await this.snapshotterP.catch(() => undefined);
    await sn?.close().catch(() => undefined);
  }

  /** The image → rootfs seam of the ContainerManager, over images() opened on first use. */
  private imageRootfs(): ImageRootfs {
    return {
      prepare: async (id, ref, dir) => (await this.images()).prepare(id, ref, dir),
      remount: async (id, dir) => (await this.images()).remount(id, dir),
      release: async (id, dir) => (await this.images()).release(id, dir),
    };
  }
}
