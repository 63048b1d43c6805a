/**
 * Assembles a server from its configuration: database (migrated), keystore, services and
 * router. Used by the CLI and by tests (which start it on port 0).
 */
import { readFileSync, statSync } from 'node:fs';
import { AegisError, SEG_MESSAGE_MIN_LIFETIME_SECONDS } from '../../protocol/src/index.js';
import { ApiKeys } from './api_keys.js';
import { AuditLog } from './audit.js';
import { systemClock, type Clock } from './clock.js';
import { ServerContext } from './context.js';
import { Customers } from './customers.js';
import { openDatabase } from './db/database.js';
import { migrateToLatest } from './db/migrations.js';
import { createHttpServer, createHttpsMainServer, createMtlsServer, listen, type CorsPolicy, type HttpServerHandle } from './http/http_server.js';
import { Router } from './http/router.js';
import { AgentTokens } from './agent_tokens.js';
import { addAgentRoutes } from './routes_agent.js';
import { CertificateAuthority } from './pki/authority.js';
import { CertificateIssuer } from './pki/issuer.js';
import { MachineCertificates } from './pki/machine_certs.js';
import { KeyStore } from './keys/keystore.js';
import type { Keyring } from './keys/keyring.js';
import { DbKeyring, loadKek } from './keys/db_keyring.js';
import { Licenses } from './licenses.js';
import { MachineLifecycle } from './machine_lifecycle.js';
import { createLogger, type Logger } from './logger.js';
import { RateLimiter, SharedRateLimiter } from './rate_limit.js';
import { Lease } from './lease.js';
import { buildRouter } from './routes.js';
import { addSegRoutes } from './routes_seg.js';
import { TargetResolver } from './rollout/targets.js';
import { Tenancy } from './tenancy.js';
import { addJwksRoutes, JWKS_DOC } from './routes_jwks.js';
import { addDocsRoutes } from './routes_docs.js';
import { addWebhookRoutes } from './routes_webhooks.js';
import { addAgentInventoryRoute, addIntelRoutes } from './routes_intel.js';
import { addRuleRoutes } from './routes_rules.js';
import { Correlator, loadRuleDir } from './correlation/correlator.js';
import { Decisions } from './decisions/decisions.js';
import { addDecisionRoutes } from './routes_decisions.js';
import { IntelStore } from './intel/intel_store.js';
import { FeedRefresher } from './intel/feed_import.js';
import { addOfflineRoutes } from './routes_offline.js';
import { addConsoleRoutes } from './routes_console.js';
import { ConsoleSessions } from './console/sessions.js';
import { LiveHub, topicsOfAudit } from './console/live.js';
import { Webhooks } from './webhooks/webhooks.js';
import { AgentRegistry } from './rollout/agents.js';
import { FlowLog } from './rollout/flow_log.js';
import { EventStore } from './events/store.js';
import { FileIntel } from './events/intel_store.js';
import { addEventRoutes } from './events/routes.js';
import { Yara } from './events/yara.js';
import { Orchestrator } from './rollout/orchestrator.js';
import { startDistribution, type Distribution } from './rollout/distribution.js';
import { FleetLicensePublisher } from './rollout/fleet_publisher.js';
import { FleetKeys } from './rollout/fleet_keys.js';
import { NatsAuthority } from './nats/credentials.js';
import { join } from 'node:path';
import { TokenService } from './tokens.js';
import { pruneProofs } from './host_proof.js';
import type { ServerConfig } from './config.js';
import { Health } from './health.js';
import { ServerMetrics } from './metrics.js';
import { addHealthRoutes, addMetricsRoute, addOpenMetricsRoute } from './routes_observability.js';

import { SERVER_VERSION } from './version.js';

export interface AppOptions {
  clock?: Clock;
  /** Refused requests audited per (event, client IP) and minute (DEFAULT_AUDIT_REFUSALS_PER_MINUTE). */
  auditRefusalsPerMinute?: number;
  logger?: Logger;
}

