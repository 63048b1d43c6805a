/**
 * A fleet's license on the host: it arrives sealed (AES-256-GCM, this fleet's key, as
 * `aegis-server fleet-key show <fleet>` prints it) on
 * aegis.license.<fleet>, is saved to $LICENSE_KEY_PATH (else <state>/license.key, 0600)
 * and verified locally; after that, validation never needs NATS. An envelope that does
 * not open, carries a bad signature, or is not newer than the one held (a replay or a
 * rollback) is rejected and logged. The envelope check itself is the license client
 * library's (checkFleetEnvelope), the one every licensed service on the host runs too.
 */
import { EventEmitter } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { checkFleetEnvelope, fleetLicenseActive } from '../../clients/typescript/src/index.js';
import type { Feature, FleetLicenseClaims } from '../../protocol/src/index.js';
import { writeFileAtomicAsync } from '../../runtime/src/atomic_file.js';
import type { JwksCache } from './jwks_cache.js';
import type { Logger } from './logger.js';

export interface FleetLicenseDeps {
  fleet: string;
  key: Buffer;
  path: string;
  jwks: JwksCache;
  log: Logger;
}

export class FleetLicense extends EventEmitter {
  claims: FleetLicenseClaims | null = null;
  seq = -1;
  lastRejection: string | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;

  constructor(private readonly d: FleetLicenseDeps) {
    super();
  }

  get fleet(): string {
    return this.d.fleet;
  }

  /** Loads the saved envelope (no network: keys must already be cached). */
  async restore(): Promise<void> {
    if (!existsSync(this.d.path)) return;
    const ok = await this.accept(readFileSync(this.d.path, 'utf8'), 'cache', { offline: true });
    if (!ok) this.d.log.warn('saved fleet license not usable; waiting for a fresh one', { path: this.d.path, reason: this.lastRejection });
  }

  active(now = Date.now()): boolean {
    return fleetLicenseActive(this.claims, now);
  }

  features(): Feature[] {
    return this.active() ? (this.claims?.features ?? []) : [];
  }

  /** Opens, checks and (when newer) adopts an envelope. Returns whether it was adopted. */
  async accept(data: string, source: 'nats' | 'cache', opts: { offline?: boolean } = {}): Promise<boolean> {
    const reject = (reason: string): false => {
      this.lastRejection = reason;
      this.d.log.warn('rejected a fleet license envelope', { source, fleet: this.d.fleet, reason });
      return false;
    };
    const checked = await checkFleetEnvelope({
      fleet: this.d.fleet,
      key: this.d.key,
      data,
      verify: (jws) => this.d.jwks.verify(jws, { fetch: !opts.offline }),
      heldSeq: this.seq,
      source: source === 'cache' ? 'cache' : 'network',
    });
    if (!checked.ok) return reject(checked.reason);
    const { claims: c, seq, gen } = checked;
    if (source !== 'cache') await writeFileAtomicAsync(this.d.path, data, 0o600);
    const was = this.active();
    this.claims = c as FleetLicenseClaims;
    this.seq = seq;
    this.lastRejection = null;
    this.armExpiry();
    this.d.log.info('fleet license', { source, fleet: this.d.fleet, status: c.status, tier: c.tier, seq, key_generation: gen, active: this.active() });
    if (was !== this.active() || source !== 'cache') this.emit('change');
    return true;
  }

  private armExpiry(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    const exp = this.claims?.exp;
    if (typeof exp !== 'number') return;
    this.expiryTimer = setTimeout(() => this.emit('change'), Math.min(Math.max(0, exp * 1000 - Date.now()), 2 ** 31 - 1));
    this.expiryTimer.unref();
  }

  stop(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
  }
}
