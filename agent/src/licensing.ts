/**
 * The agent's license lifecycle:
 *
 *   restore()   cached license + JWKS verified offline at every start (no network)
 *   activate()  license key → server → tokens cached, kernel token written
 *   refresh     at half the kernel token's lifetime; retryable failures back off with
 *               jitter, final answers (revoked, expired, deactivated...) end the license
 *   community   without a valid license: observe-only policy, no kernel token
 *
 * Every transition emits 'change' so the daemon can re-derive datapath modes. The server
 * is reached through the ServerLink; the client certificate (ClientCertificate) and the
 * kernel module's token file (KernelToken) follow the license but are kept elsewhere.
 */
import { EventEmitter } from 'node:events';
import type { JSONWebKeySet } from 'jose';
import {
  AUD_ACTIVATION_PROOF,
  AUD_DEACTIVATION_PROOF,
  AUD_HEARTBEAT_PROOF,
  AUD_REFRESH_PROOF,
  normalizeLicenseKey,
  fingerprintComponents,
  fingerprintSalt,
  signHostProof,
  backoffDelay,
  DEFAULT_BACKOFF,
  type BackoffPolicy,
  type CanonicalFacts,
  type HostEnvironment,
  type Feature,
  type LicenseClaims,
  type TokenBundle,
  AUD_KERNEL,
  OFFLINE_FILE_MAX_BYTES,
  OFFLINE_LICENSE_FORMAT,
  OFFLINE_RELEASE_FORMAT,
  OFFLINE_RELEASE_TYP,
  OFFLINE_REQUEST_FORMAT,
  OFFLINE_REQUEST_TYP,
  TOKEN_ALG,
  isEd25519PublicJwk,
  jwkThumbprint,
  newOfflineNonce,
  signOfflineJws,
  type OfflineActivationClaims,
  type OfflineReleaseClaims,
  type OfflineSignedFile,
} from '../../protocol/src/index.js';
import { compactVerify, createLocalJWKSet, type JWK } from 'jose';
import type { ClientCertificate } from './client_certificate.js';
import type { ClockGuard } from './clock_guard.js';
import { AgentError } from './errors.js';
import type { HostIdentity } from './host_identity.js';
import type { KernelToken } from './kernel_token.js';
import type { Logger } from './logger.js';
import { verifyLicenseOffline, decodeUnverified } from './license_verifier.js';
import { JWKS_FILE, type JwksCache } from './jwks_cache.js';
import { ServerError } from './server_error.js';
import type { ServerLink } from './server_link.js';
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
/** A copy of the last offline release this host signed (aegisctl deactivate --offline), in case its output was lost. */
export const OFFLINE_RELEASE_FILE = 'offline-release.json';

