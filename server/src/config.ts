/** Server configuration: flags override environment, environment overrides defaults. */
import { DEFAULT_DECISION_SETTINGS, type DecisionSettings } from './decisions/decisions.js';
import type { LiveSettings } from './console/live.js';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_KERNEL_TOKEN_TTL_SECONDS, DEFAULT_LICENSE_TOKEN_TTL_SECONDS, parseFleetKey } from '../../protocol/src/index.js';
import { DEFAULT_FLOW_MAX_ROWS, DEFAULT_FLOW_RETENTION_DAYS } from './rollout/flow_log.js';
import { parseRateLimits, type RateLimits } from './rate_limit.js';
import { eventSettingsFrom, type EventSettings } from './events/settings.js';
import { DEFAULT_WEBHOOK_SETTINGS, type WebhookSettings } from './webhooks/webhooks.js';
import type { Pkcs11Settings } from './keys/pkcs11_keyring.js';

export interface ServerConfig {
  host: string;
  port: number;
  databaseUrl: string;
  keysDir: string;
  /**
   * AEGIS_KEK_FILE: with it, signing keys, NATS seeds and the CA key live sealed in the
   * database (the keyring every replica shares); without it, in keysDir.
   */
  kekFile: string | null;
  /**
   * AEGIS_PKCS11_MODULE, AEGIS_PKCS11_TOKEN_LABEL, AEGIS_PKCS11_PIN_FILE (all three): the
   * database keyring with its signing keys in a PKCS#11 token (keys/pkcs11_keyring.ts)
   * and the other secrets sealed under a key in it. Exclusive with AEGIS_KEK_FILE.
   */
  pkcs11: Pkcs11Settings | null;
  /** How often a replica checks the database keyring's generation (AEGIS_KEYRING_POLL_MS). */
  keyringPollMs: number;
  kernelTokenTtlSeconds: number;
  /**
   * Lifetime of machine-bound license tokens (AEGIS_LICENSE_TOKEN_TTL, seconds), perpetual
   * licenses included; never beyond the license's own expiry. It bounds how long a host
   * runs offline on a token, and how long a copied token outlives its seat anywhere that
   * only checks it offline.
   */
  licenseTokenTtlSeconds: number;
  /**
   * Lifetime of the NATS credentials issued to each machine in operator mode
   * (AEGIS_NATS_CREDS_TTL, seconds, default one day); renewed on refresh once past half
   * of it, never beyond the license.
   */
  natsCredentialsTtlSeconds: number;
  logLevel: string;
  logFormat: 'json' | 'text';
  /** NATS for snapshot and license distribution; empty: HTTP fallback only. */
  natsUrl: string;
  /** Replicas of the snapshot stream (AEGIS_NATS_STREAM_REPLICAS, 1-5, default 1; 3 on a 3-node cluster). */
  natsStreamReplicas: number;
  natsUser: string;
  natsPassword: string;
  /**
   * The master fleet key (AEGIS_FLEET_KEY, or AEGIS_FLEET_KEY_FILE, 0600): each fleet's
   * envelope key is derived from it (`aegis-server fleet-key show <fleet>`); it opens no
   * envelope itself and never goes to hosts. null: no license envelopes.
   */
  fleetKey: Buffer | null;
  /**
   * NATS operator mode: the config fragment nats-server includes. When set, the
   * server issues per-agent NATS credentials at activation and revokes them on
   * deactivation; it connects to NATS with its own issued credentials.
   */
  natsOperatorConfig: string;
  /** CA that signed nats-server's certificate (TLS to NATS). */
  natsCa: string;
  /** How often current snapshots are republished (the TTL renewal hosts see). */
  segRepublishSeconds: number;
  /** How often the heartbeat culler runs (AEGIS_CULL_INTERVAL_SECONDS, default 30). */
  cullIntervalSeconds: number;
  /** Scale-out (lease.ts): seconds a replica's singleton lease lasts unrenewed (AEGIS_LEASE_SECONDS, default 15). */
  leaseSeconds: number;
  /** Where rate-limit budgets live (AEGIS_RATE_LIMIT_STORE): memory (one process) or database (every replica); default database on PostgreSQL. */
  rateLimitStore: 'memory' | 'database' | 'auto';
  /**
   * The request budgets (AEGIS_RATE_LIMITS: `off`, or `name=N/unit,...` over the defaults
   * in rate_limit.ts); a null entry is off.
   */
  rateLimits: RateLimits;
  /** How often every fleet's license is republished (AEGIS_FLEET_PUBLISH_SECONDS, default 300). */
  fleetPublishSeconds: number;
  /** The PKI directory (`aegis-server pki init`): CA that issues machine certificates. */
  pkiDir: string;
  /** Lifetime of machine client certificates (AEGIS_CLIENT_CERT_TTL, seconds). */
  clientCertTtlSeconds: number;
  /** The mTLS agent listener; null when off. */
  mtls: MtlsConfig | null;
  /** Timeouts and caps applied to every listener (main and agent). */
  http: HttpLimits;
  /** Flow log rows are kept this many days (AEGIS_FLOW_RETENTION_DAYS) ... */
  flowRetentionDays: number;
  /** ... and at most this many rows, the oldest dropped first (AEGIS_FLOW_MAX_ROWS). */
  flowMaxRows: number;
  /**
   * The metrics listener (AEGIS_METRICS_LISTEN, host:port): /metrics without an API key,
   * /healthz and /readyz. null: off (/metrics is then only on the main listener, with a
   * metrics:read key). A non-loopback address needs AEGIS_METRICS_ALLOW_REMOTE=true.
   */
  metricsListen: { host: string; port: number } | null;
  /** Series kept per per-entity metric family: licenses, agents, services (AEGIS_METRICS_MAX_SERIES). */
  metricsMaxSeries: number;
  /** Webhook delivery: retries, timeouts and which addresses may be reached (AEGIS_WEBHOOK_*). */
  webhooks: WebhookSettings;
  /** Vulnerability feed URLs imported periodically (AEGIS_INTEL_FEEDS, comma-separated; empty: off). */
  intelFeeds: string[];
  /** Seconds between feed refreshes (AEGIS_INTEL_REFRESH_SECONDS). */
  intelRefreshSeconds: number;
  /** Event ingest: retention, file and batch limits, YARA (server/src/events/settings.ts). */
  events: EventSettings;
  /** Correlation rule files loaded at start (AEGIS_RULES_DIR, *.yaml/*.yml/*.json); null: API rules only. */
  rulesDir: string | null;
  /** Seconds between correlation passes (AEGIS_RULES_INTERVAL_SECONDS). */
  rulesIntervalSeconds: number;
  /** Decisions of rules with an action: canary window, fleet share, pass interval (AEGIS_DECISION_*). */
  decisions: DecisionSettings;
  /** The main listener over HTTPS (--tls-cert/--tls-key, AEGIS_TLS_CERT/AEGIS_TLS_KEY); null: plain HTTP. */
  tls: { certPath: string; keyPath: string } | null;
  /** Browser origins allowed to call the main listener (AEGIS_CORS_ORIGINS); empty: no CORS headers at all. */
  corsOrigins: string[];
  /** The operator console at /console/: session lifetime and origins (AEGIS_CONSOLE_*). */
  console: ConsoleSettings;
}

