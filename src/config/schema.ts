import { z } from 'zod';

/**
 * The one configuration schema. Values come from (lowest to highest): defaults here, the config file
 * (YAML or JSON), environment variables (BERTH_<SECTION>_<KEY>, e.g. BERTH_STORAGE_DRIVER), CLI flags.
 */
export const ConfigSchema = z
  .object({
    stateDir: z.string().min(1).default('/var/lib/berth'),
    /**
     * Host-wide runtime state on a tmpfs, shared by every agent on the machine: subnet and published-port
     * claims, the apps' update locks. Gone at reboot, as what it describes.
     */
    runDir: z.string().startsWith('/').default('/run/berth'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** auto: human-readable lines on a terminal, JSON otherwise (journald, files, pipes) */
    logFormat: z.enum(['auto', 'json', 'pretty']).default('auto'),
    platform: z
      .string()
      .regex(/^linux\/[a-z0-9]+(\/v[0-9]+)?$/, 'an OCI platform like linux/arm64 or linux/arm/v7')
      .optional(),
    storage: z
      .object({
        driver: z.enum(['auto', 'overlay', 'btrfs', 'devmapper']).default('auto'),
        devmapper: z
          .object({
            poolName: z.string().optional(),
            dataDevice: z.string().optional(),
            metadataDevice: z.string().optional(),
            dataSize: z.string().default('10G'),
            metadataSize: z.string().default('256M'),
            baseSize: z.string().default('8G'),
            /** Thin-pool allocation unit (copy-on-write granularity): a multiple of 64K. */
            blockSize: z.string().default('64K'),
            discard: z.boolean().default(true),
            fsType: z.literal('ext4').default('ext4'),
          })
          .strict()
          .default({}),
      })
      .strict()
      .default({}),
    runtime: z
      .object({
        name: z.enum(['berth', 'runc', 'crun']).default('berth'),
        path: z.string().optional(),
        /** Per-container log cap: log.json rotates at logMaxSize bytes, logMaxFiles files kept. */
        logMaxSize: z
          .number()
          .int()
          .min(4096)
          .default(10 * 1024 * 1024),
        logMaxFiles: z.number().int().min(1).max(20).default(3),
      })
      .strict()
      .default({}),
    network: z
      .object({
        /**
         * The bridge for `--network bridge` containers. Unset (with subnet and nftTable): one of this
         * state dir's own — berth0 / 172.31.250.0/24 / berth for /var/lib/berth, else berth-<hash> /
         * 172.30.N.0/24 / berth_<hash> — recorded in <state-dir>/network.json (src/runtime/network/resolve.ts).
         */
        bridge: z
          .string()
          .regex(/^[A-Za-z0-9_.-]{1,15}$/, 'an interface name of at most 15 characters')
          .optional(),
        /** IPv4 subnet for the bridge; .1 is the gateway. */
        subnet: z
          .string()
          .regex(/^\d+\.\d+\.\d+\.\d+\/\d+$/, 'an IPv4 CIDR like 172.31.250.0/24')
          .optional(),
        /** nftables table (family ip) holding berth's NAT and port rules (iptables: its chains' prefix). */
        nftTable: z
          .string()
          .regex(/^[A-Za-z0-9_]{1,32}$/)
          .optional(),
        /** NAT/ports backend: auto = nftables when `nft` works, else iptables, else none (no NAT, no ports). */
        firewall: z.enum(['auto', 'nftables', 'iptables', 'none']).default('auto'),
      })
      .strict()
      .default({}),
    mqtt: z
      .object({
        broker: z.string().url().optional(),
        deviceId: z.string().optional(),
        fleet: z.string().default('default'),
        username: z.string().optional(),
        password: z.string().optional(),
        ca: z.string().optional(),
        cert: z.string().optional(),
        key: z.string().optional(),
        protocolVersion: z.union([z.literal(4), z.literal(5), z.literal('auto')]).default('auto'),
        fleetPublicKey: z.string().optional(),
      })
      .strict()
      .default({}),
    /** The device agent's timings and caps (`berth agent`). */
    agent: z
      .object({
        /** after an update, a crash or failed health check within this long rolls back */
        healthWindowMs: z.number().int().min(0).default(60_000),
        /** backoff between failed or waiting reconcile passes: doubles from min to max, jittered */
        retryMinMs: z.number().int().min(10).default(1000),
        retryMaxMs: z.number().int().min(10).default(60_000),
        /** a converged agent looks again this often (restarts, health, drift) */
        idleIntervalMs: z.number().int().min(10).default(10_000),
        /** bytes kept free on the state dir's filesystem when deciding whether an update fits */
        diskReserveBytes: z
          .number()
          .int()
          .min(0)
          .default(32 * 1024 * 1024),
        metricsIntervalMs: z.number().int().min(1000).default(60_000),
        /** events and metrics kept while offline: the oldest go first past either cap */
        outboxMaxBytes: z
          .number()
          .int()
          .min(64 * 1024)
          .default(8 * 1024 * 1024),
        outboxMaxAgeMs: z
          .number()
          .int()
          .min(60_000)
          .default(7 * 24 * 3600_000),
        /** a new agent version on trial must open its state, connect and reconcile within this long */
        trialDeadlineMs: z.number().int().min(1000).default(120_000),
        /** a trial cut short (power loss, launcher killed) this many times counts as failed */
        trialBoots: z.number().int().min(1).max(10).default(2),
        /**
         * after start and after converging to a new target, wait this long, then hand the executable's
         * start-up pages back to the kernel (src/agent/memory.ts); 0: never
         */
        pageOutAfterMs: z.number().int().min(0).default(30_000),
      })
      .strict()
      .refine((a) => a.retryMinMs <= a.retryMaxMs, { message: 'retryMinMs must not exceed retryMaxMs' })
      .default({}),
  })
  .strict();

export type Config = z.infer<typeof ConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;
