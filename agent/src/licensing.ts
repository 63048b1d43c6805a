/**
 * The agent's license lifecycle (seed 000's license client, made robust):
 *
 *   restore()   cached license + JWKS verified offline at every start (no network)
 *   activate()  license key → server → tokens cached, kernel token written
 *   refresh     at half the kernel token's lifetime; retryable failures back off with
 *               jitter, final answers (revoked, expired, deactivated...) end the license
 *   community   without a valid license: observe-only policy, no kernel token
 *
 * Every transition emits 'change' so the daemon can re-derive datapath modes.
 */
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { JSONWebKeySet } from 'jose';
import {
  AUD_ACTIVATION_PROOF,
  AUD_DEACTIVATION_PROOF,
  AUD_REFRESH_PROOF,
  normalizeLicenseKey,
  signHostProof,
  type Feature,
  type LicenseClaims,
} from '../../protocol/src/index.js';
import { writeFileAtomic } from './datapath/index.js';
import { AgentError } from './errors.js';
import type { HostIdentity } from './host_identity.js';
import type { Logger } from './logger.js';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffPolicy } from './backoff.js';
import { verifyLicenseOffline, decodeUnverified } from './license_verifier.js';
import { ServerError, type ServerClient, type TokenBundle } from './server_client.js';
import type { StateStore } from './state_store.js';

export const LICENSE_CACHE = 'license.json';

interface LicenseCache extends TokenBundle {
  server_url: string;
  activated_at: string;
  last_refresh_at: string;
}

function checkCache(v: unknown): string | null {
  if (v === null || typeof v !== 'object') return 'not an object';
  const c = v as Record<string, unknown>;
  for (const k of ['machine_id', 'license_token', 'kernel_token', 'kernel_token_expires_at', 'server_url', 'activated_at']) {
    if (typeof c[k] !== 'string') return `missing ${k}`;
  }
  const jwks = c.jwks as { keys?: unknown } | undefined;
  if (!jwks || !Array.isArray(jwks.keys)) return 'missing jwks';
  return null;
}

export type LicenseState = 'licensed' | 'community' | 'activating';

export interface LicenseDeps {
  store: StateStore;
  log: Logger;
  server: ServerClient;
  identity: HostIdentity;
  hardwareId: string;
  hostname: string;
  agentVersion: string;
  tokenPath: string;
  kmodReloadPath: string;
  backoff?: BackoffPolicy;
}

export class LicenseManager extends EventEmitter {
  state: LicenseState = 'community';
  reason = 'no license activated';
  claims: LicenseClaims | null = null;
  private cache: LicenseCache | null = null;
  lastError: { code: string; message: string } | null = null;
  retrying = false;
  nextRefreshAt: Date | null = null;
  tokenWrittenTo: string | null = null;
  tokenFallback = false;
  private timer: NodeJS.Timeout | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private stopped = false;
  /** Serialises activate/refresh/deactivate: one conversation with the server at a time. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly d: LicenseDeps) {
    super();
  }

  get machineId(): string | null {
    return this.cache?.machine_id ?? null;
  }

  get features(): Feature[] {
    return this.state === 'licensed' ? (this.claims?.features ?? []) : [];
  }

  get kernelTokenExpiresAt(): string | null {
    return this.cache?.kernel_token_expires_at ?? null;
  }

  get lastRefreshAt(): string | null {
    return this.cache?.last_refresh_at ?? null;
  }

  get kernelToken(): string | null {
    return this.cache?.kernel_token ?? null;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  private set(state: LicenseState, reason: string): void {
    const changed = state !== this.state || reason !== this.reason;
    this.state = state;
    this.reason = reason;
    if (changed) {
      this.d.log.info(state === 'licensed' ? 'licensed' : `running as community edition: ${reason}`, {
        edition: state,
        tier: this.claims?.tier,
        machine_id: this.machineId,
      });
      this.emit('change');
    }
  }

  /** Offline start: the cached license, if it still verifies, makes the host licensed now. */
  async restore(): Promise<void> {
    const cache = this.d.store.read<LicenseCache>(LICENSE_CACHE, checkCache);
    if (!cache) {
      this.set('community', 'no license activated');
      return;
    }
    const verdict = await verifyLicenseOffline(cache.license_token, cache.jwks as JSONWebKeySet, {
      hardwareId: this.d.hardwareId,
      hostKeyThumbprint: this.d.identity.thumbprint,
      agentVersion: this.d.agentVersion,
    });
    this.cache = cache;
    if (!verdict.ok) {
      this.claims = null;
      this.lastError = { code: verdict.code, message: verdict.message };
      this.d.log.warn('cached license does not verify', { code: verdict.code, message: verdict.message });
      await this.removeKernelToken();
      this.set('community', `cached license invalid: ${verdict.message}`);
      // A license that failed only on time may have been renewed: ask the server.
      if (verdict.code === 'EXPIRED') this.schedule(0);
      return;
    }
    this.claims = verdict.claims;
    this.set('licensed', `${verdict.claims.tier} license ${verdict.claims.license_id}`);
    this.armExpiry();
    // Put the cached kernel token back in place if it is still valid (a reboot may have
    // lost it); a stale one is replaced by the first refresh.
    if (Date.parse(cache.kernel_token_expires_at) > Date.now()) await this.writeKernelToken(cache.kernel_token);
    this.scheduleByHalfLife();
  }