interface MachineRecord {
  machine_id: string;
  server_url: string;
  activated_at: string;
  /** The license's fingerprint salt (derived from its key at activation): refreshes send components under it. */
  fingerprint_salt?: string;
  /** Installed from an offline license file (aegisctl install-license), not activated online. */
  offline?: boolean;
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

/** `grace`: the license (or this host's token) expired, within its grace period: licensed features stay on until graceEndsAt. */
export type LicenseState = 'licensed' | 'grace' | 'community' | 'activating';

export interface LicenseDeps {
  store: StateStore;
  log: Logger;
  link: ServerLink;
  identity: HostIdentity;
  hardwareId: string;
  /** This host's canonical hardware facts: the named fingerprint components are computed from them. */
  facts: CanonicalFacts;
  environment: HostEnvironment;
  hostname: string;
  agentVersion: string;
  /** The mTLS client certificate: asked for with activation and renewed with refreshes. */
  certificate: ClientCertificate;
  /** The kernel module's copy of the kernel token. */
  kernelToken: KernelToken;
  /** Admits the keys a token bundle brings (only trusted ones when anchors are pinned). */
  jwks: JwksCache;
  /** The clock license validity is judged by (never behind what this host already saw). */
  clock: ClockGuard;
  backoff?: BackoffPolicy;
}

/** This host's license: restored offline, activated, refreshed at half-life, ended on a final answer. */
export class LicenseManager extends EventEmitter {
  state: LicenseState = 'community';
  reason = 'no license activated';
  claims: LicenseClaims | null = null;
  private machine: MachineRecord | null = null;
  private tokens: TokenRecord | null = null;
  private jwks: JSONWebKeySet | null = null;
  lastError: { code: string; message: string } | null = null;
  retrying = false;
  nextRefreshAt: Date | null = null;
  private timer: NodeJS.Timeout | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private stopped = false;
  /** While in grace: when it ends (then community). */
  graceEndsAt: Date | null = null;
  private graceTimer: NodeJS.Timeout | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private heartbeatSeq = 0;
  lastHeartbeatAt: string | null = null;
  /** Serialises activate/refresh/deactivate: one conversation with the server at a time. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly d: LicenseDeps) {
    super();
  }

  get machineId(): string | null {
    return this.machine?.machine_id ?? null;
  }

  get features(): Feature[] {
    return this.state === 'licensed' || this.state === 'grace' ? (this.claims?.features ?? []) : [];
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
      this.d.log.info(state === 'licensed' ? 'licensed' : state === 'grace' ? `license in grace: ${reason}` : `running as community edition: ${reason}`, {
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
    await this.d.certificate.restore(this.machine !== null);
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
      now: this.d.clock.effectiveNow(),
    });
    if (verdict.ok) await this.d.clock.observeIat(verdict.claims.iat, 'license token');
    if (!verdict.ok) {
      this.claims = null;
      this.lastError = { code: verdict.code, message: verdict.message };
      this.d.log.warn('cached license does not verify', { code: verdict.code, reason: verdict.message });
      await this.d.kernelToken.remove();
      this.set('community', `cached license invalid: ${verdict.message}`);
      // The server may have renewed it, or rotated keys: ask.
      this.schedule(0);
      return;
    }
    this.claims = verdict.claims;
    if (verdict.graceEndsAt) {
      // Expired while this host was off or out of contact, within the grace period.
      this.enterGrace(verdict.graceEndsAt);
      this.schedule(0);
    } else {
      this.set('licensed', `${verdict.claims.tier} license ${verdict.claims.license_id}`);
      this.armExpiry();
    }
    this.armHeartbeats();
    // Put the cached kernel token back in place if it is still valid (a reboot may have
    // lost it); a stale one is replaced by the first refresh.
    if (Date.parse(this.tokens.kernel_token_expires_at) > this.d.clock.effectiveNow().getTime()) await this.d.kernelToken.write(this.tokens.kernel_token);
    if (!verdict.graceEndsAt) this.scheduleByHalfLife();
  }

  activate(licenseKey: string): Promise<LicenseClaims> {
    return this.serial(async () => {
      const key = normalizeLicenseKey(licenseKey);
      if (key === null) throw new AgentError('BAD_REQUEST', 'that is not a license key (AEGIS-XXXXX-XXXXX-XXXXX-XXXXX)', { status: 400 });
      const previous = this.state;
      this.state = 'activating';
      try {
        const salt = fingerprintSalt(key);
        const bundle = await this.d.link.activate({
          license_key: key,
          hardware_id: this.d.hardwareId,
          components: fingerprintComponents(this.d.facts, salt),
          environment: this.d.environment,
          host_public_key: this.d.identity.publicJwk,
          hostname: this.d.hostname,
          agent_version: this.d.agentVersion,
          proof: signHostProof(this.d.identity.privateKey, { aud: AUD_ACTIVATION_PROOF, hwid: this.d.hardwareId }),
          ...(await this.d.certificate.request().then((csr) => (csr ? { csr } : {}))),
        });
        const now = new Date().toISOString();
        const claims = await this.adopt(bundle, { machine_id: bundle.machine_id, server_url: this.d.link.serverUrl, activated_at: now, fingerprint_salt: salt });
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

  /**
   * An offline activation request for `licenseKey` (aegisctl activate --offline): what an
   * online activation sends, without proof or CSR, with a nonce and iat, signed by the
   * host key. Nothing changes on this host until the license file comes back.
   */
  offlineRequest(licenseKey: string): OfflineSignedFile {
    const key = normalizeLicenseKey(licenseKey);
    if (key === null) throw new AgentError('BAD_REQUEST', 'that is not a license key (AEGIS-XXXXX-XXXXX-XXXXX-XXXXX)', { status: 400 });
    const claims: OfflineActivationClaims = {
      license_key: key,
      hardware_id: this.d.hardwareId,
      components: fingerprintComponents(this.d.facts, fingerprintSalt(key)),
      environment: this.d.environment,
      host_public_key: this.d.identity.publicJwk,
      hostname: this.d.hostname,
      agent_version: this.d.agentVersion,
      nonce: newOfflineNonce(),
      iat: Math.floor(this.d.clock.effectiveNow().getTime() / 1000),
    };
    this.d.log.info('wrote an offline activation request', { nonce: claims.nonce, hardware_id: claims.hardware_id });
    return { format: OFFLINE_REQUEST_FORMAT, jws: signOfflineJws(this.d.identity.privateKey, OFFLINE_REQUEST_TYP, claims) };
  }

