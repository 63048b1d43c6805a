/**
 * The server's side of NATS: snapshots go into the AEGIS_SEG_MAPS JetStream stream, which
 * keeps the last message per subject so a host that comes online reads the current state;
 * license envelopes are plain publishes (they repeat every few minutes); agent reports
 * come in on aegis.agent.<machine>.*. Subjects come from protocol's `subjects`, the
 * connection handling from runtime/src/nats_connection.ts (shared with AgentBus).
 *
 * The bus moves opaque strings. Signing snapshots and sealing envelopes happen before
 * publish, and a report's content is the caller's to validate: only the machine in the
 * subject is vouched for, by nats-server's authorization (deploy/nats).
 */
import {
  connect,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type Msg,
  type NatsConnection,
  type StreamConfig,
  type Subscription,
} from 'nats';
import {
  AGENT_REPORT_KINDS,
  ALL_HOSTS,
  LICENSE_REQUEST_REFUSALS,
  SEG_MAPS_STREAM,
  SEG_MAPS_WILDCARD,
  agentSubjectMachine,
  isMachineId,
  isSubjectToken,
  subjectWildcards,
  subjects,
  type AgentReportKind,
  type LicenseRequestRefusal,
  type LicenseRequestRefusalCode,
} from '../../../protocol/src/index.js';
import {
  buildConnectOptions,
  classifyConnectError,
  ConnectionWatch,
  describeError as describe,
  natsErrorCode as natsCode,
  NO_LOG,
  withTimeout,
  type NatsAuthOptions,
  type NatsLogger,
  type NatsTlsOptions,
} from '../../../runtime/src/nats_connection.js';

/** Structured log sink; a winston logger fits. */
export type BusLogger = NatsLogger;

export type BusErrorCode =
  | 'NATS_UNREACHABLE'
  | 'NATS_AUTH'
  | 'NATS_TLS'
  | 'NATS_DISCONNECTED'
  | 'NATS_CLOSED'
  | 'NATS_STREAM'
  | 'NATS_PUBLISH_FAILED'
  | 'NATS_BAD_ARGUMENT';

/** What a publish carried: a snapshot message (JetStream) or a license envelope. */
export type PublishKind = 'seg_map' | 'license';

/** Every failure the bus raises on purpose; the nats.js error is kept in `cause`. */
export class BusError extends Error {
  readonly code: BusErrorCode;
  constructor(code: BusErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'BusError';
    this.code = code;
  }
}

/** Where and how to connect (authentication as in NatsAuthOptions: creds, credsFile or user/pass). */
export interface ServerBusOptions extends NatsAuthOptions {
  /** One URL or several (a cluster). */
  url: string | string[];
  /** TLS to nats-server; required when nats-server has a tls block. */
  tls?: BusTlsOptions;
  log?: BusLogger;
  /** Connection name shown by nats-server (default "aegis-server"). */
  name?: string;
  /** Wait between reconnect attempts, before jitter (default 1000 ms). Attempts never stop. */
  reconnectWaitMs?: number;
  /** How long a JetStream publish waits for the stream's ack (default 5000 ms). */
  publishTimeoutMs?: number;
  /** Reports larger than this are dropped with a warning (default 256 KiB). */
  maxReportBytes?: number;
  /**
   * Replicas of the snapshot stream (AEGIS_NATS_STREAM_REPLICAS; default 1): 3 on a
   * 3-node JetStream cluster, so a snapshot acked by JetStream survives the loss of a
   * node. An existing stream is updated when this differs from its replica count.
   */
  streamReplicas?: number;
}

/** TLS to nats-server, as nats.js takes it (the files are read at connect). */
export type BusTlsOptions = NatsTlsOptions;

export type { AgentReportKind };
/** One agent report; `machine` is the machine id its subject names (what nats-server let that user publish). */
export type AgentReportHandler = (kind: AgentReportKind, machine: string, data: unknown) => void | Promise<void>;
/**
 * Answers an agent's request for the current envelope of its fleet; null when there is
 * none. `machine` is the machine id the request's subject names (what nats-server vouches for).
 * Throwing an error whose `code` is one of LICENSE_REQUEST_REFUSALS refuses the request:
 * the reply is {"error":{"code","message"}} and carries no envelope.
 */
