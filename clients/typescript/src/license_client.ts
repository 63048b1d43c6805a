/**
 * The license client a service on a licensed host embeds. The fleet's license arrives
 * sealed (AES-256-GCM under the fleet's key) on NATS subject aegis.license.<fleet>; the
 * client keeps the last good envelope in its license file and verifies it locally (the
 * envelope opens with the fleet key, the license inside verifies against the server's
 * Ed25519 keys), so after the first message validation never needs NATS.
 *
 * start(): the license file first (valid → licensed, NATS optional); then NATS: without a
 * licensed file it waits at most `firstMessageTimeoutMs` (10 s) for an envelope. Anything
 * that fails (no NATS, no message, an envelope that does not open or verify, another fleet,
 * a replay, an expired or revoked license, a file altered on disk) leaves the service on the
 * community edition, with the reason. Each later envelope that checks out replaces the file.
 */
import { EventEmitter } from 'node:events';
import { mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { writeFileAtomicAsync } from './atomic_file.js';
import { LicenseClientError } from './errors.js';
import { parseFleetKey } from './fleet_envelope.js';
import { checkFleetEnvelope, fleetLicenseActive, type FleetLicense } from './fleet_license.js';
import { keysOf, verifyCompactJws, type JwksDocument } from './jws.js';

/** The subject a fleet's envelopes are published on. */
export const fleetLicenseSubject = (fleet: string): string => `aegis.license.${fleet}`;
export const FLEET_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
export const FIRST_MESSAGE_TIMEOUT_MS = 10_000;
export const LICENSE_FILE_MODE = 0o600;

/** What a NATS connection (nats.js NatsConnection) offers the client; the library imports no NATS package. */
export interface NatsLike {
  subscribe(subject: string, opts: { callback: (err: Error | null, msg: { data: Uint8Array }) => void }): { unsubscribe(): void };
  close(): Promise<void>;
}

/**
 * Where the license file is: $LICENSE_KEY_PATH, else ~/.ai-agent-os/license.key, else
 * ./license.key (no home directory).
 */
export function licenseKeyPath(env: NodeJS.ProcessEnv = process.env, home: string = safeHome()): string {
  if (env.LICENSE_KEY_PATH) return resolve(env.LICENSE_KEY_PATH);
  if (home) return join(home, '.ai-agent-os', 'license.key');
  return resolve('license.key');
}

function safeHome(): string {
  try {
    return homedir();
  } catch {
    return '';
  }
}

export interface LicenseClientOptions {
  fleet: string;
  /** The fleet's key: 32 bytes, or their base64 (what `aegis-server fleet-key show <fleet>` prints). */
  fleetKey: Buffer | string;
  /** The server's public keys (e.g. loadJwks(...).jwks). */
  jwks: JwksDocument;
  /** Opens the NATS connection (e.g. () => connect({ servers })); absent or failing: no NATS. */
  connect?: () => Promise<NatsLike>;
  /** Default licenseKeyPath(). */
  path?: string;
  firstMessageTimeoutMs?: number;
  now?: () => number;
}

export interface LicenseState {
  edition: 'enterprise' | 'community';
  /** Why this edition (the last rejection when community). */
  reason: string;
  license: FleetLicense | null;
  features: string[];
  source: 'file' | 'nats' | null;
}

export class LicenseClient extends EventEmitter {
  readonly path: string;
  private readonly key: Buffer;
  private readonly keys;
  private nc: NatsLike | null = null;
  private held: { claims: FleetLicense; seq: number; source: 'file' | 'nats' } | null = null;
  private reason = 'no license yet';
  private firstWaiter: (() => void) | null = null;

  constructor(private readonly o: LicenseClientOptions) {
    super();
    if (!FLEET_NAME_PATTERN.test(o.fleet)) throw new LicenseClientError('BAD_OPTION', `fleet must match ${FLEET_NAME_PATTERN.source}`);
    try {
      this.key = Buffer.isBuffer(o.fleetKey) ? Buffer.from(o.fleetKey) : parseFleetKey(o.fleetKey);
    } catch (e) {
      throw new LicenseClientError('BAD_OPTION', (e as Error).message);
    }
    if (this.key.length !== 32) throw new LicenseClientError('BAD_OPTION', 'fleet key must be 32 bytes');
    this.keys = keysOf(o.jwks);
    if (this.keys.size === 0) throw new LicenseClientError('JWKS_NO_ED25519_KEYS', 'jwks holds no Ed25519 public key');
    this.path = o.path ?? licenseKeyPath();
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  /** The edition now, from the license held (its exp is read at every call). */
  state(): LicenseState {
    const h = this.held;
    const active = h !== null && fleetLicenseActive(h.claims, this.now());
    if (active) return { edition: 'enterprise', reason: `fleet ${this.o.fleet} license ${h.claims.license_id}`, license: h.claims, features: [...h.claims.features], source: h.source };
    const why = h === null ? this.reason : h.claims.status !== 'active' ? `fleet license ${h.claims.status}` : 'fleet license expired';
    return { edition: 'community', reason: why, license: h?.claims ?? null, features: [], source: h?.source ?? null };
  }

  private verify = (jws: string): Record<string, unknown> => {
    const v = verifyCompactJws(jws, this.keys);
    if (!v.ok) throw new Error(`${v.code}: ${v.message}`);
    return v.payload;
  };

  /** File, then NATS (waiting for a first envelope when the file licensed nothing). Never throws for a failure to license. */
  async start(): Promise<LicenseState> {
    await this.check();
    let nc: NatsLike | null = null;
    if (this.o.connect) {
      try {
        nc = await this.o.connect();
      } catch (e) {
        if (!this.held) this.reason = `${this.reason}; NATS unreachable: ${(e as Error).message}`;
      }
    } else if (!this.held) this.reason = `${this.reason}; no NATS configured`;
    if (nc) {
      this.nc = nc;
      const first = new Promise<void>((r) => (this.firstWaiter = r));
      nc.subscribe(fleetLicenseSubject(this.o.fleet), { callback: (err, msg) => void (err ? undefined : this.onMessage(msg.data)) });
      if (this.state().edition !== 'enterprise') {
        const timeout = this.o.firstMessageTimeoutMs ?? FIRST_MESSAGE_TIMEOUT_MS;
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([first.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeout)))]);
        clearTimeout(timer);
        if (timedOut && !this.held) this.reason = `${this.reason}; no fleet license on NATS within ${timeout} ms`;
      }
    }
    return this.state();
  }

  /** Re-reads and re-verifies the license file (an altered or removed file ends the license). */
  async check(): Promise<LicenseState> {
    let data: string;
    try {
      data = readFileSync(this.path, 'utf8');
    } catch {
      this.drop('no license file');
      return this.state();
    }
    const r = await checkFleetEnvelope({ fleet: this.o.fleet, key: this.key, data, verify: this.verify, heldSeq: -1, source: 'cache', now: this.now() });
    if (!r.ok) this.drop(`license file ${this.path} rejected: ${r.reason}`);
    else this.adopt(r.claims, r.seq, 'file');
    return this.state();
  }

  private async onMessage(data: Uint8Array): Promise<void> {
    const r = await checkFleetEnvelope({ fleet: this.o.fleet, key: this.key, data, verify: this.verify, heldSeq: this.held?.seq ?? -1, source: 'network', now: this.now() });
    if (!r.ok) {
      // A held license stays; a rejected envelope never replaces it.
      if (!this.held) this.reason = `envelope rejected: ${r.reason}`;
      this.emit('rejected', r.reason);
    } else {
      mkdirSync(join(this.path, '..'), { recursive: true, mode: 0o700 });
      await writeFileAtomicAsync(this.path, Buffer.from(data), LICENSE_FILE_MODE);
      this.adopt(r.claims, r.seq, 'nats');
    }
    this.firstWaiter?.();
    this.firstWaiter = null;
  }

  private adopt(claims: FleetLicense, seq: number, source: 'file' | 'nats'): void {
    const before = this.state().edition;
    this.held = { claims, seq, source };
    if (before !== this.state().edition || source === 'nats') this.emit('change', this.state());
  }

  private drop(reason: string): void {
    const before = this.state().edition;
    this.held = null;
    this.reason = reason;
    if (before !== 'community') this.emit('change', this.state());
  }

  async stop(): Promise<void> {
    this.firstWaiter?.();
    const nc = this.nc;
    this.nc = null;
    if (nc) await nc.close().catch(() => undefined);
  }
}