export interface App {
  ctx: ServerContext;
  orchestrator: Orchestrator;
  agents: AgentRegistry;
  /** Every accepted flow report line, pruned by age and row count. */
  flowLog: FlowLog;
  /** What hosts reported (threats, file verdicts, telemetry), pruned by age and row count. */
  events: EventStore;
  fleet: FleetLicensePublisher | null;
  distribution: Distribution | null;
  apiKeys: ApiKeys;
  log: Logger;
  http: HttpServerHandle;
  /** The main listener's routes (what /openapi.json documents). */
  router: Router;
  /** The mTLS agent listener (ENABLE_MTLS), or null. */
  agentHttp: HttpServerHandle | null;
  certs: MachineCertificates;
  issuer: CertificateIssuer | null;
  /** Per-agent NATS credentials (operator mode), or null. */
  nats: NatsAuthority | null;
  /** Activation, refresh and every end of a seat, with what hangs off the machine. */
  lifecycle: MachineLifecycle;
  /** Readiness (/readyz, and the metrics' database and signing-key gauges). */
  health: Health;
  metrics: ServerMetrics;
  /** The unauthenticated metrics listener (AEGIS_METRICS_LISTEN), or null. */
  metricsHttp: HttpServerHandle | null;
  /** Webhook endpoints, the delivery outbox and its dispatcher. */
  webhooks: Webhooks;
  /** Advisories, inventories and findings; and the periodic feed refresh (AEGIS_INTEL_FEEDS). */
  intel: IntelStore;
  intelRefresher: FeedRefresher;
  /** Correlation rules (AEGIS_RULES_DIR and the API) and the periodic pass that raises alerts. */
  correlator: Correlator;
  /** Decisions of rules with an action, and the periodic pass of their guard rails. */
  decisions: Decisions;
  /** The console's live-update streams (GET /console/api/events). */
  live: LiveHub;
  /** The singleton lease (lease.ts): held from the start on SQLite. */
  lease: Lease;
  close(): Promise<void>;
}