  activate(licenseKey: string): Promise<LicenseClaims> {
    return this.serial(async () => {
      const key = normalizeLicenseKey(licenseKey);
      if (key === null) throw new AgentError('BAD_REQUEST', 'that is not a license key (AEGIS-XXXXX-XXXXX-XXXXX-XXXXX)', { status: 400 });
      const previous = this.state;
      this.state = 'activating';
      try {
        const bundle = await this.d.server.activate({
          license_key: key,
          hardware_id: this.d.hardwareId,
          host_public_key: this.d.identity.publicJwk,
          hostname: this.d.hostname,
          agent_version: this.d.agentVersion,
          proof: signHostProof(this.d.identity.privateKey, { aud: AUD_ACTIVATION_PROOF, hwid: this.d.hardwareId }),
        });
        const now = new Date().toISOString();
        const claims = await this.adopt({ ...bundle, server_url: this.d.server.baseUrl, activated_at: now, last_refresh_at: now });
        this.d.log.info('activated', { machine_id: bundle.machine_id, tier: claims.tier, license_id: claims.license_id });
        return claims;
      } catch (e) {
        this.state = previous;
        if (e instanceof ServerError) this.lastError = { code: e.code, message: e.message };
        this.d.log.warn('activation failed', { code: (e as AgentError).code, message: (e as Error).message });
        throw e;
      }
    });
  }

  /** Verifies, caches and applies a token bundle from the server. */
  private async adopt(cache: LicenseCache): Promise<LicenseClaims> {
    const verdict = await verifyLicenseOffline(cache.license_token, cache.jwks as JSONWebKeySet, {
      hardwareId: this.d.hardwareId,
      hostKeyThumbprint: this.d.identity.thumbprint,
      agentVersion: this.d.agentVersion,
    });
    if (!verdict.ok) {
      // The server sent a license this host cannot verify: never trust it.
      throw new AgentError('SERVER_REFUSED', `server returned a license that does not verify here: ${verdict.message}`, { status: 502 });
    }
    await this.d.store.write(LICENSE_CACHE, cache);
    this.cache = cache;
    this.claims = verdict.claims;
    this.lastError = null;
    this.attempt = 0;
    this.retrying = false;
    await this.writeKernelToken(cache.kernel_token);
    this.set('licensed', `${verdict.claims.tier} license ${verdict.claims.license_id}`);
    this.armExpiry();
    this.scheduleByHalfLife();
    return verdict.claims;
  }

  deactivate(): Promise<{ machine_id: string }> {
    return this.serial(async () => {
      const cache = this.cache;
      if (!cache) throw new AgentError('NOT_ACTIVATED', 'this host has no activated license', { status: 409 });
      try {
        await this.d.server.deactivate(cache.machine_id, signHostProof(this.d.identity.privateKey, { aud: AUD_DEACTIVATION_PROOF, hwid: this.d.hardwareId }));
      } catch (e) {
        // Already gone on the server: finish locally.
        if (!(e instanceof ServerError && (e.code === 'NOT_FOUND' || e.code === 'MACHINE_DEACTIVATED'))) throw e;
      }
      await this.dropLicense('deactivated by operator');
      return { machine_id: cache.machine_id };
    });
  }

  private async dropLicense(reason: string): Promise<void> {
    this.clearTimers();
    this.d.store.remove(LICENSE_CACHE);
    this.cache = null;
    this.claims = null;
    await this.removeKernelToken();
    this.set('community', reason);
  }

  refreshNow(): Promise<void> {
    return this.serial(() => this.refreshOnce());
  }