function intelFeedsFrom(env: NodeJS.ProcessEnv): string[] {
  const list = (env.AEGIS_INTEL_FEEDS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  for (const u of list) {
    if (!/^https?:\/\/[^\s]+$/i.test(u)) throw new Error(`AEGIS_INTEL_FEEDS must be comma-separated http(s) URLs, got ${JSON.stringify(u)}`);
  }
  return list;
}

/** The operator console's sessions (see server/src/console/sessions.ts). */
export interface ConsoleSettings {
  /** A session ends this many seconds after sign-in (AEGIS_CONSOLE_SESSION_SECONDS, default 8 h). */
  sessionSeconds: number;
  /**
   * Origins a console write may come from (AEGIS_CONSOLE_ORIGINS, comma-separated, e.g.
   * https://aegis.example.com behind a TLS proxy); empty: the request's own Host, over
   * the scheme it arrived by.
   */
  origins: string[];
  /** Mark the cookie Secure even over plain HTTP (AEGIS_CONSOLE_SECURE_COOKIE, behind a TLS proxy). */
  secureCookie: boolean;
  /** The live-update streams (server/src/console/live.ts). */
  live: LiveSettings;
}

function consoleSettingsFrom(env: NodeJS.ProcessEnv): ConsoleSettings {
  const origins = (env.AEGIS_CONSOLE_ORIGINS ?? '')
    .split(',')
    .map((o) => o.trim())
    .filter(Boolean);
  for (const o of origins) {
    let u: URL;
    try {
      u = new URL(o);
    } catch {
      throw new Error(`AEGIS_CONSOLE_ORIGINS must list origins such as https://aegis.example.com, got ${JSON.stringify(o)}`);
    }
    if ((u.protocol !== 'https:' && u.protocol !== 'http:') || u.origin !== o.replace(/\/$/, '')) {
      throw new Error(`AEGIS_CONSOLE_ORIGINS must list origins (scheme://host[:port], no path), got ${JSON.stringify(o)}`);
    }
  }
  return {
    sessionSeconds: intSetting(env, 'AEGIS_CONSOLE_SESSION_SECONDS', 8 * 3600, 60, 30 * 86400),
    origins: origins.map((o) => new URL(o).origin),
    secureCookie: truthy(env.AEGIS_CONSOLE_SECURE_COOKIE),
    live: {
      perSession: intSetting(env, 'AEGIS_CONSOLE_STREAMS_PER_SESSION', 4, 1, 100),
      total: intSetting(env, 'AEGIS_CONSOLE_STREAMS_MAX', 200, 1, 100_000),
      heartbeatMs: intSetting(env, 'AEGIS_CONSOLE_STREAM_HEARTBEAT_MS', 15_000, 100, 300_000),
      coalesceMs: intSetting(env, 'AEGIS_CONSOLE_STREAM_COALESCE_MS', 250, 0, 10_000),
    },
  };
}

/** Series kept per per-entity metric family unless AEGIS_METRICS_MAX_SERIES says otherwise. */
export const DEFAULT_METRICS_MAX_SERIES = 100;

/** Loopback addresses: what an unauthenticated listener may bind without a second setting. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function metricsListenFrom(env: NodeJS.ProcessEnv): { host: string; port: number } | null {
  const text = env.AEGIS_METRICS_LISTEN;
  if (text === undefined || text.trim() === '') return null;
  let where;
  try {
    where = parseListen(text.trim());
  } catch {
    throw new Error(`AEGIS_METRICS_LISTEN must be host:port (e.g. 127.0.0.1:9464), got ${JSON.stringify(text)}`);
  }
  // It serves without authentication: anything beyond this host must be asked for.
  if (!isLoopbackHost(where.host) && !truthy(env.AEGIS_METRICS_ALLOW_REMOTE)) {
    throw new Error(
      `AEGIS_METRICS_LISTEN ${text} is not a loopback address and the metrics listener has no authentication; bind 127.0.0.1, or set AEGIS_METRICS_ALLOW_REMOTE=true for a private network only Prometheus reaches`,
    );
  }
  return where;
}

/**
 * What one slow or idle client may hold on a listener: how long it may take to send its
 * headers and its whole request, how long an idle keep-alive connection stays, how large
 * its headers may be, and how many connections the listener keeps at once.
 */
export interface HttpLimits {
  /** Headers (and, on the agent listener, the TLS handshake) must arrive within this (AEGIS_HTTP_HEADERS_TIMEOUT_MS). */
  headersTimeoutMs: number;
  /** The whole request, body included, must arrive within this; else 408 and close (AEGIS_HTTP_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this (AEGIS_HTTP_KEEPALIVE_TIMEOUT_MS). */
  keepAliveTimeoutMs: number;
  /** Connections held at once per listener; more are closed on accept (AEGIS_HTTP_MAX_CONNECTIONS). */
  maxConnections: number;
  /** Total size of a request's headers (AEGIS_HTTP_MAX_HEADER_BYTES); larger: 431. */
  maxHeaderBytes: number;
  /** Header lines kept per request; the rest are dropped. */
  maxHeadersCount: number;
}

export const DEFAULT_HTTP_LIMITS: Readonly<HttpLimits> = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  maxConnections: 1024,
  maxHeaderBytes: 16 * 1024,
  maxHeadersCount: 100,
};