/** Opens storage, migrates, loads the signing key (refusing an insecure one) and listens. */
export async function startApp(config: ServerConfig, opts: AppOptions = {}): Promise<App> {
  const log = opts.logger ?? createLogger({ level: config.logLevel, format: config.logFormat });
  const clock = opts.clock ?? systemClock;
  // AEGIS_KEK_FILE or AEGIS_PKCS11_*: the database keyring every replica shares; else the key directory.
  const kek = config.kekFile ? loadKek(config.kekFile) : null;
  const shared = kek !== null || config.pkcs11 !== null;
  let keys: Keyring = shared ? (null as unknown as Keyring) : KeyStore.open(config.keysDir);
  if (!shared) keys.signingKey(); // fail fast: no key, or a key others can read
  // Before the database: a certificate that cannot serve is a configuration error, found at once.
  const mainTls = config.tls ? readTlsFiles(config.tls) : null;
  const { db, dialect, description } = openDatabase(config.databaseUrl);
  try {
    const { applied } = await migrateToLatest(db, dialect);
    if (applied.length > 0) log.info('database migrated', { applied, database: description });
    if (shared) {
      const ringOpts = { pollMs: config.keyringPollMs, onError: (err: unknown) => log.warn('keyring refresh failed; the keys loaded before stay in use', { error: String(err) }) };
      // The PKCS#11 binding is loaded only when configured (a native module the default never needs).
      const ring = kek ? await DbKeyring.open(db, kek, ringOpts) : await (await import('./keys/pkcs11_keyring.js')).openPkcs11Keyring(db, config.pkcs11!, ringOpts);
      // First start (of any replica): one signing key; replicas starting at once agree on it.
      if (ring.activeKid() === null) log.info('generated the first signing key in the database keyring', { kid: (await ring.rotate(undefined, true)).kid });
      keys = ring;
    }
  } catch (err) {
    await db.destroy();
    throw err;
  }
  const tokens = new TokenService(keys);
  const ctx = new ServerContext(db, dialect, keys, tokens, clock, SERVER_VERSION);
  const apiKeys = new ApiKeys(db, clock);
  // The operator console's sessions stand for the key they signed in with (http/auth.ts).
  const consoleSessions = new ConsoleSessions(apiKeys, clock, config.console, db);
  // Singleton work (republishing, the fleet publisher, pruning, culling, feeds, the
  // correlator) runs only while this replica holds the lease; the first try is awaited
  // so a lone replica starts its work at once.
  // On its own connection: requests waiting for the pool (a storm of activations) must not
  // delay a renewal past the lease, nor a survivor's takeover.
  const leaseDb = dialect === 'postgres' ? openDatabase(config.databaseUrl, { poolSize: 1 }).db : db;
  const lease = new Lease(leaseDb, dialect, {
    seconds: config.leaseSeconds,
    onChange: (held, epoch) => log.info(held ? 'singleton lease taken' : 'singleton lease lost', { epoch }),
    onError: (m, meta) => log.warn(m, meta),
  });
  await lease.tryAcquire().catch((e: unknown) => log.warn('taking the singleton lease failed', { error: (e as Error).message }));
  lease.start();
  const leader = () => lease.held();
  apiKeys.sessions = consoleSessions;
  // The console's live streams: they end with their session, recheck it at each heartbeat.
  const live = new LiveHub(config.console.live, (k) => consoleSessions.stillValid(k));
  consoleSessions.onEnd = (k) => live.endSession(k);
  const audit = new AuditLog(db, clock, opts.auditRefusalsPerMinute);
  // Every audited event that is a webhook event is queued in the statement that audits it.
  const webhooks = new Webhooks(db, clock, keys, config.webhooks, log);
  audit.listener = async (e, handle) => {
    await webhooks.enqueue(e, handle);
    live.publish(topicsOfAudit(e.event_type), e.customer_id ?? null);
  };
  // A message must outlive a few republications, so a host that misses one or two still
  // takes the next; and no longer, so a recorded one soon stops being worth replaying.
  const messageLifetime = Math.max(SEG_MESSAGE_MIN_LIFETIME_SECONDS, 3 * config.segRepublishSeconds);
  const orchestrator = new Orchestrator(db, clock, tokens, null, (m, meta) => log.warn(m, meta), messageLifetime);
  const flowLog = new FlowLog(db, clock, { days: config.flowRetentionDays, maxRows: config.flowMaxRows });
  const agents = new AgentRegistry(db, clock, flowLog);
  agents.onRecorded = (kind, _machine, customer) => live.publish(kind === 'ack' ? ['agents', 'acks', 'segmentation'] : kind === 'status' ? ['agents'] : ['agents', 'flows'], customer);
  const events = new EventStore(db, clock, { days: config.events.retentionDays, maxRows: config.events.maxRows });
  const fileIntel = new FileIntel(db, clock, new Yara({ yara: config.events.yara, yarac: config.events.yarac, timeoutSeconds: config.events.yaraTimeoutSeconds }));
  const certs = new MachineCertificates(db, clock);
  let issuer: CertificateIssuer | null = null;
  let agentTls: { cert: string; key: string; clientCa: string } | null = null;
  try {
    const ca = await CertificateAuthority.open(config.pkiDir, keys.secrets);
    if (ca) issuer = new CertificateIssuer(ca, certs, clock, config.clientCertTtlSeconds, tokens);
    if (config.mtls) agentTls = readMtlsFiles(config.mtls);
  } catch (err) {
    keys.close(); // a token session, if any
    await db.destroy();
    throw err;
  }
  const agentTokens = new AgentTokens(db, clock, tokens);
  // Operator mode: per-agent NATS credentials, issued at activation, revoked with the machine.
  const natsAuthority =
    config.natsUrl && config.natsOperatorConfig
      ? await NatsAuthority.open({
          dir: join(config.keysDir, 'nats'),
          ...(keys.secrets ? { seeds: keys.secrets } : {}),
          configPath: config.natsOperatorConfig,
          push: { url: config.natsUrl.split(','), ...(config.natsCa ? { tls: { caFile: config.natsCa } } : {}) },
          db,
        })
      : null;
  const customers = new Customers(db, clock);
  const licenses = new Licenses(db, clock, tokens);
  // Distribution starts after the listeners; readiness and metrics ask it when they run.
  let distribution: Distribution | null = null;
  const natsState = () => {
    const bus = distribution?.bus() ?? null;
    return { configured: config.natsUrl !== '', connected: bus?.isConnected() ?? false, publishFailures: bus?.publishFailures() ?? [] };
  };
  const health = new Health({ db, dialect, keys, now: () => clock.now(), nats: natsState });
  const metrics = new ServerMetrics({ db, clock, health, bus: natsState, version: SERVER_VERSION, maxSeries: config.metricsMaxSeries });
  const lifecycle = new MachineLifecycle({
    db,
    dialect,
    clock,
    tokens,
    keys,
    licenses,
    customers,
    certs,
    issuer,
    nats: natsAuthority,
    agentTokens,
    agents,
    audit,
    kernelTtlSeconds: config.kernelTokenTtlSeconds,
    licenseTokenTtlSeconds: config.licenseTokenTtlSeconds,
    natsCredentialsTtlSeconds: config.natsCredentialsTtlSeconds,
    observer: metrics,
  });
  const tenancy = new Tenancy(db);
  let sharedLimiter: SharedRateLimiter | null = null;
  const router = buildRouter({
    tenancy,
    customers,
    licenses,
    lifecycle,
    apiKeys,
    audit,
    limiter:
      config.rateLimitStore === 'database' || (config.rateLimitStore === 'auto' && dialect === 'postgres') ? (sharedLimiter = new SharedRateLimiter(db, dialect)) : new RateLimiter(),
    limits: config.rateLimits,
    ctx,
  });
  addSegRoutes(router, { apiKeys, audit, orchestrator, agents, flowLog, lifecycle, tenancy, targets: new TargetResolver(db, clock) });
  addJwksRoutes(router, { keys: ctx.keys });
  addHealthRoutes(router, { health });
  addMetricsRoute(router, { health, metrics, apiKeys, tenancy });
  addWebhookRoutes(router, { apiKeys, audit, webhooks });
  addConsoleRoutes(router, { apiKeys, audit, sessions: consoleSessions, keys: ctx.keys, clock, live });
  addOfflineRoutes(router, { apiKeys, audit, lifecycle, tenancy, clock });
  const intel = new IntelStore(db, clock);
  addIntelRoutes(router, { apiKeys, tenancy, store: intel });
  addEventRoutes(router, { apiKeys, audit, tenancy, events, intel: fileIntel });
  const correlator = new Correlator(db, clock, config.rulesDir ? await loadRuleDir(config.rulesDir) : []);
  const decisions = new Decisions(db, clock, orchestrator, audit, config.decisions, (m, meta) => log.warn(m, meta));
  correlator.onAlert = async (a, rule) => {
    await audit.record({ event_type: 'alert.raised', actor: 'correlator', customer_id: a.customer_id, data: { alert_id: a.id, rule_id: a.rule_id, machine_id: a.machine_id, level: a.level } });
    // A decision that cannot be made is logged: the alert stands either way.
    await decisions.onAlert(a, rule).catch((e: unknown) => log.warn('making a decision failed', { alert_id: a.id, rule_id: a.rule_id, error: (e as Error).message }));
  };
  addRuleRoutes(router, { apiKeys, audit, tenancy, correlator });
  addDecisionRoutes(router, { apiKeys, tenancy, decisions });
  const agentDeps = { lifecycle, orchestrator, audit, ingest: { events, intel: fileIntel, settings: config.events, clock } };
  // With mTLS on, agent endpoints live only on the mTLS listener (certificate-bound tokens).
  if (!agentTls) {
    addAgentRoutes(router, { ...agentDeps, requireMtls: false });
    addAgentInventoryRoute(router, { lifecycle, store: intel, audit, requireMtls: false });
  }
  // Last: the document lists what this listener serves.
  addDocsRoutes(router, { version: SERVER_VERSION });
  const cors: CorsPolicy = { origins: new Set(config.corsOrigins) };
  let http: HttpServerHandle;
  try {
    const server = mainTls
      ? createHttpsMainServer(router, log, mainTls, config.http, clock, metrics.observeRequest, cors)
      : createHttpServer(router, log, config.http, clock, metrics.observeRequest, 'main', cors);
    http = await listen(server, config.host, config.port);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  let metricsHttp: HttpServerHandle | null = null;
  if (config.metricsListen) {
    const metricsRouter = new Router();
    addHealthRoutes(metricsRouter, { health });
    addOpenMetricsRoute(metricsRouter, { health, metrics });
    try {
      metricsHttp = await listen(createHttpServer(metricsRouter, log, config.http, clock, undefined, 'metrics'), config.metricsListen.host, config.metricsListen.port);
    } catch (err) {
      await http.close();
      await db.destroy();
      throw err;
    }
  }
  let agentHttp: HttpServerHandle | null = null;
  if (agentTls && config.mtls) {
    const agentRouter = new Router();
    agentRouter.add('GET', '/.well-known/jwks.json', async () => ({ status: 200, body: ctx.keys.jwks() }), { doc: JWKS_DOC });
    addAgentRoutes(agentRouter, { ...agentDeps, requireMtls: true });
    addAgentInventoryRoute(agentRouter, { lifecycle, store: intel, audit, requireMtls: true });
    try {
      agentHttp = await listen(createMtlsServer(agentRouter, log, agentTls, config.http, clock, metrics.observeRequest), config.mtls.host, config.mtls.port);
    } catch (err) {
      await metricsHttp?.close();
      await http.close();
      await db.destroy();
      throw err;
    }
  }
  let fleet: FleetLicensePublisher | null = null;
  if (config.natsUrl) {
    const key = config.fleetKey;
    if (key) {
      fleet = new FleetLicensePublisher(db, clock, tokens, new FleetKeys(db, key, clock), (f, sealed) => distribution!.bus()!.publishLicense(f, sealed), (m, meta) => log.warn(m, meta));
      fleet.leader = leader;
      fleet.intervalMs = config.fleetPublishSeconds * 1000;
    }
    distribution = startDistribution(
      {
        natsUrl: config.natsUrl,
        user: config.natsUser || undefined,
        pass: config.natsPassword,
        ...(natsAuthority ? { creds: (await natsAuthority.issueServerCredentials()).creds } : {}),
        ...(config.natsCa ? { caFile: config.natsCa } : {}),
        republishMs: config.segRepublishSeconds * 1000,
        leader,
        streamReplicas: config.natsStreamReplicas,
      },
      { ctx, orchestrator, agents, fleet, log },
    );
  }
  const pruner = setInterval(() => {
    // Every replica writes its own suppressed-refusal counts; the rest is shared, pruned by the lease holder.
    audit.flush(clock.now().getTime() - 60_000).catch((e: unknown) => log.warn('writing suppressed-refusal counts failed', { error: (e as Error).message }));
    if (!leader()) return;
    sharedLimiter?.prune().catch((e: unknown) => log.warn('pruning rate-limit buckets failed', { error: (e as Error).message }));
    pruneProofs(db, clock).catch((e: unknown) => log.warn('pruning used proofs failed', { error: (e as Error).message }));
    certs.prune().catch((e: unknown) => log.warn('pruning certificate records failed', { error: (e as Error).message }));
    consoleSessions.sweep().catch((e: unknown) => log.warn('pruning console sessions failed', { error: (e as Error).message }));
    flowLog.prune().catch((e: unknown) => log.warn('pruning the flow log failed', { error: (e as Error).message }));
    events.prune().catch((e: unknown) => log.warn('pruning the events failed', { error: (e as Error).message }));
  }, 60_000);
  pruner.unref();
  // The heartbeat culler: machines past their heartbeat window and grace, lapsed floating
  // leases. Judged at the server's clock (tests move it and call lifecycle.cull()).
  const culler = setInterval(() => {
    if (!leader()) return;
    lifecycle.cull().catch((e: unknown) => log.warn('culling machines failed', { error: (e as Error).message }));
  }, config.cullIntervalSeconds * 1000);
  culler.unref();
  webhooks.start();
  const intelRefresher = new FeedRefresher(intel, config.intelFeeds, config.intelRefreshSeconds, log, leader, config.leaseSeconds);
  intelRefresher.start();
  correlator.start(config.rulesIntervalSeconds, (m, meta) => log.warn(m, meta), leader);
  decisions.start(leader);
  // Another replica's revocations reach this one's account JWT, config fragment and nats-server.
  const natsSync = natsAuthority
    ? setInterval(() => {
        natsAuthority.sync().catch((e: unknown) => log.warn('syncing NATS revocations failed', { error: (e as Error).message }));
      }, Math.max(1000, (config.leaseSeconds * 1000) / 3))
    : null;
  natsSync?.unref();
  log.info('aegis-server listening', {
    url: http.url,
    agent_url: agentHttp?.url ?? null,
    metrics_url: metricsHttp?.url ?? null,
    pki: issuer ? `CA of ${issuer.ca.trustDomain} in ${config.pkiDir}` : 'none (run aegis-server pki init)',
    database: description,
    signing_kid: keys.activeKid(),
  });
  return {
    ctx,
    orchestrator,
    agents,
    flowLog,
    events,
    fleet,
    distribution,
    apiKeys,
    log,
    http,
    router,
    agentHttp,
    certs,
    issuer,
    nats: natsAuthority,
    lifecycle,
    health,
    metrics,
    metricsHttp,
    webhooks,
    intel,
    intelRefresher,
    correlator,
    decisions,
    live,
    lease,
    async close() {
      live.close();
      if (natsSync) clearInterval(natsSync);
      keys.close();
      await correlator.close();
      await decisions.close();
      clearInterval(pruner);
      clearInterval(culler);
      await intelRefresher.close();
      await webhooks.close();
      await distribution?.close();
      await metricsHttp?.close();
      await agentHttp?.close();
      await http.close();
      await audit.flush().catch((e: unknown) => log.warn('writing suppressed-refusal counts failed', { error: (e as Error).message }));
      await lease.close().catch(() => undefined);
      if (leaseDb !== db) await leaseDb.destroy();
      await db.destroy();
    },
  };
}

/** Reads the main listener's certificate and key (the key 0600), naming the file and the setting. */
function readTlsFiles(t: NonNullable<ServerConfig['tls']>): { cert: string; key: string; certPath: string; keyPath: string } {
  const read = (path: string, what: string, setting: string, secret: boolean): string => {
    try {
      if (secret && (statSync(path).mode & 0o077) !== 0) {
        throw new AegisError('INSECURE_KEY_FILE', `the TLS key ${path} must not be readable by group or others (chmod 600 ${path})`);
      }
      return readFileSync(path, 'utf8');
    } catch (e) {
      if (e instanceof AegisError) throw e;
      throw new Error(`HTTPS is enabled but the ${what} ${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); check ${setting}`, { cause: e });
    }
  };
  return {
    cert: read(t.certPath, 'TLS certificate', '--tls-cert / AEGIS_TLS_CERT', false),
    key: read(t.keyPath, 'TLS key', '--tls-key / AEGIS_TLS_KEY', true),
    certPath: t.certPath,
    keyPath: t.keyPath,
  };
}

/** Reads the agent listener's certificate, key and client CA, naming what is missing. */
function readMtlsFiles(m: NonNullable<ServerConfig['mtls']>): { cert: string; key: string; clientCa: string } {
  const read = (path: string, what: string, secret: boolean): string => {
    let text: string;
    try {
      if (secret && (statSync(path).mode & 0o077) !== 0) {
        throw new AegisError('INSECURE_KEY_FILE', `${what} ${path} must not be readable by group or others (chmod 600 ${path})`);
      }
      text = readFileSync(path, 'utf8');
    } catch (e) {
      if (e instanceof AegisError) throw e;
      throw new Error(`mTLS is enabled but the ${what} ${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); run "aegis-server pki init" or set SERVER_CERT_PATH / SERVER_KEY_PATH / CLIENT_CA_CERT_PATH`);
    }
    return text;
  };
  return {
    cert: read(m.serverCertPath, 'server certificate', false),
    key: read(m.serverKeyPath, 'server key', true),
    clientCa: read(m.clientCaCertPath, 'client CA certificate', false),
  };
}