export type LicenseProvider = (fleet: string, machine: string) => string | null | Promise<string | null>;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** The stream settings the server insists on; anything else in an existing stream is kept. */
export const SEG_MAPS_STREAM_CONFIG: Readonly<Partial<StreamConfig>> = Object.freeze({
  name: SEG_MAPS_STREAM,
  subjects: [SEG_MAPS_WILDCARD],
  retention: RetentionPolicy.Limits,
  storage: StorageType.File,
  max_msgs_per_subject: 1,
  discard: DiscardPolicy.Old,
  allow_direct: true,
  num_replicas: 1,
});
const STREAM_KEYS = Object.keys(SEG_MAPS_STREAM_CONFIG) as Array<keyof StreamConfig>;

/** Most replicas JetStream allows a stream. */
export const MAX_STREAM_REPLICAS = 5;

/** A fresh copy (nats.js normalizes the config object it is given in place), with `replicas`. */
function streamConfig(replicas: number): Partial<StreamConfig> {
  return { ...(JSON.parse(JSON.stringify(SEG_MAPS_STREAM_CONFIG)) as Partial<StreamConfig>), num_replicas: replicas };
}

/** Who nats-server refused, for the NATS_AUTH message of a failed first connect. */
function refusedWho(opts: NatsAuthOptions): string {
  if (opts.creds !== undefined) return 'the NATS credentials';
  if (opts.credsFile !== undefined) return `the NATS credentials in ${opts.credsFile}`;
  return opts.user ? `the credentials of user ${opts.user}` : 'the connection (no credentials given)';
}

