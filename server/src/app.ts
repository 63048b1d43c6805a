/**
 * Assembles a server from its configuration: database (migrated), keystore, services and
 * router. Used by the CLI and by tests (which start it on port 0).
 */
import { readFileSync } from 'node:fs';
import { ApiKeys } from './api_keys.js';
import { Activations } from './activations.js';
import { AuditLog } from './audit.js';
import { systemClock, type Clock } from './clock.js';
import { ServerContext } from './context.js';
import { Customers } from './customers.js';
import { openDatabase } from './db/database.js';
import { migrateToLatest } from './db/migrations.js';
import { createHttpServer, listen, type HttpServerHandle } from './http/http_server.js';
import { KeyStore } from './keys/keystore.js';
import { Licenses } from './licenses.js';
import { createLogger, type Logger } from './logger.js';
import { DEFAULT_RATE_LIMITS, RateLimiter, type RateLimits } from './rate_limit.js';
import { buildRouter } from './routes.js';
import { addSegRoutes } from './routes_seg.js';
import { AgentRegistry } from './seg/agents.js';
import { Orchestrator } from './seg/orchestrator.js';
import { startDistribution, type Distribution } from './seg/distribution.js';
import { FleetLicensePublisher } from './seg/fleet_publisher.js';
import { TokenService } from './tokens.js';
import { pruneProofs } from './host_proof.js';
import type { ServerConfig } from './config.js';

export const SERVER_VERSION: string = (
  JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

export interface AppOptions {
  clock?: Clock;
  limits?: Partial<RateLimits>;
  logger?: Logger;
}

export interface App {
  ctx: ServerContext;
  orchestrator: Orchestrator;
  agents: AgentRegistry;
  fleet: FleetLicensePublisher | null;
  distribution: Distribution | null;
  apiKeys: ApiKeys;
  log: Logger;
  http: HttpServerHandle;
  close(): Promise<void>;
}

/** Opens storage, migrates, loads the signing key (refusing an insecure one) and listens. */
export async function startApp(config: ServerConfig, opts: AppOptions = {}): Promise<App> {
  const log = opts.logger ?? createLogger({ level: config.logLevel, format: config.logFormat });
  const clock = opts.clock ?? systemClock;
  const keys = KeyStore.open(config.keysDir);
  keys.signingKey(); // fail fast: no key, or a key others can read
  const { db, dialect, description } = openDatabase(config.databaseUrl);
  try {
    const { applied } = await migrateToLatest(db, dialect);
    if (applied.length > 0) log.info('database migrated', { applied, database: description });
  } catch (err) {
    await db.destroy();
    throw err;
  }
  const tokens = new TokenService(keys);
  const ctx = new ServerContext(db, dialect, keys, tokens, clock, SERVER_VERSION);
  const apiKeys = new ApiKeys(db, clock);
  const audit = new AuditLog(db, clock);
  const orchestrator = new Orchestrator(db, clock, tokens, null, (m, meta) => log.warn(m, meta));
  const agents = new AgentRegistry(db, clock);
  const router = buildRouter({
    customers: new Customers(db, clock),
    licenses: new Licenses(db, clock),
    activations: new Activations(db, dialect, clock, tokens, keys, config.kernelTokenTtlSeconds),
    apiKeys,
    audit,
    limiter: new RateLimiter(),
    limits: { ...DEFAULT_RATE_LIMITS, ...opts.limits },
    ctx,
  });
  addSegRoutes(router, { apiKeys, audit, orchestrator, agents, ctx });
  const http = await listen(createHttpServer(router, log), config.host, config.port);
  let distribution: Distribution | null = null;
  let fleet: FleetLicensePublisher | null = null;
  if (config.natsUrl) {
    const key = config.fleetKey;
    if (key) {
      fleet = new FleetLicensePublisher(db, clock, tokens, key, (f, sealed) => distribution!.bus()!.publishLicense(f, sealed), (m, meta) => log.warn(m, meta));
    }
    distribution = startDistribution(
      { natsUrl: config.natsUrl, user: config.natsUser || undefined, pass: config.natsPassword, republishMs: config.segRepublishSeconds * 1000 },
      { ctx, orchestrator, agents, fleet, log },
    );
  }
  const pruner = setInterval(() => {
    pruneProofs(db, clock).catch((e: unknown) => log.warn('pruning used proofs failed', { error: (e as Error).message }));
  }, 60_000);
  pruner.unref();
  log.info('aegis-server listening', { url: http.url, database: description, signing_kid: keys.activeKid() });
  return {
    ctx,
    orchestrator,
    agents,
    fleet,
    distribution,
    apiKeys,
    log,
    http,
    async close() {
      clearInterval(pruner);
      await distribution?.close();
      await http.close();
      await db.destroy();
    },
  };
}
