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
  backoffDelay,
  DEFAULT_BACKOFF,
  type BackoffPolicy,
  type Feature,
  type LicenseClaims,
} from '../../protocol/src/index.js';
import { writeFileAtomic } from './datapath/index.js';
import { AgentError } from './errors.js';
import type { HostIdentity } from './host_identity.js';
import type { Logger } from './logger.js';
import { verifyLicenseOffline, decodeUnverified } from './license_verifier.js';
import { JWKS_FILE } from './jwks_cache.js';
import { ServerError, type ServerClient, type TokenBundle } from './server_client.js';
import { AGENT_API } from '../../protocol/src/agent_access.js';
import type { AgentChannel } from './agent_channel.js';
import { certificateValidity, createHostCsr } from './csr.js';
import type { StateStore } from './state_store.js';

/**
 * The cache is three files, so damage to one costs only that one: machine.json (which
 * seat this host holds: enough to re-fetch everything else with a host-key proof),
 * license.json (the tokens) and jwks.json (the keys that verify them offline).
 */
export const MACHINE_FILE = 'machine.json';
/** NATS credentials issued at activation (a .creds file). */
export const NATS_CREDS_FILE = 'nats.creds';
export const LICENSE_FILE = 'license.json';
/** The client certificate for the mTLS agent listener and the CA it pins (issue 7). */
export const MTLS_FILE = 'mtls.json';

interface CertificateRecord {
  client_certificate: string;
  ca_certificate: string;
  serial: string;
  /** When this host received it: the server back-dates notBefore for clock skew, so half-life counts from here. */
  received_at: string;
  expires_at: string;
}
const checkCertificate = (v: unknown) => checkFields(v, ['client_certificate', 'ca_certificate', 'serial', 'received_at', 'expires_at']);

interface MachineRecord {
  machine_id: string;
  server_url: string;
  activated_at: string;
}

interface TokenRecord {
  license_token: string;
  kernel_token: string;
  kernel_token_expires_at: string;
  license_expires_at: string | null;
  last_refresh_at: string;
}

function checkFields(v: unknown, fields: string[]): string | null {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'not an object';
  for (const k of fields) if (typeof (v as Record<string, unknown>)[k] !== 'string') return `missing ${k}`;
  return null;
}

const checkMachine = (v: unknown) => checkFields(v, ['machine_id', 'server_url', 'activated_at']);
const checkTokens = (v: unknown) => checkFields(v, ['license_token', 'kernel_token', 'kernel_token_expires_at', 'last_refresh_at']);
const checkJwks = (v: unknown) =>
  v !== null && typeof v === 'object' && Array.isArray((v as { keys?: unknown }).keys) && (v as { keys: unknown[] }).keys.length > 0
    ? null
    : 'not a JWKS';

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
  /** The mTLS channel to the agent listener (agent_server_url), if configured. */
  channel?: AgentChannel | null;
  /** A CA pinned by configuration (ca_cert_path); otherwise the one the server sent at activation. */
  pinnedCa?: string | null;
}