function rateLimitStoreFrom(env: NodeJS.ProcessEnv): 'memory' | 'database' | 'auto' {
  const v = (env.AEGIS_RATE_LIMIT_STORE ?? '').trim();
  if (v === '') return 'auto';
  if (v !== 'memory' && v !== 'database') throw new Error(`AEGIS_RATE_LIMIT_STORE must be memory or database, got ${JSON.stringify(v)}`);
  return v;
}

function intSetting(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const text = env[name];
  if (text === undefined || text.trim() === '') return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  return n;
}

function decisionSettingsFrom(env: NodeJS.ProcessEnv): DecisionSettings {
  const d = DEFAULT_DECISION_SETTINGS;
  const shareText = env.AEGIS_DECISION_MAX_FLEET_SHARE;
  let maxFleetShare = d.maxFleetShare;
  if (shareText !== undefined && shareText.trim() !== '') {
    maxFleetShare = Number(shareText);
    if (!/^\d*\.?\d+$/.test(shareText.trim()) || !(maxFleetShare > 0 && maxFleetShare <= 1)) throw new Error(`AEGIS_DECISION_MAX_FLEET_SHARE must be a number above 0 and at most 1, got ${JSON.stringify(shareText)}`);
  }
  return {
    canarySeconds: intSetting(env, 'AEGIS_DECISION_CANARY_SECONDS', d.canarySeconds, 1, 7 * 86400),
    maxFleetShare,
    intervalSeconds: intSetting(env, 'AEGIS_DECISION_INTERVAL_SECONDS', d.intervalSeconds, 1, 3600),
  };
}

