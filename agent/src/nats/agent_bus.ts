/**
 * The agent's side of NATS: its machine's and the fleet-wide (_all) snapshot subjects, live and
 * as last values read from the AEGIS_SEG_MAPS stream with Direct Get, the fleet's license
 * envelopes, and its reports. Subjects come from protocol's `subjects`, the connection
 * handling from runtime/src/nats_connection.ts (shared with ServerBus).
 *
 * The agent's subjects are named by its machine id (from activation), never its hostname.
 * A host that has not activated has no identity on NATS: it reads only the fleet-wide
 * snapshots and its fleet's license broadcasts, and reports nothing.
 *
 * NATS is only a delivery path. The bus hands over raw strings and verifies nothing;
 * the caller checks each snapshot's JWS and each envelope before acting on it, and keeps
 * enforcing from its cache while the bus is disconnected.
 */
import { connect, Empty, type Msg, type NatsConnection, type Subscription } from 'nats';
import { ALL_HOSTS, SEG_MAPS_STREAM, isMachineId, licenseRequestRefusalOf, subjects } from '../../../protocol/src/index.js';
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

export type AgentBusErrorCode =
  | 'NATS_UNREACHABLE'
  | 'NATS_AUTH'
  | 'NATS_TLS'
  | 'NATS_DISCONNECTED'
  | 'NATS_CLOSED'
  | 'NATS_PUBLISH_FAILED'
  | 'NATS_BAD_ARGUMENT'
  | 'NATS_NO_MACHINE';

/** Every failure the bus raises on purpose; the nats.js error is kept in `cause`. */
export class AgentBusError extends Error {
  readonly code: AgentBusErrorCode;
  constructor(code: AgentBusErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AgentBusError';
    this.code = code;
  }
}

/** Where and how to connect (authentication as in NatsAuthOptions: creds, credsFile or user/pass). */
export interface AgentBusOptions extends NatsAuthOptions {
  /** One URL or several (a cluster). */
  url: string | string[];
  /** TLS to nats-server; required when nats-server has a tls block. */
  tls?: AgentBusTlsOptions;
  /** This host's machine id (the <machine> token of its subjects); null before activation. */
  machine: string | null;
  log?: BusLogger;
  /** Wait between reconnect attempts, before jitter (default 1000 ms). Attempts never stop. */
  reconnectWaitMs?: number;
  /** How long one Direct Get waits for nats-server (default 5000 ms). */
  requestTimeoutMs?: number;
  /**
   * When true, connect() keeps trying until a first connection succeeds instead of
   * failing with NATS_UNREACHABLE (run it in the background then).
   */
  waitOnFirstConnect?: boolean;
  /**
   * After a reconnect the last values are read at once and once more this much later
   * (default 2000 ms; 0: not again). In a JetStream cluster a Direct Get is answered by
   * the replica nearest the agent, which may be a node still catching up after a restart:
   * the second read gets what it lacked. An older snapshot never replaces a newer one,
   * because the caller keeps the highest signed revision per service.
   */
  rereadAfterReconnectMs?: number;
}

/** TLS to nats-server, as nats.js takes it (pin Aegis's CA in caFile; default: the system's). */
export type AgentBusTlsOptions = NatsTlsOptions;

export type SegMapHandler = (subject: string, data: string) => void;
export type EnvelopeHandler = (data: string) => void;

/** What one round of last-value reads found. */
export interface FetchSummary {
  found: number;
  missing: number;
  failed: number;
}

/** Direct Gets in flight at once when (re)reading last values. */
const FETCH_CONCURRENCY = 16;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * The agent's NATS connection. Subscriptions survive reconnects (nats.js re-sends them)
 * and after each reconnect the last values are read again, so whatever was published
 * while the agent was away arrives.
 */
export class AgentBus {
  private segHandler: SegMapHandler | null = null;
  private serviceIds: number[] = [];
  private readonly subs: Subscription[] = [];
  /**
   * Live deliveries per subject. A last value read while a live message for the same
   * subject arrived is dropped: the live one is at least as new, because nats-server
   * writes a message to subscribers before the stream stores it.
   */
  private readonly liveCount = new Map<string, number>();

  private constructor(
    private readonly nc: NatsConnection,
    private readonly watch: ConnectionWatch,
    readonly machine: string | null,
    private readonly log: BusLogger,
    private readonly requestTimeoutMs: number,
    private readonly rereadMs: number,
  ) {}