  /**
   * Installs a license file from an offline activation (aegisctl install-license), with no
   * network: its tokens must verify with a key this host already trusts (a pinned trust
   * anchor, or with no anchors a key of the cached JWKS; never a key the file itself
   * brings), and be bound to this host (hardware id, host key). Anything else is refused
   * before a byte of the state changes, so the previous license stays as it was.
   */
  installOffline(file: unknown): Promise<LicenseClaims> {
    return this.serial(async () => {
      const refuse = (code: string, message: string, status = 400): never => {
        this.d.log.warn('refused an offline license file', { code, reason: message });
        throw new AgentError(code, `license file refused: ${message}`, { status });
      };
      if (JSON.stringify(file ?? null).length > OFFLINE_FILE_MAX_BYTES) refuse('LICENSE_FILE_INVALID', `larger than ${OFFLINE_FILE_MAX_BYTES} bytes`, 413);
      const f = file as Record<string, unknown> | null;
      if (f === null || typeof f !== 'object' || Array.isArray(f)) refuse('LICENSE_FILE_INVALID', 'not a JSON object');
      if (f!.format !== OFFLINE_LICENSE_FORMAT) refuse('LICENSE_FILE_INVALID', `format must be ${OFFLINE_LICENSE_FORMAT}`);
      const b = f!.bundle as Record<string, unknown> | null;
      if (b === null || typeof b !== 'object' || Array.isArray(b)) refuse('LICENSE_FILE_INVALID', 'bundle must be an object');
      for (const k of ['machine_id', 'license_token', 'kernel_token', 'kernel_token_expires_at']) {
        if (typeof b![k] !== 'string') refuse('LICENSE_FILE_INVALID', `bundle.${k} must be a string`);
      }
      const offered = b!.jwks as JSONWebKeySet | undefined;
      if (!offered || !Array.isArray(offered.keys)) refuse('LICENSE_FILE_INVALID', 'bundle.jwks must be a key set');
      const bundle = b as unknown as TokenBundle;
      const jwks = await this.trustedKeysFor(offered!);
      if (jwks.keys.length === 0) {
        refuse('UNTRUSTED_KEY', 'it is signed by no key this host trusts: pin the server key first (aegisctl trust add, trusted_keys or trusted_jwks_path)', 403);
      }
      const verdict = await verifyLicenseOffline(bundle.license_token, jwks, {
        hardwareId: this.d.hardwareId,
        hostKeyThumbprint: this.d.identity.thumbprint,
        agentVersion: this.d.agentVersion,
        now: this.d.clock.effectiveNow(),
      });
      if (!verdict.ok) refuse(verdict.code === 'HWID_MISMATCH' || verdict.code === 'HOST_KEY_MISMATCH' ? 'NOT_THIS_HOST' : 'LICENSE_FILE_INVALID', verdict.message);
      const claims = (verdict as { claims: LicenseClaims }).claims;
      if (claims.sub !== bundle.machine_id || f!.machine_id !== bundle.machine_id) refuse('LICENSE_FILE_INVALID', 'machine_id does not match the license token');
      // The kernel token goes to the kernel module as is: it must be the server's too, for this machine.
      try {
        const { payload } = await compactVerify(bundle.kernel_token, createLocalJWKSet(jwks), { algorithms: [TOKEN_ALG] });
        const k = JSON.parse(Buffer.from(payload).toString('utf8')) as Record<string, unknown>;
        if (k.aud !== AUD_KERNEL || k.sub !== bundle.machine_id || k.hwid !== this.d.hardwareId) refuse('NOT_THIS_HOST', 'the kernel token is not for this machine');
      } catch (e) {
        if (e instanceof AgentError) throw e;
        refuse('LICENSE_FILE_INVALID', `kernel token does not verify (${(e as Error).message})`);
      }
      const adopted = await this.adopt(
        bundle,
        { machine_id: bundle.machine_id, server_url: this.d.link.serverUrl, activated_at: new Date().toISOString(), offline: true },
        jwks,
      );
      this.d.log.info('installed an offline license file', { machine_id: bundle.machine_id, tier: adopted.tier, license_id: adopted.license_id });
      return adopted;
    });
  }

