/**
 * What an operator can do with a fleet, as one interface with two transports:
 *   - LocalFleetClient (./local.ts): the server's own state dir, as the `local` actor (a one-machine fleet,
 *     or `berth fleet user add` on the server);
 *   - HttpFleetClient (./http.ts): a fleet server's API from anywhere (`--server … --token …`).
 * Every `berth fleet …` operator command is written once over this interface (src/cli/fleet-*.ts), and
 * both transports return the API's wire shapes (src/fleet/api/schemas.ts), so output is the same.
 */
import type {
  ApiToken,
  AuditEntry,
  CommandAnswer,
  Deployment,
  DeploymentProgress,
  DeploymentQueryInput,
  DeployRequestBody,
  DeployValidation,
  Device,
  DeviceDetail,
  DeviceEvent,
  EnrollmentCreateBody,
  EnrollmentToken,
  EventQueryInput,
  Image,
  Metrics,
  Page,
  RedeployRequestBody,
  Release,
  RolloutAbortBody,
  RolloutCreateBody,
  RolloutDeviceWire,
  RolloutPreview,
  RolloutWire,
  Session,
  User,
} from '../api/schemas.js';
import type { Role } from '../identity/roles.js';
import type { AuditQueryInput, CommandInput } from '../operations.js';

/** Device list query as a caller writes it (defaults filled by the server). */
export interface DeviceListQuery {
  online?: boolean | undefined;
  status?: Device['status'] | undefined;
  group?: string | undefined;
  /** `k=v` or `k` */
  label?: string[] | undefined;
  platform?: string | undefined;
  prefix?: string | undefined;
  image?: string | undefined;
  revoked?: boolean | undefined;
  sort?: 'id' | 'lastSeen' | 'status' | 'platform' | 'agentVersion' | 'targetVersion' | 'online' | undefined;
  order?: 'asc' | 'desc' | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
}

export interface MetricListQuery {
  series?: string[] | undefined;
  from?: string | undefined;
  to?: string | undefined;
  resolution?: number | undefined;
}

export interface RolloutListQuery {
  state?: RolloutWire['state'] | undefined;
  active?: boolean | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
}

export interface RolloutDeviceListQuery {
  phase?: number | undefined;
  outcome?: RolloutDeviceWire['outcome'] | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
}

export interface FleetClient {
  /** where it talks to, for messages: "state dir /var/lib/berth" or "https://fleet:8080" */
  readonly where: string;

  whoami(): Promise<Session>;

  devices(q: DeviceListQuery): Promise<Page<Device>>;
  device(id: string): Promise<DeviceDetail>;
  events(q: Partial<EventQueryInput>): Promise<Page<DeviceEvent>>;
  metrics(deviceId: string, q: MetricListQuery): Promise<Metrics>;
  images(): Promise<Image[]>;
  deployments(q: Partial<DeploymentQueryInput>): Promise<Page<Deployment>>;

  setLabels(
    deviceId: string,
    patch: { set?: Record<string, string> | undefined; remove?: string[] | undefined },
  ): Promise<{ labels: Record<string, string> }>;
  revokeDevice(deviceId: string): Promise<Device>;

  /** push an oci-archive / docker-archive file (an OCI layout dir only locally) */
  pushImage(source: string, tag: string, onProgress?: (bytes: number, total: number) => void): Promise<Image>;
  deleteImage(name: string): Promise<void>;

  /** agent releases, newest version first (pushed on the server: `berth fleet release push`) */
  releases(): Promise<Release[]>;
  release(version: string): Promise<Release>;
  /** refused (Conflict) while a current target names the release */
  deleteRelease(version: string): Promise<void>;

  validateDeployment(req: DeployRequestBody): Promise<DeployValidation>;
  deploy(req: DeployRequestBody): Promise<Deployment>;
  clearOverride(deviceId: string): Promise<Deployment>;
  /** publish the release of an earlier deployment again as its scope's next version */
  redeploy(deploymentId: number, req: RedeployRequestBody): Promise<Deployment>;
  progress(deploymentId: number): Promise<DeploymentProgress>;

  validateRollout(req: Omit<RolloutCreateBody, 'draft'>): Promise<RolloutPreview>;
  createRollout(req: RolloutCreateBody): Promise<RolloutWire>;
  rollouts(q: RolloutListQuery): Promise<Page<RolloutWire>>;
  rollout(id: number): Promise<RolloutWire>;
  rolloutDevices(id: number, q: RolloutDeviceListQuery): Promise<Page<RolloutDeviceWire>>;
  rolloutAction(
    id: number,
    action: 'start' | 'pause' | 'resume' | 'approve' | 'abort',
    body?: RolloutAbortBody,
  ): Promise<RolloutWire>;

  enrollmentTokens(): Promise<EnrollmentToken[]>;
  createEnrollmentToken(req: EnrollmentCreateBody): Promise<{ token: string; info: EnrollmentToken }>;
  revokeEnrollmentToken(id: string): Promise<void>;

  command(deviceId: string, req: CommandInput): Promise<CommandAnswer>;

  users(): Promise<User[]>;
  addUser(u: { name: string; role: Role; password: string }): Promise<User>;
  updateUser(
    name: string,
    patch: { role?: Role | undefined; password?: string | undefined; currentPassword?: string | undefined },
  ): Promise<User>;
  deleteUser(name: string): Promise<void>;

  tokens(): Promise<ApiToken[]>;
  createToken(req: {
    name: string;
    role: Role;
    expiresAt?: string | undefined;
  }): Promise<{ token: string; info: ApiToken }>;
  revokeToken(id: string): Promise<ApiToken>;

  audit(q: Partial<AuditQueryInput>): Promise<{ items: AuditEntry[]; next: string | null }>;

  close(): Promise<void>;
}