  private rereadTimer: NodeJS.Timeout | null = null;

  /**
   * Connects as machine `machine` and from then on reconnects forever. Inboxes are
   * _INBOX.<machine>.*, the only reply subjects an agent user may subscribe to (deploy/nats).
   */
  static async connect(opts: AgentBusOptions): Promise<AgentBus> {
    if (opts.machine !== null && !isMachineId(opts.machine)) {
      throw new AgentBusError('NATS_BAD_ARGUMENT', `machine ${JSON.stringify(opts.machine)} is not a machine id`);
    }
    const log = opts.log ?? NO_LOG;
    let nc: NatsConnection;
    try {
      nc = await connect(
        buildConnectOptions({
          url: opts.url,
          auth: opts,
          ...(opts.tls ? { tls: opts.tls } : {}),
          name: `aegis-agent ${opts.machine ?? '(not activated)'}`,
          ...(opts.machine !== null ? { inboxPrefix: subjects.inboxPrefix(opts.machine) } : {}),
          reconnectWaitMs: opts.reconnectWaitMs,
          waitOnFirstConnect: opts.waitOnFirstConnect ?? false,
        }),
      );
    } catch (err) {
      const refused =
        opts.creds !== undefined || opts.credsFile !== undefined
          ? 'the NATS credentials issued at activation (revoked or expired? re-activate)'
          : `the credentials${opts.user ? ` of user ${opts.user}` : ''} (check nats_user/nats_pass)`;
      const e = classifyConnectError(err, { url: opts.url, refused, tlsAdvice: "check the CA file (tls.caFile) and that nats-server's certificate names this address" });
      throw new AgentBusError(e.code, e.message, { cause: e.cause });
    }
    const watch = new ConnectionWatch(nc, log, 'agent bus');
    log.info('agent bus connected to nats-server', { server: nc.getServer(), machine_id: opts.machine });
    const bus = new AgentBus(nc, watch, opts.machine, log, opts.requestTimeoutMs ?? 5000, opts.rereadAfterReconnectMs ?? 2000);
    // Whatever was published while the agent was away is read again after a reconnect
    // (to another node of a cluster, or the same one restarted), and once more a little
    // later in case that node's replica was still catching up.
    watch.onReconnect = () => {
      if (!bus.segHandler) return;
      void bus.refetch('reconnect');
      if (bus.rereadMs > 0) {
        if (bus.rereadTimer) clearTimeout(bus.rereadTimer);
        bus.rereadTimer = setTimeout(() => {
          bus.rereadTimer = null;
          if (bus.segHandler && bus.isConnected()) void bus.refetch('after reconnect');
        }, bus.rereadMs);
        bus.rereadTimer.unref();
      }
    };
    return bus;
  }

  /** True while connected to a nats-server (false while reconnecting and after close). */
  isConnected(): boolean {
    return this.watch.connected && !this.nc.isClosed();
  }

  /** The nats-server this bus is connected to now (host:port): which node of a cluster. */
  server(): string {
    return this.nc.getServer();
  }

  /**
   * Delivers every message on aegis.seg.maps.<machine>.> and aegis.seg.maps._all.>, and
   * first the last stored value of both subjects of each service in `serviceIds` (read
   * again after every reconnect). The same message can arrive twice (live and stored);
   * an older one never follows a newer one on the same subject within a connection.
   * Resolves when the first round of reads is done; a subject with nothing stored is normal.
   */
  async watchSegMaps(serviceIds: number[], onMessage: SegMapHandler): Promise<void> {
    if (this.segHandler) throw new AgentBusError('NATS_BAD_ARGUMENT', 'watchSegMaps was already called; use setServiceIds to change the services');
    this.checkServiceIds(serviceIds);
    this.segHandler = onMessage;
    this.serviceIds = [...new Set(serviceIds)];
    for (const subject of [...(this.machine !== null ? [subjects.segMapsOf(this.machine)] : []), subjects.segMapsOf(ALL_HOSTS)]) {
      this.subs.push(
        this.nc.subscribe(subject, {
          callback: (err, msg) => {
            if (err) {
              this.log.error(`agent bus: subscription to ${subject} failed`, { error: describe(err) });
              return;
            }
            this.liveCount.set(msg.subject, (this.liveCount.get(msg.subject) ?? 0) + 1);
            this.deliver(msg.subject, msg.data);
          },
        }),
      );
    }
    await this.refetch('start');
  }