/** The server's NATS connection: publishes snapshots and license envelopes, receives agent reports. */
export class ServerBus {
  private readonly subs: Subscription[] = [];
  private wantStream = false;
  /** Failed publishes since connect, by what was published and the BusError code (bounded: both are fixed sets). */
  private readonly failedPublishes = new Map<string, { kind: PublishKind; code: BusErrorCode; count: number }>();

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly watch: ConnectionWatch,
    private readonly log: BusLogger,
    private readonly publishTimeoutMs: number,
    private readonly maxReportBytes: number,
    private readonly streamReplicas: number,
  ) {}

  /**
   * Connects (the first attempt must succeed: a BusError NATS_UNREACHABLE or NATS_AUTH
   * otherwise) and from then on reconnects forever.
   */
  static async connect(opts: ServerBusOptions): Promise<ServerBus> {
    const log = opts.log ?? NO_LOG;
    const replicas = opts.streamReplicas ?? 1;
    if (!Number.isSafeInteger(replicas) || replicas < 1 || replicas > MAX_STREAM_REPLICAS) {
      throw new BusError('NATS_BAD_ARGUMENT', `stream replicas must be an integer from 1 to ${MAX_STREAM_REPLICAS}, got ${String(replicas)}`);
    }
    let nc: NatsConnection;
    try {
      nc = await connect(buildConnectOptions({ url: opts.url, auth: opts, ...(opts.tls ? { tls: opts.tls } : {}), name: opts.name ?? 'aegis-server', reconnectWaitMs: opts.reconnectWaitMs }));
    } catch (err) {
      const e = classifyConnectError(err, { url: opts.url, refused: `${refusedWho(opts)}; check them (revoked or expired credentials must be re-issued)` });
      throw new BusError(e.code, e.message, { cause: e.cause });
    }
    const timeout = opts.publishTimeoutMs ?? 5000;
    const jsm = await nc.jetstreamManager({ checkAPI: false, timeout });
    const js = nc.jetstream({ timeout });
    const watch = new ConnectionWatch(nc, log, 'server bus');
    log.info('server bus connected to nats-server', { server: nc.getServer() });
    const bus = new ServerBus(nc, js, jsm, watch, log, timeout, opts.maxReportBytes ?? 256 * 1024, replicas);
    watch.onReconnect = () => bus.afterReconnect();
    return bus;
  }

  /**
   * A nats-server that comes back may have lost its store (a new machine, a wiped
   * volume): once ensureStream() has been asked for, it is done again after every reconnect.
   */
  private afterReconnect(): void {
    if (!this.wantStream) return;
    this.ensureStream().catch((err: unknown) => this.log.error('server bus: cannot set up the snapshot stream after reconnect', { error: describe(err) }));
  }

  /** True while connected to a nats-server (false while reconnecting and after close). */
  isConnected(): boolean {
    return this.watch.connected && !this.nc.isClosed();
  }

  private requireConnected(what: string): void {
    if (this.nc.isClosed()) throw new BusError('NATS_CLOSED', `cannot ${what}: the server bus is closed`);
    if (!this.watch.connected) throw new BusError('NATS_DISCONNECTED', `cannot ${what}: not connected to nats-server (reconnecting)`);
  }

  /** The nats-server this bus is connected to now (host:port), for logs and failover tests. */
  server(): string {
    return this.nc.getServer();
  }

  /**
   * Creates the AEGIS_SEG_MAPS stream, or updates an existing one to the settings in
   * SEG_MAPS_STREAM_CONFIG with the configured replicas (a JetStream cluster moves the
   * data to new peers itself). Safe to call on every start; repeated after each reconnect.
   */
  async ensureStream(): Promise<void> {
    this.wantStream = true;
    this.requireConnected('set up the snapshot stream');
    let existing: StreamConfig | null = null;
    try {
      existing = (await this.jsm.streams.info(SEG_MAPS_STREAM)).config;
    } catch (err) {
      const apiCode = (err as { api_error?: { err_code?: number } }).api_error?.err_code;
      if (natsCode(err) === '503') {
        throw new BusError('NATS_STREAM', `JetStream is not enabled on nats-server (no answer on the JetStream API); enable it in the server config (deploy/nats)`, { cause: err });
      }
      if (apiCode !== 10059 && natsCode(err) !== '404') {
        throw new BusError('NATS_STREAM', `cannot read stream ${SEG_MAPS_STREAM}: ${describe(err)} (is JetStream enabled on nats-server?)`, { cause: err });
      }
    }
    try {
      if (existing === null) {
        await this.jsm.streams.add(streamConfig(this.streamReplicas));
        this.log.info(`created JetStream stream ${SEG_MAPS_STREAM}`, { subjects: SEG_MAPS_STREAM_CONFIG.subjects, replicas: this.streamReplicas });
        return;
      }
      if (existing.storage !== StorageType.File) {
        throw new BusError(
          'NATS_STREAM',
          `stream ${SEG_MAPS_STREAM} exists with ${existing.storage} storage, which cannot be changed to file; delete it (nats stream rm ${SEG_MAPS_STREAM}) and restart: aegis-server republishes current snapshots`,
        );
      }
      const want = streamConfig(this.streamReplicas);
      const drift = STREAM_KEYS.filter((k) => JSON.stringify(existing[k]) !== JSON.stringify(want[k]));
      if (drift.length > 0) {
        await this.jsm.streams.update(SEG_MAPS_STREAM, { ...existing, ...want });
        this.log.warn(`updated JetStream stream ${SEG_MAPS_STREAM}`, { changed: drift });
      }
    } catch (err) {
      if (err instanceof BusError) throw err;
      const hint = this.streamReplicas > 1 ? ` (${this.streamReplicas} replicas need a JetStream cluster of at least ${this.streamReplicas} nodes: AEGIS_NATS_STREAM_REPLICAS)` : '';
      throw new BusError('NATS_STREAM', `cannot create or update stream ${SEG_MAPS_STREAM}: ${describe(err)}${hint}`, { cause: err });
    }
  }

  /**
   * Stores a signed snapshot message (compact JWS) as the last value of
   * aegis.seg.maps.<target>.<serviceId> and resolves once JetStream acked it. `target` is a
   * machine id or ALL_HOSTS; anything else (a hostname) is NATS_BAD_ARGUMENT, since no
   * agent may read that subject and the snapshot would silently reach nobody.
   */
  async publishSegMap(target: string, serviceId: number, jws: string): Promise<{ seq: number }> {
    try {
      return await this.publishSegMapOnce(target, serviceId, jws);
    } catch (err) {
      this.countFailure('seg_map', err);
      throw err;
    }
  }

  private async publishSegMapOnce(target: string, serviceId: number, jws: string): Promise<{ seq: number }> {
    if (target !== ALL_HOSTS && !isMachineId(target)) {
      throw new BusError('NATS_BAD_ARGUMENT', `snapshot target ${JSON.stringify(target)} is neither a machine id nor "${ALL_HOSTS}"`);
    }
    let subject: string;
    try {
      subject = target === ALL_HOSTS ? subjects.segMapAll(serviceId) : subjects.segMap(target, serviceId);
    } catch (err) {
      throw new BusError('NATS_BAD_ARGUMENT', describe(err), { cause: err });
    }
    if (!Number.isSafeInteger(serviceId) || serviceId < 0) throw new BusError('NATS_BAD_ARGUMENT', `service id must be a non-negative integer, got ${serviceId}`);
    if (typeof jws !== 'string' || jws.length === 0) throw new BusError('NATS_BAD_ARGUMENT', 'snapshot message is empty');
    this.requireConnected(`publish ${subject}`);
    try {
      const ack = await this.js.publish(subject, encoder.encode(jws), { timeout: this.publishTimeoutMs });
      if (ack.stream !== SEG_MAPS_STREAM) {
        throw new BusError('NATS_STREAM', `${subject} was stored by stream ${ack.stream}, not ${SEG_MAPS_STREAM}; remove the overlapping stream`);
      }
      return { seq: ack.seq };
    } catch (err) {
      if (err instanceof BusError) throw err;
      const code = natsCode(err);
      if (code === '503') {
        throw new BusError('NATS_STREAM', `no JetStream stream stores ${subject}: call ensureStream() (is JetStream enabled on nats-server?)`, { cause: err });
      }
      if (code === 'TIMEOUT') {
        throw new BusError('NATS_PUBLISH_FAILED', `JetStream did not ack ${subject} within ${this.publishTimeoutMs} ms; the snapshot may or may not be stored, publish again`, {
          cause: err,
        });
      }
      throw new BusError('NATS_PUBLISH_FAILED', `publishing ${subject} failed: ${describe(err)}`, { cause: err });
    }
  }

  /**
   * Publishes a sealed license envelope on aegis.license.<fleet> (not stored: envelopes
   * repeat, and agents that missed one ask with a request, see serveLicense). Resolves
   * once nats-server has it.
   */
  async publishLicense(fleet: string, sealed: string): Promise<void> {
    try {
      await this.publishLicenseOnce(fleet, sealed);
    } catch (err) {
      this.countFailure('license', err);
      throw err;
    }
  }

  private countFailure(kind: PublishKind, err: unknown): void {
    const code: BusErrorCode = err instanceof BusError ? err.code : 'NATS_PUBLISH_FAILED';
    const key = `${kind}/${code}`;
    const entry = this.failedPublishes.get(key) ?? { kind, code, count: 0 };
    entry.count++;
    this.failedPublishes.set(key, entry);
  }

  /** Failed publishes so far (monotonic: a counter's source). */
  publishFailures(): Array<{ kind: PublishKind; code: BusErrorCode; count: number }> {
    return [...this.failedPublishes.values()].map((e) => ({ ...e }));
  }

  private async publishLicenseOnce(fleet: string, sealed: string): Promise<void> {
    let subject: string;
    try {
      subject = subjects.license(fleet);
    } catch (err) {
      throw new BusError('NATS_BAD_ARGUMENT', describe(err), { cause: err });
    }
    if (typeof sealed !== 'string' || sealed.length === 0) throw new BusError('NATS_BAD_ARGUMENT', 'license envelope is empty');
    this.requireConnected(`publish ${subject}`);
    try {
      this.nc.publish(subject, encoder.encode(sealed));
      // A flush waits through a disconnect; the caller should hear about it instead.
      await withTimeout(this.nc.flush(), this.publishTimeoutMs, 'flush');
    } catch (err) {
      throw new BusError('NATS_PUBLISH_FAILED', `publishing ${subject} failed: ${describe(err)}`, { cause: err });
    }
  }

  /**
   * Calls `handler` for each report on aegis.agent.<machine>.status|ack|flows with the machine
   * from the subject (the part nats-server's authorization vouches for) and the parsed
   * JSON. Oversized, non-UTF-8 and non-JSON messages are dropped with a warning. Returns
   * a function that stops the subscriptions.
   */
  onAgentReport(handler: AgentReportHandler): () => void {
    const subs = AGENT_REPORT_KINDS.map((kind) =>
      this.nc.subscribe(subjectWildcards.agentReports(kind), {
        callback: (err, msg) => {
          if (err) {
            this.log.error(`agent ${kind} reports: subscription failed`, { error: describe(err) });
            return;
          }
          this.dispatchReport(kind, msg, handler);
        },
      }),
    );
    this.subs.push(...subs);
    return () => {
      for (const s of subs) s.unsubscribe();
    };
  }

  private dispatchReport(kind: AgentReportKind, msg: Msg, handler: AgentReportHandler): void {
    const machine = agentSubjectMachine(msg.subject);
    if (!isMachineId(machine)) {
      this.log.warn(`dropped agent ${kind} report: the subject names no machine id`, { subject: msg.subject });
      return;
    }
    if (msg.data.length > this.maxReportBytes) {
      this.log.warn(`dropped agent ${kind} report from ${machine}: ${msg.data.length} bytes, over ${this.maxReportBytes}`, { machine, kind, bytes: msg.data.length });
      return;
    }
    let data: unknown;
    try {
      data = JSON.parse(decoder.decode(msg.data));
    } catch (err) {
      this.log.warn(`dropped agent ${kind} report from ${machine}: not JSON`, { machine, kind, error: describe(err) });
      return;
    }
    try {
      const r = handler(kind, machine, data);
      if (r instanceof Promise) r.catch((err: unknown) => this.log.error(`agent ${kind} report handler failed`, { machine, error: describe(err) }));
    } catch (err) {
      this.log.error(`agent ${kind} report handler failed`, { machine, error: describe(err) });
    }
  }

  /**
   * Answers requests on aegis.agent.<machine>.license (payload {"fleet": "..."}) with what
   * the provider gives, so a starting agent need not wait for the next periodic publish.
   * An empty reply means "none"; a refusal is answered with {"error":{"code","message"}}.
   * Returns a function that stops answering.
   */
  serveLicense(provider: LicenseProvider): () => void {
    const sub = this.nc.subscribe(subjectWildcards.agentLicenseRequests, {
      callback: (err, msg) => {
        if (err) {
          this.log.error('license requests: subscription failed', { error: describe(err) });
          return;
        }
        void this.answerLicense(msg, provider);
      },
    });
    this.subs.push(sub);
    return () => sub.unsubscribe();
  }

  private async answerLicense(msg: Msg, provider: LicenseProvider): Promise<void> {
    if (!msg.reply) return;
    // A token that is no machine id is the provider's to refuse (REQUESTER_UNKNOWN), so the
    // requester hears why instead of timing out.
    const machine = agentSubjectMachine(msg.subject);
    if (machine === null) return;
    let fleet: unknown;
    try {
      fleet = msg.data.length <= 1024 ? (JSON.parse(decoder.decode(msg.data)) as { fleet?: unknown }).fleet : undefined;
    } catch {
      fleet = undefined;
    }
    if (!isSubjectToken(fleet)) {
      this.log.warn(`ignored license request from ${machine}: no valid fleet`, { machine });
      return;
    }
    try {
      const sealed = await provider(fleet, machine);
      msg.respond(sealed ? encoder.encode(sealed) : new Uint8Array(0));
    } catch (err) {
      const code = (err as { code?: unknown } | null)?.code;
      if ((LICENSE_REQUEST_REFUSALS as readonly unknown[]).includes(code)) {
        this.log.warn(`refused a license request from ${machine}`, { machine, fleet, code, error: describe(err) });
        const refusal: LicenseRequestRefusal = { error: { code: code as LicenseRequestRefusalCode, message: (err as Error).message } };
        msg.respond(encoder.encode(JSON.stringify(refusal)));
        return;
      }
      this.log.error('license provider failed', { machine, fleet, error: describe(err) });
    }
  }

  /** Drains subscriptions and pending publishes, then closes. */
  async close(): Promise<void> {
    if (this.nc.isClosed()) return;
    if (!this.watch.connected) {
      await this.nc.close();
      return;
    }
    try {
      await this.nc.drain();
    } catch {
      await this.nc.close();
    }
  }
}
