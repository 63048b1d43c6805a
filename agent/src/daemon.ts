/**
 * aegis-agent's lifecycle. Start-up order is the point: everything local (host key,
 * fingerprint, cached license verified offline, datapath pins, cached snapshots) is
 * restored *before* READY=1; nothing before READY waits on the network.
 */
import { existsSync, readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { normalizeLicenseKey, type Feature, type Tier } from '../../protocol/src/index.js';
import { agentServerUrlsOf, fleetKeyOf, insecureServerUrl, loadConfig, serverUrlsOf, metricsAddress, type AgentConfig, type ConfigSources } from './config.js';
import { FleetLicense } from './fleet_license.js';
import { JwksCache } from './jwks_cache.js';
import type { AgentBus } from './nats/agent_bus.js';
import { SegClient } from './seg_client.js';
import { InventoryReporter } from './inventory/inventory_reporter.js';
import type { AgentMetricsSnapshot } from './agent_metrics.js';
import { LazyAgentMetrics } from './lazy_metrics.js';
import { checkSnapshot, ControlApi, JsonLinesStream, TextReply } from './control_api.js';
import { MetricsListener } from './metrics_listener.js';
import { entryOf, FlowLog, matchesQuery, parseFlowLogQuery } from './flow_log.js';
import { sdNotify } from './datapath/index.js';
import { AgentError } from './errors.js';
import { HWID_CACHE_FILE, hostFingerprint, type HardwareReport } from './hwid.js';
import { detectEnvironment, type EnvironmentReport } from './host_environment.js';
import { loadOrCreateHostKey, type HostIdentity } from './host_identity.js';
import { ClientCertificate } from './client_certificate.js';
import { KernelToken } from './kernel_token.js';
import { decodeUnverified } from './license_verifier.js';
import { LicenseManager, NATS_CREDS_FILE } from './licensing.js';
import { ClockGuard } from './clock_guard.js';
import { createAgentLogger, type Logger } from './logger.js';
import { PolicyManager } from './policy.js';
import { ServerLink } from './server_link.js';
import { StateStore } from './state_store.js';
import { TrustAnchors } from './trust_anchors.js';

export const AGENT_VERSION: string = (
  JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/** Concurrent `GET /v1/flows?follow=1` streams. */
const MAX_FLOW_FOLLOWERS = 16;

/** One aegis-agent: starts, serves the control socket, reloads on SIGHUP, stops on SIGTERM. */
export class AgentDaemon {
  private config: AgentConfig;
  readonly log: Logger;
  private store!: StateStore;
  private identity!: HostIdentity;
  private hw!: HardwareReport & { cached: boolean };
  private env!: EnvironmentReport;
  private link!: ServerLink;
  private license!: LicenseManager;
  private clock!: ClockGuard;
  private certificate!: ClientCertificate;
  private kernelToken!: KernelToken;
  private policy!: PolicyManager;
  private readonly api: ControlApi;
  private readonly fleetKey: Buffer | null;
  private readonly anchors: TrustAnchors;
  private jwks!: JwksCache;
  private fleet: FleetLicense | null = null;
  private seg!: SegClient;
  /** The package inventory reported to the server; null when dpkg_status_path is empty. */
  private inventory: InventoryReporter | null = null;
  private flowLog!: FlowLog;
  private stopFlowLog: (() => void) | null = null;
  private bus: AgentBus | null = null;
  private readonly metrics: LazyAgentMetrics;
  private metricsListener: MetricsListener | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private readonly startedAt = Date.now();
  private stopping: Promise<void> | null = null;

  constructor(
    config: AgentConfig,
    private readonly sources: ConfigSources,
  ) {
    this.config = config;
    this.fleetKey = fleetKeyOf(config); // a bad key is a configuration error, found at start
    this.anchors = new TrustAnchors(config, config.state_dir); // so is an unreadable trusted_jwks_path
    this.log = createAgentLogger(config.log_level, config.log_format);
    this.api = new ControlApi(this.log);
    this.metrics = new LazyAgentMetrics({ version: AGENT_VERSION, read: () => this.metricsSnapshot() });
  }

  /** What a scrape reads (every family's collect callback shares this one read). */
  private async metricsSnapshot(): Promise<AgentMetricsSnapshot> {
    const { services, datapathError } = await this.policy.metricsViews();
    const token = this.license.kernelToken;
    const exp = Number(token ? decodeUnverified(token)?.claims.exp : NaN);
    return {
      services,
      datapathError,
      datapathAvailable: this.policy.datapathAvailable,
      license: { state: this.license.state, licensed: this.editionInfo().edition === 'licensed', kernelTokenExpiry: Number.isFinite(exp) ? exp : null },
      nats: { configured: this.config.nats_url !== '', connected: this.bus?.isConnected() ?? false },
      lastReportAt: this.seg.lastReportAt,
      flowLog: { added: this.flowLog.added, overwritten: this.flowLog.overwritten, reportLinesDropped: this.seg.flowLinesDropped },
    };
  }

  /** Licensed when this host's own license or its fleet's license is valid; features are the union. */
  editionInfo(): { edition: 'licensed' | 'community'; tier: Tier | null; features: Feature[]; reason: string } {
    // In grace the host's own license still licenses its features (until the grace ends).
    const own = this.license.state === 'licensed' || this.license.state === 'grace';
    const fleet = this.fleet?.active() ?? false;
    if (!own && !fleet) {
      const why = this.fleet && this.fleet.claims ? `fleet license ${this.fleet.claims.status}` : this.license.reason;
      return { edition: 'community', tier: null, features: [], reason: why };
    }
    const features = [...new Set<Feature>([...this.license.features, ...(this.fleet?.features() ?? [])])];
    const tier = own ? (this.license.claims?.tier ?? null) : (this.fleet?.claims?.tier ?? null);
    const reason = own ? this.license.reason : `fleet ${this.fleet!.fleet} license ${this.fleet!.claims!.license_id}`;
    return { edition: 'licensed', tier, features, reason };
  }

  private featuresChanged(): void {
    void this.policy.setFeatures(this.editionInfo().features).then(() => this.notifyStatus());
  }

  async start(): Promise<void> {
    const c = this.config;
    this.store = new StateStore(c.state_dir, this.log);
    this.identity = await loadOrCreateHostKey(this.store.path('host_key.pem'), this.log);
    this.hw = await hostFingerprint(process.env.AEGIS_HWID_FACTS, { cachePath: this.store.path(HWID_CACHE_FILE) });
    this.env = detectEnvironment();
    this.log.info('environment', { environment: this.env.environment, signals: this.env.signals });
    this.log.info('hardware fingerprint', { hardware_id: this.hw.hardware_id, ignored_interfaces: this.hw.ignored_interfaces, cached: this.hw.cached });

    this.link = new ServerLink({ serverUrl: serverUrlsOf(c), agentServerUrl: agentServerUrlsOf(c), log: this.log });
    let pinnedCa: string | null = null;
    if (c.ca_cert_path) {
      try {
        pinnedCa = readFileSync(c.ca_cert_path, 'utf8');
      } catch (e) {
        throw new AgentError('CONFIG_INVALID', `ca_cert_path: ${c.ca_cert_path} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { status: 400 });
      }
    }
    const anchors = this.anchors;
    this.jwks = new JwksCache(this.store, this.link, this.log, anchors);
    await this.jwks.open();
    this.certificate = new ClientCertificate({ store: this.store, log: this.log, identity: this.identity, hostname: c.hostname, link: this.link, pinnedCa, jwks: this.jwks });
    if (!this.jwks.pinned) {
      for (const url of serverUrlsOf(c)) {
        const insecure = insecureServerUrl(url);
        if (!insecure) continue;
        this.log.warn(
          `INSECURE: server_url ${url} is plain http:// to ${insecure} and no server key is pinned: anyone on the network path can inject signing keys and push policy. Use https:// and pin the server key (trusted_keys, trusted_jwks_path or aegisctl trust add)`,
          { server_url: url, allow_insecure_http: true },
        );
      }
    } else {
      this.log.info('server keys pinned: keys are adopted only when pinned or signed by a trusted key', { pinned: [...anchors.pinned()] });
    }
    this.kernelToken = new KernelToken({
      tokenPath: c.token_path,
      stateDir: this.store.dir,
      kmodReloadPath: c.kmod_reload_path,
      kmodHwidPath: c.kmod_hwid_path,
      hardwareId: this.hw.hardware_id,
      log: this.log,
    });
    const kmod = this.kernelToken.checkBinding();
    if (kmod.state === 'bound') this.log.info('kernel module bound to this machine', { hardware_id: kmod.hardware_id });
    this.clock = new ClockGuard(this.store, this.log);
    await this.clock.restore();
    this.license = new LicenseManager({
      clock: this.clock,
      store: this.store,
      log: this.log,
      link: this.link,
      identity: this.identity,
      hardwareId: this.hw.hardware_id,
      facts: this.hw.components,
      environment: this.env.environment,
      hostname: c.hostname,
      agentVersion: AGENT_VERSION,
      certificate: this.certificate,
      kernelToken: this.kernelToken,
      jwks: this.jwks,
    });
    await this.license.restore();
    if (this.fleetKey) {
      this.fleet = new FleetLicense({
        fleet: c.fleet,
        key: this.fleetKey,
        path: c.license_key_path || join(c.state_dir, 'license.key'),
        jwks: this.jwks,
        log: this.log,
      });
      await this.fleet.restore();
      this.fleet.on('change', () => this.featuresChanged());
    }

    // Its size is read at start only (a reload keeps the running ring).
    this.flowLog = new FlowLog(c.flow_log_entries);
    this.policy = new PolicyManager(c, this.store, this.log);
    await this.policy.open();
    await this.policy.setFeatures(this.editionInfo().features);
    await this.policy.restore();
    this.license.on('change', () => {
      this.featuresChanged();
      // Activated or deactivated: the bus speaks for a machine id (or none), and a
      // deactivated machine's issued NATS user is revoked; reconnect as what this host is now.
      if (this.bus && this.bus.machine !== this.license.machineId) void this.reconnectNats('machine changed');
    });
    // Issued or renewed credentials (the same file, new content): reconnect with them.
    this.license.on('nats-credentials', () => void this.reconnectNats('new NATS credentials'));
    this.seg = new SegClient({
      host: c.hostname,
      link: this.link,
      policy: this.policy,
      store: this.store,
      jwks: this.jwks,
      license: this.license,
      edition: () => this.editionInfo(),
      clock: () => {
        const c = this.clock.status();
        return { clock_tampered: c.clock_tampered, behind_seconds: c.behind_seconds };
      },
      log: this.log,
      agentVersion: AGENT_VERSION,
      statusIntervalMs: c.status_interval_seconds * 1000,
      fallbackIntervalMs: c.fallback_interval_seconds * 1000,
    });

    this.routes();
    await this.api.listen(c.socket_path, c.socket_group, c.admin_group);
    // Read at start only: a reload keeps the running listener.
    const metricsAt = metricsAddress(c.metrics_listen);
    if (metricsAt) {
      this.metricsListener = await MetricsListener.start(metricsAt, this.metrics, this.log);
      this.log.info('metrics listener', { url: this.metricsListener.url, remote_allowed: c.metrics_allow_remote });
    }

    await this.notify({ ready: true, status: this.statusLine() });
    const usec = Number(process.env.WATCHDOG_USEC);
    if (Number.isFinite(usec) && usec > 0) {
      this.watchdog = setInterval(() => void this.notify({ watchdog: true }), Math.max(500, usec / 2000));
    }
    this.seg.start();
    if (c.dpkg_status_path) {
      this.inventory = new InventoryReporter({
        paths: { dpkgStatus: c.dpkg_status_path, dpkgInfoDir: c.dpkg_info_dir, osRelease: c.os_release_path },
        link: this.link,
        license: this.license,
        log: this.log,
        intervalMs: c.inventory_interval_seconds * 1000,
      });
      this.inventory.start();
      // Activated (or another machine): the next check sends a full inventory for it.
      this.license.on('change', () => void this.inventory?.trigger());
    }
    this.stopFlowLog = this.policy.onFlow((e) => this.flowLog.add(entryOf(e)));
    void this.connectNats();
    this.log.info('aegis-agent ready', {
      version: AGENT_VERSION,
      edition: this.license.state,
      socket: c.socket_path,
      datapath: this.policy.datapathAvailable ? 'available' : `unavailable: ${this.policy.datapathReason}`,
    });
  }

  /** The configured .creds file, else the one issued at activation, else none. */
  private natsCredsFile(): string | null {
    if (this.config.nats_creds_file) return this.config.nats_creds_file;
    const issued = this.store.path(NATS_CREDS_FILE);
    return existsSync(issued) ? issued : null;
  }

  /**
   * Reconnects NATS as what this host is now: its machine id (or none) and its current
   * credentials (issued at activation, renewed on refresh, removed at deactivation). Each
   * call supersedes the ones before it: a connection that completes for an older call is
   * closed instead of used.
   */
  private natsGeneration = 0;
  private async reconnectNats(why: string): Promise<void> {
    if (!this.config.nats_url || this.stopping) return;
    const gen = ++this.natsGeneration;
    this.log.info('reconnecting NATS', { why, machine_id: this.license.machineId });
    const old = this.bus;
    this.bus = null;
    await this.seg.detachBus();
    await old?.close().catch(() => undefined);
    if (gen === this.natsGeneration) await this.connectNats(gen);
  }

  /**
   * After READY, never before: NATS is the delivery path, local state is already in
   * force. A host without a fleet license waits at most 10 s for one, then runs as the
   * community edition (a later envelope still licenses it).
   */
  private async connectNats(gen = this.natsGeneration): Promise<void> {
    const c = this.config;
    const started = Date.now();
    const waitFleet = this.fleet !== null && this.fleet.claims === null;
    let fleetTimer: NodeJS.Timeout | null = null;
    if (waitFleet) {
      fleetTimer = setTimeout(() => {
        if (!this.fleet?.claims) this.log.warn('no fleet license within 10 s; running as the community edition until one arrives', { fleet: c.fleet });
      }, 10_000);
      fleetTimer.unref();
    }
    if (!c.nats_url) {
      void this.seg.pollFallback();
      return;
    }
    try {
      const credsFile = this.natsCredsFile();
      // Loaded only when NATS is configured (the client is a tenth of the agent's start).
      const { AgentBus } = await import('./nats/agent_bus.js');
      const bus = await AgentBus.connect({
        url: c.nats_url.split(','),
        ...(credsFile ? { credsFile } : c.nats_user ? { user: c.nats_user, pass: c.nats_password } : {}),
        ...(c.nats_tls_ca ? { tls: { caFile: c.nats_tls_ca } } : {}),
        machine: this.license.machineId,
        log: this.log,
        waitOnFirstConnect: true,
      });
      if (this.stopping || gen !== this.natsGeneration) {
        await bus.close();
        return;
      }
      this.bus = bus;
      if (this.fleet) {
        const fleet = this.fleet;
        bus.watchLicense(c.fleet, (data) => void fleet.accept(data, 'nats'));
        if (!fleet.claims) {
          const left = Math.max(0, 10_000 - (Date.now() - started));
          const env = left > 0 ? await bus.waitForLicense(c.fleet, left) : null;
          if (env) await fleet.accept(env, 'nats');
        }
      }
      // Superseded while waiting for the fleet license (activated, new credentials): the
      // newer connection attaches itself.
      if (gen !== this.natsGeneration) return;
      await this.seg.attachBus(bus);
      this.log.info('connected to NATS', { url: c.nats_url });
    } catch (e) {
      // An attempt superseded by a reconnect (activation, new credentials) may still end in
      // an error; the newer attempt decides whether NATS is there.
      if (gen !== this.natsGeneration) this.log.info('an earlier NATS connection attempt ended; a newer one replaced it', { error: (e as Error).message });
      else this.log.error('NATS unavailable; using the HTTP fallback', { error: (e as Error).message });
    } finally {
      if (fleetTimer && this.fleet?.claims) clearTimeout(fleetTimer);
    }
  }

  private statusLine(): string {
    const dp = this.policy.datapathAvailable ? 'datapath ok' : `datapath unavailable: ${this.policy.datapathReason}`;
    const e = this.editionInfo();
    return `${e.edition === 'licensed' ? `licensed (${e.tier})` : 'community edition'}; ${dp}`.replace(/\n/g, ' ');
  }

  private async notify(state: Parameters<typeof sdNotify>[0]): Promise<void> {
    try {
      await sdNotify(state);
    } catch (e) {
      this.log.warn('sd_notify failed', { error: (e as Error).message });
    }
  }

  private notifyStatus(): Promise<void> {
    return this.notify({ status: this.statusLine() });
  }

  status() {
    const lic = this.license;
    const e = this.editionInfo();
    const mtls = this.link.mtlsStatus();
    return {
      version: AGENT_VERSION,
      hostname: this.config.hostname || osHostname(),
      edition: e.edition,
      edition_reason: e.reason,
      license_state: lic.state,
      grace_ends_at: lic.graceEndsAt?.toISOString() ?? null,
      last_heartbeat_at: lic.lastHeartbeatAt,
      machine_id: lic.machineId,
      tier: e.tier,
      features: e.features,
      fleet_license: this.fleet
        ? { fleet: this.fleet.fleet, status: this.fleet.claims?.status ?? null, active: this.fleet.active(), seq: this.fleet.seq, last_rejection: this.fleet.lastRejection }
        : null,
      nats: { url: this.config.nats_url || null, connected: this.bus?.isConnected() ?? false },
      mtls: mtls ? { url: mtls.url, urls: mtls.urls, certificate: this.certificate.current, last_ok_at: mtls.last_ok_at, last_error: mtls.last_error } : null,
      snapshot_source: this.seg.lastSource,
      flow_reports: { lines_dropped: this.seg.flowLinesDropped },
      inventory: this.inventory?.status ?? { enabled: false },
      datapath: { available: this.policy.datapathAvailable, reason: this.policy.datapathAvailable ? null : `datapath unavailable: ${this.policy.datapathReason}` },
      token_path: this.kernelToken.writtenTo ?? this.config.token_path,
      token_fallback: this.kernelToken.fallback,
      kmod: { status: this.kernelToken.kmodStatus(), ...this.kernelToken.binding() },
      services: this.policy.serviceViews(),
      clock: this.clock.status(),
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
    };
  }

  private routes(): void {
    const lic = () => this.license;
    this.api
      .on('GET', '/v1/status', async () => this.status())
      .on('GET', '/metrics', async () => {
        const body = await this.metrics.scrape(); // loads the registry on the first scrape
        return new TextReply(this.metrics.contentType, body);
      })
      .on('GET', '/v1/license', async () => ({
        state: lic().state,
        machine_id: lic().machineId,
        license: lic().claims,
        license_expires_at: typeof lic().claims?.exp === 'number' ? new Date(lic().claims!.exp! * 1000).toISOString() : null,
        kernel_token_expires_at: lic().kernelTokenExpiresAt,
        last_refresh_at: lic().lastRefreshAt,
        next_refresh_at: lic().nextRefreshAt?.toISOString() ?? null,
        last_error: lic().lastError,
        retrying: lic().retrying,
        reason: lic().reason,
      }))
      .on('GET', '/v1/hwid', async () => ({ ...this.hw, environment: this.env.environment, environment_signals: this.env.signals }))
      .on('GET', '/v1/services', async () => ({ services: this.policy.serviceViews() }))
      .on('GET', '/v1/snapshots', async () => ({ services: await this.policy.snapshotViews() }))
      .on('GET', '/v1/flows', async (_b, _p, { query }) => {
        const q = parseFlowLogQuery(query, this.flowLog.capacity);
        const entries = this.flowLog.recent(q);
        if (!q.follow) return { entries, capacity: this.flowLog.capacity, overwritten: this.flowLog.overwritten, datapath: this.policy.datapathAvailable };
        if (this.flowLog.followerCount >= MAX_FLOW_FOLLOWERS) {
          throw new AgentError('TOO_MANY_FOLLOWERS', `${MAX_FLOW_FOLLOWERS} clients already follow the flow log`, { status: 429 });
        }
        // Follow: the recent entries first, then every new one as it arrives.
        return new JsonLinesStream((write) => {
          for (const e of entries) write(e);
          return this.flowLog.follow((e) => {
            if (matchesQuery(e, q)) write(e);
          });
        });
      })
      .on('PUT', '/v1/snapshots/:id', async (body, p) => {
        const snapshot = checkSnapshot(body);
        if (String(snapshot.service_id) !== p.id) throw new AgentError('BAD_REQUEST', `body is for service ${snapshot.service_id}, not ${p.id}`, { status: 400 });
        const rec = await this.policy.accept(snapshot, { stage: 'enforce', source: 'local' });
        return { service_id: snapshot.service_id, revision: rec.revision, stage: rec.stage, mode: this.policy.modeOf(rec) };
      })
      .on('DELETE', '/v1/snapshots/:id', async (_b, p) => ({ withdrawn: await this.policy.withdraw(Number(p.id)) }))
      .on('GET', '/v1/token', async () => {
        const token = lic().kernelToken;
        const decoded = token ? decodeUnverified(token) : null;
        const exp = Number(decoded?.claims.exp);
        return {
          path: this.kernelToken.writtenTo ?? this.config.token_path,
          present: this.kernelToken.writtenTo !== null,
          header: decoded?.header ?? null,
          claims: decoded?.claims ?? null,
          expires_at: Number.isFinite(exp) ? new Date(exp * 1000).toISOString() : null,
          seconds_left: Number.isFinite(exp) ? Math.round(exp - Date.now() / 1000) : null,
          kmod_status: this.kernelToken.kmodStatus(),
          kmod_hwid: this.kernelToken.binding(),
        };
      })
      .on('POST', '/v1/activate', async (body) => {
        const key = (body as { license_key?: unknown } | null)?.license_key;
        if (typeof key !== 'string' || normalizeLicenseKey(key) === null) {
          throw new AgentError('BAD_REQUEST', 'license_key must be a license key like AEGIS-XXXXX-XXXXX-XXXXX-XXXXX', { status: 400 });
        }
        const claims = await lic().activate(key);
        return {
          machine_id: lic().machineId,
          tier: claims.tier,
          features: claims.features,
          license_expires_at: typeof claims.exp === 'number' ? new Date(claims.exp * 1000).toISOString() : null,
        };
      })
      .on('POST', '/v1/refresh', async () => {
        if (lic().machineId === null) throw new AgentError('NOT_ACTIVATED', 'this host has no activated license', { status: 409 });
        await lic().refreshNow();
        return { state: lic().state, reason: lic().reason, kernel_token_expires_at: lic().kernelTokenExpiresAt, last_error: lic().lastError };
      })
      .on('POST', '/v1/deactivate', async () => ({ deactivated: true, ...(await lic().deactivate()) }))
      // Offline (air-gapped) activation: the request file, the license file, the release file.
      .on('POST', '/v1/offline/request', async (body) => {
        const key = (body as { license_key?: unknown } | null)?.license_key;
        if (typeof key !== 'string' || normalizeLicenseKey(key) === null) {
          throw new AgentError('BAD_REQUEST', 'license_key must be a license key like AEGIS-XXXXX-XXXXX-XXXXX-XXXXX', { status: 400 });
        }
        return lic().offlineRequest(key);
      })
      .on('POST', '/v1/offline/install', async (body) => {
        const claims = await lic().installOffline(body);
        return {
          machine_id: lic().machineId,
          tier: claims.tier,
          features: claims.features,
          license_expires_at: typeof claims.exp === 'number' ? new Date(claims.exp * 1000).toISOString() : null,
        };
      })
      .on('POST', '/v1/offline/release', async () => lic().offlineRelease())
      .on('POST', '/v1/reload', async () => {
        await this.reload();
        return { reloaded: true };
      });
  }

  /** SIGHUP: re-read configuration; on a bad file keep running with the old one. */
  async reload(): Promise<void> {
    await this.notify({ reloading: true });
    try {
      const { config } = loadConfig(this.sources);
      this.config = config;
      this.log.level = config.log_level;
      this.api.configureAccess({ admin_group: config.admin_group });
      await this.policy.reconfigure(config);
      await this.seg.servicesChanged();
      this.log.info('configuration reloaded');
    } catch (e) {
      this.log.error('reload refused; keeping the running configuration', { error: (e as Error).message });
      throw e instanceof AgentError ? e : new AgentError('CONFIG_INVALID', (e as Error).message, { status: 400 });
    } finally {
      await this.notify({ ready: true, status: this.statusLine() });
    }
  }

  /** SIGTERM: stop serving, leave enforcement pinned in the kernel, exit. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info('stopping; enforcement stays pinned in the kernel');
      await this.notify({ stopping: true });
      if (this.watchdog) clearInterval(this.watchdog);
      this.license?.stop();
      this.clock?.stop();
      this.fleet?.stop();
      this.stopFlowLog?.();
      await this.seg?.stop();
      await this.inventory?.stop();
      await this.api.close();
      await this.metricsListener?.close();
      await this.policy?.close();
    })();
    return this.stopping;
  }
}