function httpLimitsFrom(env: NodeJS.ProcessEnv): HttpLimits {
  const d = DEFAULT_HTTP_LIMITS;
  const limits: HttpLimits = {
    headersTimeoutMs: intSetting(env, 'AEGIS_HTTP_HEADERS_TIMEOUT_MS', d.headersTimeoutMs, 100, 600_000),
    requestTimeoutMs: intSetting(env, 'AEGIS_HTTP_REQUEST_TIMEOUT_MS', d.requestTimeoutMs, 100, 3_600_000),
    keepAliveTimeoutMs: intSetting(env, 'AEGIS_HTTP_KEEPALIVE_TIMEOUT_MS', d.keepAliveTimeoutMs, 100, 600_000),
    maxConnections: intSetting(env, 'AEGIS_HTTP_MAX_CONNECTIONS', d.maxConnections, 1, 1_000_000),
    maxHeaderBytes: intSetting(env, 'AEGIS_HTTP_MAX_HEADER_BYTES', d.maxHeaderBytes, 1024, 1024 * 1024),
    maxHeadersCount: d.maxHeadersCount,
  };
  // node:http refuses a headers timeout longer than the request timeout; say so in our terms.
  if (limits.headersTimeoutMs > limits.requestTimeoutMs) {
    throw new Error(`AEGIS_HTTP_HEADERS_TIMEOUT_MS (${limits.headersTimeoutMs}) must not exceed AEGIS_HTTP_REQUEST_TIMEOUT_MS (${limits.requestTimeoutMs})`);
  }
  return limits;
}

function webhookSettingsFrom(env: NodeJS.ProcessEnv): WebhookSettings {
  const d = DEFAULT_WEBHOOK_SETTINGS;
  const s: WebhookSettings = {
    maxAttempts: intSetting(env, 'AEGIS_WEBHOOK_MAX_ATTEMPTS', d.maxAttempts, 1, 100),
    backoffBaseMs: intSetting(env, 'AEGIS_WEBHOOK_BACKOFF_BASE_MS', d.backoffBaseMs, 1, 86_400_000),
    backoffCapMs: intSetting(env, 'AEGIS_WEBHOOK_BACKOFF_CAP_MS', d.backoffCapMs, 1, 7 * 86_400_000),
    pollMs: intSetting(env, 'AEGIS_WEBHOOK_POLL_MS', d.pollMs, 10, 3_600_000),
    timeoutMs: intSetting(env, 'AEGIS_WEBHOOK_TIMEOUT_MS', d.timeoutMs, 100, 120_000),
    maxResponseBytes: d.maxResponseBytes,
    allowHttp: truthy(env.AEGIS_WEBHOOK_ALLOW_HTTP),
    allowLoopback: truthy(env.AEGIS_WEBHOOK_ALLOW_LOOPBACK),
    allowLinkLocal: truthy(env.AEGIS_WEBHOOK_ALLOW_LINK_LOCAL),
  };
  if (s.backoffCapMs < s.backoffBaseMs) throw new Error(`AEGIS_WEBHOOK_BACKOFF_CAP_MS (${s.backoffCapMs}) must not be below AEGIS_WEBHOOK_BACKOFF_BASE_MS (${s.backoffBaseMs})`);
  return s;
}