  /** Changes the services whose last values are read; reads those not read before. */
  async setServiceIds(serviceIds: number[]): Promise<void> {
    this.checkServiceIds(serviceIds);
    const added = serviceIds.filter((id) => !this.serviceIds.includes(id));
    this.serviceIds = [...new Set(serviceIds)];
    if (this.segHandler && added.length > 0) await this.fetchLast([...new Set(added)]);
  }

  /** Reads all last values again (also done after every reconnect). */
  async refetch(why = 'request'): Promise<FetchSummary> {
    try {
      // The live subscriptions must be in place on the server before reading, so that
      // nothing published in between is missed. A flush waits through a disconnect; the
      // reconnect triggers its own read, so this one gives up after the request timeout.
      await withTimeout(this.nc.flush(), this.requestTimeoutMs, 'flush');
    } catch (err) {
      this.log.warn(`agent bus: cannot read last snapshot values (${why})`, { error: describe(err) });
      return { found: 0, missing: 0, failed: this.serviceIds.length * 2 };
    }
    const summary = await this.fetchLast(this.serviceIds);
    this.log.info(`agent bus: read last snapshot values (${why})`, { ...summary });
    return summary;
  }

  private checkServiceIds(ids: number[]): void {
    for (const id of ids) {
      if (!Number.isSafeInteger(id) || id < 0) throw new AgentBusError('NATS_BAD_ARGUMENT', `service id must be a non-negative integer, got ${String(id)}`);
    }
  }