  private async refreshOnce(): Promise<void> {
    const cache = this.cache;
    if (!cache) return;
    try {
      const bundle = await this.d.server.refresh(
        cache.machine_id,
        signHostProof(this.d.identity.privateKey, { aud: AUD_REFRESH_PROOF, hwid: this.d.hardwareId }),
      );
      await this.adopt({ ...bundle, server_url: cache.server_url, activated_at: cache.activated_at, last_refresh_at: new Date().toISOString() });
      this.d.log.info('kernel token refreshed', { expires_at: bundle.kernel_token_expires_at });
    } catch (e) {
      const err = e as AgentError;
      this.lastError = { code: String(err.code), message: err.message };
      if (e instanceof ServerError && e.final) {
        // Revoked, expired, deactivated or unknown: retrying cannot help. Say why and stop.
        this.retrying = false;
        this.d.log.error('license ended by the server; not retrying', { code: e.code, message: e.message });
        await this.dropLicense(`${e.code}: ${e.message}`);
        return;
      }
      this.retrying = true;
      const delay = Math.max(backoffDelay(this.attempt++, this.d.backoff ?? DEFAULT_BACKOFF), e instanceof ServerError ? (e.retryAfterMs ?? 0) : 0);
      this.d.log.warn('refresh failed; will retry', { code: err.code, message: err.message, attempt: this.attempt, retry_in_ms: delay });
      this.schedule(delay);
    }
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.nextRefreshAt = new Date(Date.now() + delayMs);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.refreshNow().catch((e: unknown) => this.d.log.error('refresh crashed', { error: (e as Error).message }));
    }, delayMs);
    this.timer.unref();
  }

  /** Next refresh at half the kernel token's remaining lifetime since issue. */
  private scheduleByHalfLife(): void {
    const kt = this.cache ? decodeUnverified(this.cache.kernel_token) : null;
    const iat = Number(kt?.claims.iat);
    const exp = Number(kt?.claims.exp);
    if (!Number.isFinite(iat) || !Number.isFinite(exp)) {
      this.schedule(0);
      return;
    }
    const at = ((iat + exp) / 2) * 1000;
    this.schedule(Math.max(0, at - Date.now()));
  }

  /** A subscription that runs out while the server is unreachable still ends on time. */
  private armExpiry(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    const exp = this.claims?.exp;
    if (typeof exp !== 'number') return;
    const ms = exp * 1000 - Date.now();
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = null;
      void this.serial(async () => {
        this.claims = null;
        await this.removeKernelToken();
        this.set('community', 'license expired');
      });
    }, Math.min(Math.max(0, ms), 2 ** 31 - 1));
    this.expiryTimer.unref();
  }

  /**
   * Writes the kernel token atomically to token_path, or to <state>/auth.token when that
   * directory is not writable (and says so), then pokes the kernel module to re-read it.
   */
  private async writeKernelToken(token: string): Promise<void> {
    let target = this.d.tokenPath;
    try {
      mkdirSync(dirname(target), { recursive: true, mode: 0o755 });
      await writeFileAtomic(target, token, { mode: 0o600 });
      this.tokenFallback = false;
    } catch (e) {
      target = join(this.d.store.dir, 'auth.token');
      this.d.log.warn('token path not writable; using the state directory', { wanted: this.d.tokenPath, using: target, error: (e as Error).message });
      await writeFileAtomic(target, token, { mode: 0o600 });
      this.tokenFallback = true;
    }
    this.tokenWrittenTo = target;
    this.pokeKernelModule();
  }

  private async removeKernelToken(): Promise<void> {
    for (const p of [this.d.tokenPath, join(this.d.store.dir, 'auth.token')]) rmSync(p, { force: true });
    this.tokenWrittenTo = null;
    this.pokeKernelModule();
  }

  private pokeKernelModule(): void {
    if (!existsSync(this.d.kmodReloadPath)) return;
    try {
      writeFileSync(this.d.kmodReloadPath, '1\n');
      this.d.log.debug('kernel module reload triggered', { path: this.d.kmodReloadPath });
    } catch (e) {
      this.d.log.warn('could not trigger kernel module reload', { path: this.d.kmodReloadPath, error: (e as Error).message });
    }
  }

  /** The kernel module's verdict, when it is loaded. */
  kmodStatus(): string | null {
    const p = join(dirname(this.d.kmodReloadPath), 'status');
    try {
      return readFileSync(p, 'utf8').trim();
    } catch {
      return null;
    }
  }

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.timer = null;
    this.expiryTimer = null;
    this.nextRefreshAt = null;
  }

  stop(): void {
    this.stopped = true;
    this.clearTimers();
  }
}