  /** The keys of `offered` this host trusts without the network: pinned anchors, or (no anchors) keys it already cached. */
  private async trustedKeysFor(offered: JSONWebKeySet): Promise<JSONWebKeySet> {
    const tp = (k: JWK) => (isEd25519PublicJwk(k) ? jwkThumbprint(k) : null);
    if (this.d.jwks.pinned) {
      try {
        return await this.d.jwks.admit(offered, 'offline license file');
      } catch {
        return { keys: [] };
      }
    }
    const known = new Set((this.d.jwks.current()?.keys ?? []).map(tp).filter((t): t is string => t !== null));
    return { keys: offered.keys.filter((k) => known.has(tp(k) ?? '')) };
  }

  /**
   * Offline deactivation (aegisctl deactivate --offline): signs a release of this seat with
   * the host key and drops the license here at once; the operator submits the release so
   * the server frees the seat. A copy is kept in the state dir.
   */
  offlineRelease(): Promise<OfflineSignedFile & { machine_id: string }> {
    return this.serial(async () => {
      const machine = this.machine;
      if (!machine) throw new AgentError('NOT_ACTIVATED', 'this host has no activated license', { status: 409 });
      const claims: OfflineReleaseClaims = {
        machine_id: machine.machine_id,
        hardware_id: this.d.hardwareId,
        host_key_thumbprint: this.d.identity.thumbprint,
        nonce: newOfflineNonce(),
        iat: Math.floor(this.d.clock.effectiveNow().getTime() / 1000),
      };
      const release: OfflineSignedFile = { format: OFFLINE_RELEASE_FORMAT, jws: signOfflineJws(this.d.identity.privateKey, OFFLINE_RELEASE_TYP, claims) };
      await this.d.store.write(OFFLINE_RELEASE_FILE, release);
      await this.dropLicense('released offline (submit the release file: aegisctl offline-deactivate)');
      this.d.log.info('released this seat offline', { machine_id: machine.machine_id, nonce: claims.nonce });
      return { ...release, machine_id: machine.machine_id };
    });
  }