  private async fetchLast(ids: number[]): Promise<FetchSummary> {
    const machine = this.machine;
    const wanted = ids.flatMap((id) => [...(machine !== null ? [subjects.segMap(machine, id)] : []), subjects.segMapAll(id)]);
    const summary: FetchSummary = { found: 0, missing: 0, failed: 0 };
    let next = 0;
    const worker = async () => {
      while (next < wanted.length) {
        const subject = wanted[next++] as string;
        summary[await this.fetchOne(subject)]++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(FETCH_CONCURRENCY, wanted.length) }, worker));
    return summary;
  }

  private async fetchOne(subject: string): Promise<keyof FetchSummary> {
    const before = this.liveCount.get(subject) ?? 0;
    let msg: Msg;
    try {
      // The subject-in-subject form of Direct Get, so nats-server's permissions can limit
      // an agent to its own subjects.
      msg = await this.nc.request(subjects.segMapDirectGet(subject), Empty, { timeout: this.requestTimeoutMs });
    } catch (err) {
      const code = natsCode(err);
      // With JetStream on but no stream, nats-server does not answer at all (timeout);
      // with JetStream off, no one does (503).
      const why =
        code === '503' || code === 'TIMEOUT'
          ? `no answer from stream ${SEG_MAPS_STREAM}${code === 'TIMEOUT' ? ` within ${this.requestTimeoutMs} ms` : ''} (not created yet? aegis-server creates it at start)`
          : describe(err);
      this.log.warn(`agent bus: last value of ${subject} not read: ${why}`, { subject, code });
      return 'failed';
    }
    const status = msg.headers?.code ?? 0;
    if (status === 404) return 'missing';
    if (status !== 0 && status !== 200) {
      this.log.warn(`agent bus: last value of ${subject} not read: ${status} ${msg.headers?.description ?? ''}`.trimEnd(), { subject, status });
      return 'failed';
    }
    if ((this.liveCount.get(subject) ?? 0) !== before) return 'found';
    this.deliver(subject, msg.data);
    return 'found';
  }

  private deliver(subject: string, data: Uint8Array): void {
    const handler = this.segHandler;
    if (!handler) return;
    try {
      handler(subject, decoder.decode(data));
    } catch (err) {
      this.log.error('agent bus: snapshot handler failed', { subject, error: describe(err) });
    }
  }

  /** Calls `onEnvelope` for every envelope on aegis.license.<fleet>. Returns a function that stops it. */
  watchLicense(fleet: string, onEnvelope: EnvelopeHandler): () => void {
    const subject = this.licenseSubject(fleet);
    const sub = this.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err) {
          this.log.error(`agent bus: subscription to ${subject} failed`, { error: describe(err) });
          return;
        }
        if (msg.data.length === 0) return;
        try {
          onEnvelope(decoder.decode(msg.data));
        } catch (e) {
          this.log.error('agent bus: license handler failed', { error: describe(e) });
        }
      },
    });
    this.subs.push(sub);
    return () => sub.unsubscribe();
  }

  /**
   * The first license envelope for `fleet` within `timeoutMs`, or null. Listens on
   * aegis.license.<fleet> and also asks aegis-server directly (aegis.agent.<machine>.license;
   * aegis-server answers a machine with its own fleet only), so a start need not wait for
   * the next periodic publish. Without a machine, only the broadcast is waited for.
   */
  async waitForLicense(fleet: string, timeoutMs: number): Promise<string | null> {
    const subject = this.licenseSubject(fleet);
    return new Promise<string | null>((resolve) => {
      let done = false;
      const finish = (v: string | null) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        sub.unsubscribe();
        resolve(v);
      };
      const timer = setTimeout(() => finish(null), Math.max(0, timeoutMs));
      const sub = this.nc.subscribe(subject, {
        callback: (err, msg) => {
          if (err) {
            this.log.error(`agent bus: subscription to ${subject} failed`, { error: describe(err) });
            return;
          }
          if (msg.data.length > 0) finish(decoder.decode(msg.data));
        },
      });
      if (!this.isConnected() || this.machine === null) return;
      this.nc
        .request(subjects.agentLicenseRequest(this.machine), encoder.encode(JSON.stringify({ fleet })), { timeout: Math.max(1, timeoutMs) })
        .then((m) => {
          if (m.data.length === 0) return;
          const text = decoder.decode(m.data);
          const refusal = licenseRequestRefusalOf(text);
          // Refused (not this host's fleet, no such fleet, not an active machine): say why
          // and keep listening, the fleet's publish may still come.
          if (refusal) this.log.warn('aegis-server refused the fleet license request', { fleet, code: refusal.code, reason: refusal.message });
          else finish(text);
        })
        .catch(() => {
          /* no server answering (503) or no answer in time: the subscription may still deliver */
        });
    });
  }

  private licenseSubject(fleet: string): string {
    try {
      return subjects.license(fleet);
    } catch (err) {
      throw new AgentBusError('NATS_BAD_ARGUMENT', describe(err), { cause: err });
    }
  }

  /** Publishes a status report (JSON) on aegis.agent.<machine>.status. */
  async publishStatus(report: object): Promise<void> {
    this.publishJson(subjects.agentStatus(this.requireMachine('status')), report);
  }

  /** Publishes an applied-revision ack (JSON) on aegis.agent.<machine>.ack. */
  async publishAck(ack: object): Promise<void> {
    this.publishJson(subjects.agentAck(this.requireMachine('ack')), ack);
  }

  /** Publishes observed flows (JSON) on aegis.agent.<machine>.flows. */
  async publishFlows(flows: object): Promise<void> {
    this.publishJson(subjects.agentFlows(this.requireMachine('flows')), flows);
  }

  /** Reports go under the machine id; a host that has not activated has none to report under. */
  private requireMachine(what: string): string {
    if (this.machine === null) throw new AgentBusError('NATS_NO_MACHINE', `cannot publish ${what}: this host has not activated, so it has no machine id to report under`);
    return this.machine;
  }

  private publishJson(subject: string, obj: object): void {
    if (this.nc.isClosed()) throw new AgentBusError('NATS_CLOSED', `cannot publish ${subject}: the agent bus is closed`);
    if (!this.watch.connected) throw new AgentBusError('NATS_DISCONNECTED', `cannot publish ${subject}: not connected to nats-server (reconnecting)`);
    let payload: Uint8Array;
    try {
      payload = encoder.encode(JSON.stringify(obj));
    } catch (err) {
      throw new AgentBusError('NATS_BAD_ARGUMENT', `report for ${subject} is not serializable: ${describe(err)}`, { cause: err });
    }
    try {
      this.nc.publish(subject, payload);
    } catch (err) {
      throw new AgentBusError('NATS_PUBLISH_FAILED', `publishing ${subject} failed: ${describe(err)}`, { cause: err });
    }
  }

  /** Closes the connection (draining it when connected). */
  async close(): Promise<void> {
    this.segHandler = null;
    if (this.rereadTimer) clearTimeout(this.rereadTimer);
    this.rereadTimer = null;
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