export interface MtlsConfig {
  host: string;
  port: number;
  serverCertPath: string;
  serverKeyPath: string;
  clientCaCertPath: string;
}

export interface ConfigFlags {
  listen?: string;
  database?: string;
  keysDir?: string;
  natsUrl?: string;
  pkiDir?: string;
  agentListen?: string;
  sslCert?: string;
  sslKey?: string;
  mtlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

function truthy(v: string | undefined): boolean {
  return v !== undefined && /^(1|true|yes|on)$/i.test(v.trim());
}

function fleetKeyFrom(env: NodeJS.ProcessEnv): Buffer | null {
  let text = env.AEGIS_FLEET_KEY;
  const file = env.AEGIS_FLEET_KEY_FILE;
  if (!text && file) {
    const st = statSync(file);
    if ((st.mode & 0o077) !== 0) throw new Error(`AEGIS_FLEET_KEY_FILE ${file} must not be readable by group or others (chmod 600 ${file})`);
    text = readFileSync(file, 'utf8');
  }
  return text ? parseFleetKey(text) : null;
}

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  if (!m || Number(m[3]) > 65535) throw new Error(`--listen must be host:port (e.g. 127.0.0.1:8000), got ${JSON.stringify(listen)}`);
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

/** --tls-cert/--tls-key (or AEGIS_TLS_CERT/AEGIS_TLS_KEY): both or neither. */
function tlsFrom(flags: ConfigFlags, env: NodeJS.ProcessEnv): ServerConfig['tls'] {
  const certPath = flags.tlsCert ?? (env.AEGIS_TLS_CERT || undefined);
  const keyPath = flags.tlsKey ?? (env.AEGIS_TLS_KEY || undefined);
  if (certPath === undefined && keyPath === undefined) return null;
  if (certPath === undefined || keyPath === undefined) {
    throw new Error(`HTTPS on the main listener needs both a certificate and its key: --tls-cert (AEGIS_TLS_CERT) and --tls-key (AEGIS_TLS_KEY); only the ${certPath === undefined ? 'key' : 'certificate'} was given`);
  }
  return { certPath, keyPath };
}

/**
 * AEGIS_CORS_ORIGINS: origins (scheme://host[:port], comma-separated) whose pages may call
 * the API. Each must be exactly an origin: no path, no wildcard, no "null".
 */
export function parseCorsOrigins(text: string | undefined): string[] {
  if (text === undefined || text.trim() === '') return [];
  const out: string[] = [];
  for (const o of text.split(',').map((x) => x.trim()).filter(Boolean)) {
    if (o === '*') throw new Error('AEGIS_CORS_ORIGINS: "*" is refused: list each origin that may call the API (e.g. https://console.example.com)');
    let origin: string | null = null;
    try {
      const u = new URL(o);
      if (u.protocol === 'https:' || u.protocol === 'http:') origin = u.origin;
    } catch {
      /* reported below */
    }
    if (origin === null || origin !== o) {
      throw new Error(`AEGIS_CORS_ORIGINS: ${JSON.stringify(o)} is not an origin; write scheme://host[:port] with no path or trailing slash, lower case (e.g. https://console.example.com${origin && origin !== o ? `; did you mean ${origin}?` : ''})`);
    }
    if (!out.includes(origin)) out.push(origin);
  }
  return out;
}

/** Default lifetime of a machine's NATS credentials: one day, renewed on refresh. */
export const DEFAULT_NATS_CREDENTIALS_TTL_SECONDS = 86_400;

/** The PKCS#11 keyring's settings: all three or none; never a PIN in the environment. */
function pkcs11From(env: NodeJS.ProcessEnv): Pkcs11Settings | null {
  const names = ['AEGIS_PKCS11_MODULE', 'AEGIS_PKCS11_TOKEN_LABEL', 'AEGIS_PKCS11_PIN_FILE'] as const;
  if (env.AEGIS_PKCS11_PIN) throw new Error('AEGIS_PKCS11_PIN is not read: put the PIN in a 0600 file named by AEGIS_PKCS11_PIN_FILE');
  const set = names.filter((n) => env[n]);
  if (set.length === 0) return null;
  if (set.length < names.length) throw new Error(`the PKCS#11 keyring needs ${names.join(', ')}; missing ${names.filter((n) => !env[n]).join(', ')}`);
  if (env.AEGIS_KEK_FILE) throw new Error('AEGIS_KEK_FILE and AEGIS_PKCS11_MODULE both name a keyring: set one');
  return { module: env.AEGIS_PKCS11_MODULE!, tokenLabel: env.AEGIS_PKCS11_TOKEN_LABEL!, pinFile: env.AEGIS_PKCS11_PIN_FILE! };
}

export function loadConfig(flags: ConfigFlags = {}, env = process.env): ServerConfig {
  const { host, port } = parseListen(flags.listen ?? env.AEGIS_LISTEN ?? '127.0.0.1:8000');
  const ttlText = env.AEGIS_KERNEL_TOKEN_TTL;
  const ttl = ttlText === undefined ? DEFAULT_KERNEL_TOKEN_TTL_SECONDS : Number(ttlText);
  if (!Number.isInteger(ttl) || ttl < 60 || ttl > 7 * 86400) {
    throw new Error(`AEGIS_KERNEL_TOKEN_TTL must be an integer number of seconds from 60 to 604800, got ${JSON.stringify(ttlText)}`);
  }
  const licenseTtlText = env.AEGIS_LICENSE_TOKEN_TTL;
  const licenseTtl = licenseTtlText === undefined ? DEFAULT_LICENSE_TOKEN_TTL_SECONDS : Number(licenseTtlText);
  if (!Number.isInteger(licenseTtl) || licenseTtl < 60 || licenseTtl > 365 * 86400) {
    throw new Error(`AEGIS_LICENSE_TOKEN_TTL must be an integer number of seconds from 60 to 31536000, got ${JSON.stringify(licenseTtlText)}`);
  }
  // Agents refresh at half the kernel token's lifetime: a shorter license token would
  // lapse between two refreshes.
  if (licenseTtl < ttl) {
    throw new Error(`AEGIS_LICENSE_TOKEN_TTL (${licenseTtl} s) must be at least AEGIS_KERNEL_TOKEN_TTL (${ttl} s)`);
  }
  const natsTtlText = env.AEGIS_NATS_CREDS_TTL;
  const natsTtl = natsTtlText === undefined ? DEFAULT_NATS_CREDENTIALS_TTL_SECONDS : Number(natsTtlText);
  // Renewal rides on refresh (at most every half kernel-token lifetime): credentials
  // shorter than a kernel token would lapse between two refreshes.
  if (!Number.isInteger(natsTtl) || natsTtl < ttl || natsTtl > 365 * 86400) {
    throw new Error(`AEGIS_NATS_CREDS_TTL must be an integer number of seconds from AEGIS_KERNEL_TOKEN_TTL (${ttl}) to 31536000, got ${JSON.stringify(natsTtlText)}`);
  }
  const format = (env.LOG_FORMAT ?? 'json').toLowerCase();
  if (format !== 'json' && format !== 'text') throw new Error(`LOG_FORMAT must be json or text, got ${JSON.stringify(format)}`);
  const republish = Number(env.AEGIS_SEG_REPUBLISH_SECONDS ?? 20);
  if (!Number.isInteger(republish) || republish < 1 || republish > 3600) {
    throw new Error(`AEGIS_SEG_REPUBLISH_SECONDS must be 1..3600, got ${JSON.stringify(env.AEGIS_SEG_REPUBLISH_SECONDS)}`);
  }
  const cull = Number(env.AEGIS_CULL_INTERVAL_SECONDS ?? 30);
  if (!Number.isInteger(cull) || cull < 1 || cull > 3600) {
    throw new Error(`AEGIS_CULL_INTERVAL_SECONDS must be 1..3600, got ${JSON.stringify(env.AEGIS_CULL_INTERVAL_SECONDS)}`);
  }
  const keysDir = flags.keysDir ?? env.AEGIS_KEYS_DIR ?? 'keys';
  const pkiDir = flags.pkiDir ?? env.AEGIS_PKI_DIR ?? join(keysDir, 'pki');
  const certTtlText = env.AEGIS_CLIENT_CERT_TTL;
  const certTtl = certTtlText === undefined ? 86_400 : Number(certTtlText);
  if (!Number.isInteger(certTtl) || certTtl < 10 || certTtl > 30 * 86400) {
    throw new Error(`AEGIS_CLIENT_CERT_TTL must be an integer number of seconds from 10 to 2592000, got ${JSON.stringify(certTtlText)}`);
  }
  // ENABLE_MTLS, or any of the certificate flags, turns the agent listener on.
  const mtlsOn = truthy(env.ENABLE_MTLS) || flags.sslCert !== undefined || flags.sslKey !== undefined || flags.mtlsCa !== undefined;
  let mtls: MtlsConfig | null = null;
  if (mtlsOn) {
    const agentListen = flags.agentListen ?? env.AEGIS_AGENT_LISTEN ?? '127.0.0.1:8443';
    let where;
    try {
      where = parseListen(agentListen);
    } catch {
      throw new Error(`--agent-listen must be host:port (e.g. 127.0.0.1:8443), got ${JSON.stringify(agentListen)}`);
    }
    mtls = {
      ...where,
      serverCertPath: flags.sslCert ?? env.SERVER_CERT_PATH ?? join(pkiDir, 'server.crt'),
      serverKeyPath: flags.sslKey ?? env.SERVER_KEY_PATH ?? join(pkiDir, 'server.key'),
      clientCaCertPath: flags.mtlsCa ?? env.CLIENT_CA_CERT_PATH ?? join(pkiDir, 'ca.crt'),
    };
  }
  return {
    host,
    port,
    pkiDir,
    clientCertTtlSeconds: certTtl,
    mtls,
    http: httpLimitsFrom(env),
    webhooks: webhookSettingsFrom(env),
    intelFeeds: intelFeedsFrom(env),
    intelRefreshSeconds: intSetting(env, 'AEGIS_INTEL_REFRESH_SECONDS', 6 * 3600, 1, 7 * 86400),
    events: eventSettingsFrom(env),
    rulesDir: env.AEGIS_RULES_DIR ? env.AEGIS_RULES_DIR : null,
    rulesIntervalSeconds: intSetting(env, 'AEGIS_RULES_INTERVAL_SECONDS', 30, 1, 3600),
    console: consoleSettingsFrom(env),
    decisions: decisionSettingsFrom(env),
    flowRetentionDays: intSetting(env, 'AEGIS_FLOW_RETENTION_DAYS', DEFAULT_FLOW_RETENTION_DAYS, 1, 3650),
    flowMaxRows: intSetting(env, 'AEGIS_FLOW_MAX_ROWS', DEFAULT_FLOW_MAX_ROWS, 1, 1_000_000_000),
    metricsListen: metricsListenFrom(env),
    tls: tlsFrom(flags, env),
    corsOrigins: parseCorsOrigins(env.AEGIS_CORS_ORIGINS),
    metricsMaxSeries: intSetting(env, 'AEGIS_METRICS_MAX_SERIES', DEFAULT_METRICS_MAX_SERIES, 1, 10_000),
    natsUrl: flags.natsUrl ?? env.NATS_URL ?? '',
    natsStreamReplicas: intSetting(env, 'AEGIS_NATS_STREAM_REPLICAS', 1, 1, 5),
    natsUser: env.AEGIS_NATS_USER ?? '',
    natsPassword: env.AEGIS_NATS_PASSWORD ?? '',
    fleetKey: fleetKeyFrom(env),
    natsOperatorConfig: env.AEGIS_NATS_OPERATOR_CONFIG ?? '',
    natsCa: env.AEGIS_NATS_CA ?? '',
    segRepublishSeconds: republish,
    cullIntervalSeconds: cull,
    leaseSeconds: intSetting(env, 'AEGIS_LEASE_SECONDS', 15, 1, 3600),
    rateLimitStore: rateLimitStoreFrom(env),
    rateLimits: parseRateLimits(env.AEGIS_RATE_LIMITS),
    fleetPublishSeconds: intSetting(env, 'AEGIS_FLEET_PUBLISH_SECONDS', 300, 1, 86400),
    databaseUrl: flags.database ?? env.DATABASE_URL ?? 'sqlite:./var/aegis.db',
    keysDir,
    kekFile: env.AEGIS_KEK_FILE ? env.AEGIS_KEK_FILE : null,
    pkcs11: pkcs11From(env),
    keyringPollMs: intSetting(env, 'AEGIS_KEYRING_POLL_MS', 2000, 50, 600_000),
    kernelTokenTtlSeconds: ttl,
    licenseTokenTtlSeconds: licenseTtl,
    natsCredentialsTtlSeconds: natsTtl,
    logLevel: (env.LOG_LEVEL ?? 'info').toLowerCase(),
    logFormat: format,
  };
}
