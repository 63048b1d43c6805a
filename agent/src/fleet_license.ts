/**
 * A fleet's license on the host: it arrives sealed (AES-256-GCM, this fleet's key, as
 * `aegis-server fleet-key show <fleet>` prints it) on
 * aegis.license.<fleet>, is saved to $LICENSE_KEY_PATH (else <state>/license.key, 0600)
 * and verified locally; after that, validation never needs NATS. An envelope that does
 * not open, carries a bad signature, or is not newer than the one held (a replay or a
 * rollback) is rejected and logged.
 */
import { EventEmitter } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import {
  AUD_FLEET_LICENSE,
  FLEET_ENVELOPE_MAX_AGE_SECONDS,
  SEG_EXP_LEEWAY_SECONDS,
  openEnvelope,
  type Feature,
  type FleetLicenseClaims,
} from '../../protocol/src/index.js';
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
    const c = this.claims;
    return c !== null && c.status === 'active' && (c.exp === undefined || c.exp * 1000 > now);
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
    let opened: { seq: number; gen: number; plaintext: string };
    try {
      opened = openEnvelope(this.d.key, this.d.fleet, data);
    } catch (e) {
      return reject((e as Error).message);
    }
    if (source !== 'cache' && opened.seq <= this.seq) {
      return reject(`sequence ${opened.seq} is not newer than ${this.seq} (replay or rollback)`);
    }
    let c: Partial<FleetLicenseClaims>;
    try {
      c = (await this.d.jwks.verify(opened.plaintext, { fetch: !opts.offline })) as Partial<FleetLicenseClaims>;
    } catch (e) {
      return reject(`bad signature: ${(e as Error).message}`);
    }
    if (c.aud !== AUD_FLEET_LICENSE || c.fleet !== this.d.fleet || c.seq !== opened.seq) return reject('claims do not match the envelope');
    // The server seals a fresh envelope every few minutes: an old one arriving now is a
    // recording (what a host without a saved envelope would otherwise take). Its own saved
    // envelope, restored at start, may be of any age.
    if (source !== 'cache') {
      const age = Math.floor(Date.now() / 1000) - Number(c.iat);
      if (!Number.isFinite(age) || age > FLEET_ENVELOPE_MAX_AGE_SECONDS + SEG_EXP_LEEWAY_SECONDS) {
        return reject(`signed ${Number.isFinite(age) ? `${age} s ago` : 'at no valid time'}, more than ${FLEET_ENVELOPE_MAX_AGE_SECONDS} s: replay refused`);
      }
    }
    if (c.status !== 'active' && c.status !== 'revoked' && c.status !== 'none') return reject('bad status');
    if (source !== 'cache') await writeFileAtomicAsync(this.d.path, data, 0o600);
    const was = this.active();
    this.claims = c as FleetLicenseClaims;
    this.seq = opened.seq;
    this.lastRejection = null;
    this.armExpiry();
    this.d.log.info('fleet license', { source, fleet: this.d.fleet, status: c.status, tier: c.tier, seq: opened.seq, key_generation: opened.gen, active: this.active() });
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