  /** Verifies, caches and applies a token bundle from the server (`trusted`: keys already admitted). */
  private async adopt(bundle: TokenBundle, machine: MachineRecord, trusted?: JSONWebKeySet): Promise<LicenseClaims> {
    const jwks: JSONWebKeySet = trusted ?? (await this.d.jwks.admit(bundle.jwks as JSONWebKeySet, 'activation or refresh answer'));
    const verdict = await verifyLicenseOffline(bundle.license_token, jwks, {
      hardwareId: this.d.hardwareId,
      hostKeyThumbprint: this.d.identity.thumbprint,
      agentVersion: this.d.agentVersion,
      now: this.d.clock.effectiveNow(),
    });
    if (verdict.ok) await this.d.clock.observeIat(verdict.claims.iat, 'license token');
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
      await this.d.store.writeText(NATS_CREDS_FILE, bundle.nats.creds);
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
    await this.d.certificate.adopt(bundle);
    await this.d.kernelToken.write(tokens.kernel_token);
    this.clearGrace();
    this.set('licensed', `${verdict.claims.tier} license ${verdict.claims.license_id}`);
    this.armExpiry();
    this.armHeartbeats();
    this.scheduleByHalfLife();
    return verdict.claims;
  }

  deactivate(): Promise<{ machine_id: string }> {
    return this.serial(async () => {
      const machine = this.machine;
      if (!machine) throw new AgentError('NOT_ACTIVATED', 'this host has no activated license', { status: 409 });
      try {
        await this.d.link.deactivate(machine.machine_id, signHostProof(this.d.identity.privateKey, { aud: AUD_DEACTIVATION_PROOF, hwid: this.d.hardwareId }));
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
    for (const f of [LICENSE_FILE, MACHINE_FILE, JWKS_FILE, NATS_CREDS_FILE]) this.d.store.remove(f);
    this.d.certificate.drop();
    this.machine = null;
    this.tokens = null;
    this.jwks = null;
    this.claims = null;
    await this.d.kernelToken.remove();
    this.set('community', reason);
  }

  refreshNow(): Promise<void> {
    return this.serial(() => this.refreshOnce());
  }

  private async refreshOnce(): Promise<void> {
    const machine = this.machine;
    if (!machine) return;
    try {
      const csr = await this.d.certificate.requestIfDue();
      // Over mTLS when the certificate is current; the host-proof refresh otherwise gives
      // the authoritative answer (and renews a lapsed certificate).
      const bundle = await this.d.link.refresh(
        machine.machine_id,
        () => signHostProof(this.d.identity.privateKey, { aud: AUD_REFRESH_PROOF, hwid: this.d.hardwareId }),
        csr,
        // The host's hardware now: a machine whose NIC or disk was replaced keeps its seat
        // when its components still match under the license's strategy.
        {
          hardware_id: this.d.hardwareId,
          environment: this.d.environment,
          ...(machine.fingerprint_salt ? { components: fingerprintComponents(this.d.facts, machine.fingerprint_salt) } : {}),
        },
      );
      await this.adopt(bundle, machine);
      this.d.log.info('kernel token refreshed', { expires_at: bundle.kernel_token_expires_at });
    } catch (e) {
      const err = e as AgentError;
      this.lastError = { code: String(err.code), message: err.message };
      if (e instanceof ServerError && e.endsLicense && e.code === 'LICENSE_EXPIRED' && this.state === 'grace') {
        // Expired, as this host already knows: the grace period runs on. Ask again now and
        // then (the license may be renewed); the grace timer ends it.
        this.retrying = true;
        this.d.log.warn('license expired; in grace until its end', { grace_ends_at: this.graceEndsAt?.toISOString() });
        this.schedule(Math.min(backoffDelay(this.attempt++, this.d.backoff ?? DEFAULT_BACKOFF), 300_000));
        return;
      }
      if (e instanceof ServerError && e.endsLicense) {
        // The server's own word that the license or seat is over: retrying cannot help. Say
        // why and stop. Anything else (a proxy's 403, a refused proof, a 5xx) is retried.
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
    const certAt = this.d.certificate.renewalAt();
    if (certAt !== null) at = Math.min(at, certAt);
    this.schedule(Math.max(0, at - Date.now()));
  }

  /**
   * The license token's exp ends the license here on time even while the server is
   * unreachable: a subscription that runs out, and a perpetual license's token (its exp
   * bounds how long a host runs offline on it). Either way a refresh is asked for at once:
   * for a perpetual license the server renews the token while the seat is held, and its
   * final answer (revoked, deactivated, expired) ends the seat here.
   */
  private armExpiry(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    const exp = this.claims?.exp;
    if (typeof exp !== 'number') return;
    const ms = exp * 1000 - this.d.clock.effectiveNow().getTime();
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = null;
      void this.serial(async () => {
        const perpetual = this.claims?.license_type === 'perpetual';
        const exp = this.claims?.exp;
        const grace = this.claims?.grace_seconds;
        if (typeof exp === 'number' && typeof grace === 'number' && grace > 0 && this.d.clock.effectiveNow().getTime() < (exp + grace) * 1000) {
          // Within the grace period: licensed features stay on until it ends.
          this.enterGrace(new Date((exp + grace) * 1000));
          this.schedule(0);
          return;
        }
        this.claims = null;
        await this.d.kernelToken.remove();
        this.set('community', perpetual ? 'license token expired; refreshing it from the server' : 'license expired');
        this.schedule(0);
      });
    }, Math.min(Math.max(0, ms), 2 ** 31 - 1));
    this.expiryTimer.unref();
  }

  /** Grace: licensed features stay on (claims kept, kernel token left in place) until `until`, then community. */
  private enterGrace(until: Date): void {
    this.graceEndsAt = until;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    const ms = until.getTime() - this.d.clock.effectiveNow().getTime();
    this.graceTimer = setTimeout(() => {
      this.graceTimer = null;
      void this.serial(async () => {
        if (this.state !== 'grace') return;
        this.graceEndsAt = null;
        this.claims = null;
        await this.d.kernelToken.remove();
        this.set('community', 'license expired; its grace period ended');
      });
    }, Math.min(Math.max(0, ms), 2 ** 31 - 1));
    this.graceTimer.unref();
    this.set('grace', `license expired; in its grace period until ${until.toISOString()}`);
  }

  private clearGrace(): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    this.graceEndsAt = null;
  }

  /**
   * Heartbeats when the license asks for them (`heartbeat_interval_seconds` or a floating
   * lease in the token): every half interval (or half lease), each proof signed with the
   * host key and a seq that only grows (milliseconds, never below the last one sent).
   */
  private armHeartbeats(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    const interval = this.claims?.heartbeat_interval_seconds;
    const lease = this.claims?.lease_ttl_seconds;
    const every = Math.min(typeof interval === 'number' ? interval : Infinity, typeof lease === 'number' ? lease : Infinity);
    if (!Number.isFinite(every) || this.stopped) return;
    const beat = () => void this.heartbeatOnce();
    this.heartbeatTimer = setInterval(beat, Math.max(1000, (every * 1000) / 2));
    this.heartbeatTimer.unref();
    beat();
  }

  private async heartbeatOnce(): Promise<void> {
    const machine = this.machine;
    if (!machine) return;
    this.heartbeatSeq = Math.max(this.heartbeatSeq + 1, Date.now());
    try {
      await this.d.link.heartbeat(machine.machine_id, signHostProof(this.d.identity.privateKey, { aud: AUD_HEARTBEAT_PROOF, hwid: this.d.hardwareId, seq: this.heartbeatSeq }));
      this.lastHeartbeatAt = new Date().toISOString();
    } catch (e) {
      this.d.log.warn('heartbeat failed', { code: (e as AgentError).code, reason: (e as Error).message });
      if (e instanceof ServerError && e.code === 'MACHINE_DEACTIVATED') this.refreshNow().catch(() => undefined);
    }
  }

  /** What a host-key proof needs, once this host holds a seat (the HTTP fallback uses it). */
  proofMaterial(): { privateKey: HostIdentity['privateKey']; hardwareId: string } | null {
    return this.machine ? { privateKey: this.d.identity.privateKey, hardwareId: this.d.hardwareId } : null;
  }

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.clearGrace();
    this.timer = null;
    this.expiryTimer = null;
    this.nextRefreshAt = null;
  }

  stop(): void {
    this.stopped = true;
    this.clearTimers();
  }
}
