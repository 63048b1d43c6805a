/**
 * Starts a real aegis-server for a test: its own keys directory, its own database
 * (a SQLite file, or a database on a test PostgreSQL), port 0, an admin key with every
 * scope, and a movable clock.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { startApp, type App } from '../../server/src/app.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { loadConfig } from '../../server/src/config.js';
import { createLogger } from '../../server/src/logger.js';
import { RATE_LIMIT_NAMES } from '../../server/src/rate_limit.js';
import {
  AUD_ACTIVATION_PROOF,
  computeFingerprint,
  fingerprintComponents,
  fingerprintSalt,
  normalizeLicenseKey,
  publicJwkOf,
  type FingerprintComponents,
  type HardwareFacts,
  signHostProof,
  type Ed25519PublicJwk,
} from '../../protocol/src/index.js';

/** A clock tests can move: `offsetMs` is added to real time. */
export class TestClock {
  offsetMs = 0;
  now(): Date {
    return new Date(Date.now() + this.offsetMs);
  }
  advanceDays(d: number): void {
    this.offsetMs += d * 86_400_000;
  }
}

export interface TestServer {
  url: string;
  adminKey: string;
  app: App;
  keysDir: string;
  keys: KeyStore;
  clock: TestClock;
  /** JSON request helper; `key: null` sends no API key. */
  req(method: string, path: string, body?: unknown, opts?: { key?: string | null; headers?: Record<string, string> }): Promise<{ status: number; body: any; headers: Headers }>;
  close(): Promise<void>;
}

/**
 * An AEGIS_RATE_LIMITS value with the entries given (`validate_per_license=5/min,...`)
 * and every other limit off: a test trips only the budget it is about.
 */
export function onlyRateLimits(entries: string): string {
  const given = entries.split(',').map((e) => e.trim()).filter(Boolean);
  const named = new Set(given.map((e) => e.split('=')[0]));
  return [...given, ...Object.values(RATE_LIMIT_NAMES).filter((n) => !named.has(n)).map((n) => `${n}=off`)].join(',');
}