export class LicenseManager extends EventEmitter {
  state: LicenseState = 'community';
  reason = 'no license activated';
  claims: LicenseClaims | null = null;
  private machine: MachineRecord | null = null;
  private tokens: TokenRecord | null = null;
  private jwks: JSONWebKeySet | null = null;
  private cert: CertificateRecord | null = null;
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
    return this.machine?.machine_id ?? null;
  }

  get features(): Feature[] {
    return this.state === 'licensed' ? (this.claims?.features ?? []) : [];
  }

  get kernelTokenExpiresAt(): string | null {
    return this.tokens?.kernel_token_expires_at ?? null;
  }

  get lastRefreshAt(): string | null {
    return this.tokens?.last_refresh_at ?? null;
  }

  get kernelToken(): string | null {
    return this.tokens?.kernel_token ?? null;
  }

  /** The mTLS channel to the agent listener, when configured. */
  get channel(): AgentChannel | null {
    return this.d.channel ?? null;
  }

  /** The client certificate in use on the mTLS channel, for status. */
  get certificate(): { serial: string; expires_at: string } | null {
    return this.cert ? { serial: this.cert.serial, expires_at: this.cert.expires_at } : null;
  }

  /** Hands a current certificate to the channel; an expired one is kept only for renewal by host proof. */
  private applyCertificate(): void {
    const ch = this.d.channel;
    if (!ch || !this.cert) return;
    if (Date.parse(this.cert.expires_at) <= Date.now()) {
      ch.clear();
      return;
    }
    ch.setCredentials({ certificate: this.cert.client_certificate, ca: this.d.pinnedCa ?? this.cert.ca_certificate, privateKey: this.d.identity.privateKey }, this.cert.serial);
  }

  private async adoptCertificate(bundle: TokenBundle): Promise<void> {
    if (!bundle.client_certificate || !bundle.ca_certificate) return;
    const v = certificateValidity(bundle.client_certificate);
    if (!v) {
      this.d.log.warn('server sent a client certificate that does not parse; ignoring it');
      return;
    }
    this.cert = {
      client_certificate: bundle.client_certificate,
      ca_certificate: bundle.ca_certificate,
      serial: v.serial,
      received_at: new Date(Math.max(Date.now(), v.notBefore.getTime())).toISOString(),
      expires_at: v.notAfter.toISOString(),
    };
    await this.d.store.write(MTLS_FILE, this.cert);
    this.applyCertificate();
    this.d.log.info('client certificate installed', { serial: v.serial, expires_at: this.cert.expires_at });
  }

  /** A new certificate is asked for at half its lifetime (or when there is none). */
  private certRenewalAt(): number | null {
    if (!this.d.channel) return null;
    if (!this.cert) return Date.now();
    return (Date.parse(this.cert.received_at) + Date.parse(this.cert.expires_at)) / 2;
  }

  private async csr(): Promise<string | undefined> {
    try {
      return await createHostCsr(this.d.identity.privateKey, this.d.hostname);
    } catch (e) {
      this.d.log.warn('could not create a certificate request', { error: (e as Error).message });
      return undefined;
    }
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
    const store = this.d.store;
    this.machine = store.read<MachineRecord>(MACHINE_FILE, checkMachine);
    this.tokens = store.read<TokenRecord>(LICENSE_FILE, checkTokens);
    this.jwks = store.read<JSONWebKeySet>(JWKS_FILE, checkJwks);
    this.cert = store.read<CertificateRecord>(MTLS_FILE, checkCertificate);
    if (this.machine) this.applyCertificate();
    if (!this.machine) {
      this.tokens = null;
      this.set('community', 'no license activated');
      return;
    }
    if (!this.tokens || !this.jwks) {
      // The seat is known but its tokens or keys were lost: fetch them again.
      this.set('community', 'license cache incomplete; re-fetching from the server');
      this.schedule(0);
      return;
    }
    const verdict = await verifyLicenseOffline(this.tokens.license_token, this.jwks, {
      hardwareId: this.d.hardwareId,
      hostKeyThumbprint: this.d.identity.thumbprint,
      agentVersion: this.d.agentVersion,
    });
    if (!verdict.ok) {
      this.claims = null;
      this.lastError = { code: verdict.code, message: verdict.message };
      this.d.log.warn('cached license does not verify', { code: verdict.code, reason: verdict.message });
      await this.removeKernelToken();
      this.set('community', `cached license invalid: ${verdict.message}`);
      // The server may have renewed it, or rotated keys: ask.
      this.schedule(0);
      return;
    }
    this.claims = verdict.claims;
    this.set('licensed', `${verdict.claims.tier} license ${verdict.claims.license_id}`);
    this.armExpiry();
    // Put the cached kernel token back in place if it is still valid (a reboot may have
    // lost it); a stale one is replaced by the first refresh.
    if (Date.parse(this.tokens.kernel_token_expires_at) > Date.now()) await this.writeKernelToken(this.tokens.kernel_token);
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
          ...(await this.csr().then((csr) => (csr ? { csr } : {}))),
        });
        const now = new Date().toISOString();
        const claims = await this.adopt(bundle, { machine_id: bundle.machine_id, server_url: this.d.server.baseUrl, activated_at: now });
        this.d.log.info('activated', { machine_id: bundle.machine_id, tier: claims.tier, license_id: claims.license_id });
        return claims;
      } catch (e) {
        this.state = previous;
        if (e instanceof ServerError) this.lastError = { code: e.code, message: e.message };
        this.d.log.warn('activation failed', { code: (e as AgentError).code, reason: (e as Error).message });
        throw e;
      }
    });
  }

  /** Verifies, caches and applies a token bundle from the server. */
  private async adopt(bundle: TokenBundle, machine: MachineRecord): Promise<LicenseClaims> {
    const jwks = bundle.jwks as JSONWebKeySet;
    const verdict = await verifyLicenseOffline(bundle.license_token, jwks, {
      hardwareId: this.d.hardwareId,
      hostKeyThumbprint: this.d.identity.thumbprint,
      agentVersion: this.d.agentVersion,
    });
    if (!verdict.ok) {
      // The server sent a license this host cannot verify: never trust it.
      throw new AgentError('SERVER_REFUSED', `server returned a license that does not verify here: ${verdict.message}`, { status: 502 });
    }
    const tokens: TokenRecord = {
      license_token: bundle.license_token,
      kernel_token: bundle.kernel_token,
      kernel_token_expires_at: bundle.kernel_token_expires_at,
      license_expires_at: bundle.license_expires_at,
      last_refresh_at: new Date().toISOString(),
    };
    if (bundle.nats?.creds) {
      // A secret: 0600 in the state dir. The daemon (re)connects NATS with it.
      await writeFileAtomic(this.d.store.path(NATS_CREDS_FILE), bundle.nats.creds, { mode: 0o600 });
      this.emit('nats-credentials');
    }
    await this.d.store.write(MACHINE_FILE, machine);
    await this.d.store.write(JWKS_FILE, jwks);
    await this.d.store.write(LICENSE_FILE, tokens);
    this.machine = machine;
    this.tokens = tokens;
    this.jwks = jwks;
    this.claims = verdict.claims;
    this.lastError = null;
    this.attempt = 0;
    this.retrying = false;
    await this.adoptCertificate(bundle);
    await this.writeKernelToken(tokens.kernel_token);
    this.set('licensed', `${verdict.claims.tier} license ${verdict.claims.license_id}`);
    this.armExpiry();
    this.scheduleByHalfLife();
    return verdict.claims;
  }

  deactivate(): Promise<{ machine_id: string }> {
    return this.serial(async () => {
      const machine = this.machine;
      if (!machine) throw new AgentError('NOT_ACTIVATED', 'this host has no activated license', { status: 409 });
      try {
        await this.d.server.deactivate(machine.machine_id, signHostProof(this.d.identity.privateKey, { aud: AUD_DEACTIVATION_PROOF, hwid: this.d.hardwareId }));
      } catch (e) {
        // Already gone on the server: finish locally.
        if (!(e instanceof ServerError && (e.code === 'NOT_FOUND' || e.code === 'MACHINE_DEACTIVATED'))) throw e;
      }
      await this.dropLicense('deactivated by operator');
      return { machine_id: machine.machine_id };
    });
  }

  private async dropLicense(reason: string): Promise<void> {
    this.clearTimers();
    for (const f of [LICENSE_FILE, MACHINE_FILE, JWKS_FILE, MTLS_FILE, NATS_CREDS_FILE]) this.d.store.remove(f);
    this.cert = null;
    this.d.channel?.clear();
    this.machine = null;
    this.tokens = null;
    this.jwks = null;
    this.claims = null;
    await this.removeKernelToken();
    this.set('community', reason);
  }

  refreshNow(): Promise<void> {
    return this.serial(() => this.refreshOnce());
  }

  private async refreshOnce(): Promise<void> {
    const machine = this.machine;
    if (!machine) return;
    try {
      const renewAt = this.certRenewalAt();
      const csr = renewAt !== null && renewAt <= Date.now() ? await this.csr() : undefined;
      let bundle: TokenBundle | null = null;
      if (this.d.channel?.ready) {
        try {
          bundle = await this.d.channel.call<TokenBundle>('license:refresh', 'POST', AGENT_API.refresh, csr ? { csr } : {});
        } catch (e) {
          // The host-proof refresh gives the authoritative answer (and renews a lapsed certificate).
          this.d.log.warn('refresh over mTLS failed; using the host-proof refresh', { code: (e as AgentError).code, reason: (e as Error).message });
        }
      }
      bundle ??= await this.d.server.refresh(
        machine.machine_id,
        signHostProof(this.d.identity.privateKey, { aud: AUD_REFRESH_PROOF, hwid: this.d.hardwareId }),
        csr,
      );
      await this.adopt(bundle, machine);
      this.d.log.info('kernel token refreshed', { expires_at: bundle.kernel_token_expires_at });
    } catch (e) {
      const err = e as AgentError;
      this.lastError = { code: String(err.code), message: err.message };
      if (e instanceof ServerError && e.final) {
        // Revoked, expired, deactivated or unknown: retrying cannot help. Say why and stop.
        this.retrying = false;
        this.d.log.error('license ended by the server; not retrying', { code: e.code, reason: e.message });
        await this.dropLicense(`${e.code}: ${e.message}`);
        return;
      }
      this.retrying = true;
      const delay = Math.max(backoffDelay(this.attempt++, this.d.backoff ?? DEFAULT_BACKOFF), e instanceof ServerError ? (e.retryAfterMs ?? 0) : 0);
      this.d.log.warn('refresh failed; will retry', { code: err.code, reason: err.message, attempt: this.attempt, retry_in_ms: delay });
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
    const kt = this.tokens ? decodeUnverified(this.tokens.kernel_token) : null;
    const iat = Number(kt?.claims.iat);
    const exp = Number(kt?.claims.exp);
    if (!Number.isFinite(iat) || !Number.isFinite(exp)) {
      this.schedule(0);
      return;
    }
    let at = ((iat + exp) / 2) * 1000;
    const certAt = this.certRenewalAt();
    if (certAt !== null) at = Math.min(at, certAt);
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
      // Only the last directory is created (/etc/aegis): a recursive mkdir into a
      // pseudo-filesystem such as /proc can spin forever in Node instead of failing.
      if (!existsSync(dirname(target))) mkdirSync(dirname(target), { mode: 0o755 });
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

  /** What a host-key proof needs, once this host holds a seat (the HTTP fallback uses it). */
  proofMaterial(): { privateKey: HostIdentity['privateKey']; hardwareId: string } | null {
    return this.machine ? { privateKey: this.d.identity.privateKey, hardwareId: this.d.hardwareId } : null;
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