export async function startTestServer(
  opts: {
    databaseUrl?: string;
    /** AEGIS_RATE_LIMITS entries (e.g. `validate_per_license=5/min`); every limit not named is off. Unset: all off. */
    rateLimits?: string;
    kernelTokenTtlSeconds?: number;
    /** AEGIS_LICENSE_TOKEN_TTL; unset: the server's default. */
    licenseTokenTtlSeconds?: number;
    /** Refusals audited per (event, client IP) and minute; unset: generous, so only the audit-bound test trips it. */
    auditRefusalsPerMinute?: number;
    natsUrl?: string;
    natsUser?: string;
    natsPassword?: string;
    fleetKey?: string;
    republishSeconds?: number;
    /** Use this keys directory (e.g. one whose NATS authority rendered nats-server's config). */
    keysDir?: string;
    natsOperatorConfig?: string;
    natsCa?: string;
    /** Extra server environment (e.g. the AEGIS_HTTP_* listener limits). */
    env?: Record<string, string>;
  } = {},
): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-srv-'));
  const keysDir = opts.keysDir ?? join(dir, 'keys');
  const keys = KeyStore.open(keysDir);
  if (keys.activeKid() === null) keys.generate();
  const clock = new TestClock();
  const config = loadConfig(
    { listen: '127.0.0.1:0', database: opts.databaseUrl ?? `sqlite:${join(dir, 'aegis.db')}`, keysDir, natsUrl: opts.natsUrl ?? '' },
    {
      LOG_LEVEL: 'error',
      // The tests' fetch (undici) drops an idle socket after 4 s itself; a server closing
      // it first at 5 s can meet a request sent on it in the same instant on a loaded
      // machine (ECONNRESET). Tests of the keep-alive limit set their own.
      AEGIS_HTTP_KEEPALIVE_TIMEOUT_MS: '65000',
      AEGIS_KERNEL_TOKEN_TTL: String(opts.kernelTokenTtlSeconds ?? 3600),
      ...(opts.licenseTokenTtlSeconds === undefined ? {} : { AEGIS_LICENSE_TOKEN_TTL: String(opts.licenseTokenTtlSeconds) }),
      AEGIS_SEG_REPUBLISH_SECONDS: String(opts.republishSeconds ?? 20),
      ...(opts.fleetKey ? { AEGIS_FLEET_KEY: opts.fleetKey } : {}),
      ...(opts.natsOperatorConfig ? { AEGIS_NATS_OPERATOR_CONFIG: opts.natsOperatorConfig } : {}),
      ...(opts.natsCa ? { AEGIS_NATS_CA: opts.natsCa } : {}),
      ...(opts.natsUser ? { AEGIS_NATS_USER: opts.natsUser, AEGIS_NATS_PASSWORD: opts.natsPassword ?? '' } : {}),
      // Limits off by default, so only the rate-limit tests trip them.
      AEGIS_RATE_LIMITS: onlyRateLimits(opts.rateLimits ?? ''),
      ...opts.env,
    },
  );
  const app = await startApp(config, { clock, auditRefusalsPerMinute: opts.auditRefusalsPerMinute ?? 100000, logger: createLogger({ silent: true }) });
  const admin = await app.apiKeys.create('test-admin', [...SCOPES]);
  const url = app.http.url;
  return {
    url,
    adminKey: admin.key,
    app,
    keysDir,
    keys,
    clock,
    async req(method, path, body, o = {}) {
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      const key = o.key === undefined ? admin.key : o.key;
      if (key !== null) headers['x-api-key'] = key;
      let payload: string | undefined;
      if (body !== undefined) {
        payload = typeof body === 'string' ? body : JSON.stringify(body);
        headers['content-type'] ??= 'application/json';
      }
      const res = await fetch(url + path, { method, headers, body: payload });
      const text = await res.text();
      let parsed: unknown = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = text;
      }
      return { status: res.status, body: parsed as any, headers: res.headers };
    },
    async close() {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A simulated host: its own Ed25519 key and hardware fingerprint. */
export class TestHost {
  readonly privateKey: KeyObject;
  readonly jwk: Ed25519PublicJwk;
  hardwareId: string;
  facts: HardwareFacts;

  /** `facts` gives the host's hardware (a clone passes its original's); unset: unique facts. */
  constructor(readonly name: string, facts?: HardwareFacts) {
    const { privateKey } = generateKeyPairSync('ed25519');
    this.privateKey = privateKey;
    this.jwk = publicJwkOf(privateKey);
    this.facts = facts ?? { machine_id: `${name}-${Math.random()}`, macs: ['52:54:00:00:00:01'] };
    this.hardwareId = computeFingerprint(this.facts).hardware_id;
  }

  /** Its hardware changes (a NIC or disk replaced): new facts, new hardware id, same host key. */
  setFacts(facts: HardwareFacts): void {
    this.facts = facts;
    this.hardwareId = computeFingerprint(facts).hardware_id;
  }

  /** The salted component digests the agent sends for license `licenseKey`. */
  components(licenseKey: string): FingerprintComponents {
    return fingerprintComponents(this.facts, fingerprintSalt(normalizeLicenseKey(licenseKey)!));
  }

  /** An activation that sends the named fingerprint components, as the agent does. */
  fingerprintedActivation(licenseKey: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return this.activation(licenseKey, { components: this.components(licenseKey), ...extra });
  }

  proof(aud: string, overrides: { iat?: number; jti?: string; hwid?: string } = {}): string {
    return signHostProof(this.privateKey, { aud, hwid: overrides.hwid ?? this.hardwareId, iat: overrides.iat, jti: overrides.jti });
  }

  activation(licenseKey: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      license_key: licenseKey,
      hardware_id: this.hardwareId,
      host_public_key: this.jwk,
      hostname: this.name,
      agent_version: '1.2.0',
      proof: this.proof(AUD_ACTIVATION_PROOF),
      ...extra,
    };
  }
}

/** A host activated on a test server: its key, and the machine id it was given. */
export interface ActivatedHost {
  host: TestHost;
  machineId: string;
  licenseKey: string;
  customerId: string;
}

/**
 * Activates a host named `name` (a new customer and license unless `licenseKey` is given):
 * snapshot targets and reports need a machine now that machines, not hostnames, are identity.
 */
export async function activateTestHost(s: TestServer, name: string, opts: { licenseKey?: string; customerId?: string; tier?: string } = {}): Promise<ActivatedHost> {
  let { licenseKey, customerId } = opts;
  if (!licenseKey) {
    customerId ??= (await s.req('POST', '/api/v1/customers', { name: `Customer of ${name}` })).body.id as string;
    const lic = await s.req('POST', '/api/v1/licenses', { customer_id: customerId, tier: opts.tier ?? 'server', license_type: 'perpetual', max_machines: 10 });
    if (lic.status !== 201) throw new Error(`license for ${name}: ${JSON.stringify(lic.body)}`);
    licenseKey = lic.body.license_key as string;
  }
  const host = new TestHost(name);
  const act = await s.req('POST', '/api/v1/activations', host.activation(licenseKey), { key: null });
  if (act.status !== 201 && act.status !== 200) throw new Error(`activating ${name}: ${act.status} ${JSON.stringify(act.body)}`);
  return { host, machineId: act.body.machine_id as string, licenseKey, customerId: customerId ?? '' };
}
