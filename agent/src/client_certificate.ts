/**
 * This host's client certificate for the mTLS agent listener: a CSR for the host key goes
 * with activation and renewal, the certificate the server answers with is cached in
 * <state>/mtls.json (with the CA it chains to) and handed to the ServerLink, and a new
 * one is asked for at half its lifetime. The CA pinned by configuration (ca_cert_path)
 * wins over the one the server sent, so a server cannot choose whom the agent trusts.
 * Without ca_cert_path but with the server's keys pinned, the CA is adopted only under
 * the server's signature (ca_certificate_signature, audience aegis-ca) by a trusted key;
 * otherwise it is refused (logged) and the agent stays on the plain link. With neither,
 * the CA in the answer is trusted on first use.
 */
import { decodeProtectedHeader } from 'jose';
import { AUD_CA_CERTIFICATE, CA_SIGNATURE_TYP, certificateThumbprint, type TokenBundle } from '../../protocol/src/index.js';
import type { HostIdentity } from './host_identity.js';
import type { JwksCache } from './jwks_cache.js';
import type { Logger } from './logger.js';
import type { ServerLink } from './server_link.js';
import type { StateStore } from './state_store.js';

/** csr.ts and @peculiar/x509 (a quarter of the agent's import time), loaded when first needed. */
const x509 = (): Promise<typeof import('./csr.js')> => import('./csr.js');

/** The client certificate for the mTLS agent listener and the CA it pins. */
export const MTLS_FILE = 'mtls.json';

interface CertificateRecord {
  client_certificate: string;
  ca_certificate: string;
  /** The server's signature over the CA, when it sent one. */
  ca_certificate_signature?: string;
  serial: string;
  /** When this host received it: the server back-dates notBefore for clock skew, so half-life counts from here. */
  received_at: string;
  expires_at: string;
}

function checkCertificate(v: unknown): string | null {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'not an object';
  for (const k of ['client_certificate', 'ca_certificate', 'serial', 'received_at', 'expires_at']) {
    if (typeof (v as Record<string, unknown>)[k] !== 'string') return `missing ${k}`;
  }
  return null;
}

export interface ClientCertificateDeps {
  store: StateStore;
  log: Logger;
  identity: HostIdentity;
  hostname: string;
  link: ServerLink;
  /** A CA pinned by configuration (ca_cert_path); otherwise the one the server sent at activation. */
  pinnedCa?: string | null;
  /** The server's keys: with pins, the CA the server sent must carry its signature by a trusted key. */
  jwks?: JwksCache | null;
}

/** The host's mTLS client certificate: cached, renewed at half-life, handed to the link. */
export class ClientCertificate {
  private cert: CertificateRecord | null = null;

  constructor(private readonly d: ClientCertificateDeps) {}

  /** The certificate in use, for status. */
  get current(): { serial: string; expires_at: string } | null {
    return this.cert ? { serial: this.cert.serial, expires_at: this.cert.expires_at } : null;
  }

  /**
   * Reads the cached certificate (no network); `use` also hands it to the link. With keys
   * pinned, a cached CA without a valid server signature (adopted on first use before the
   * pins) is dropped.
   */
  async restore(use: boolean): Promise<void> {
    this.cert = this.d.store.read<CertificateRecord>(MTLS_FILE, checkCertificate);
    if (this.cert) {
      const why = await this.caRefusal(this.cert.ca_certificate, this.cert.ca_certificate_signature);
      if (why) {
        this.d.log.error(`dropped the cached CA certificate: ${why}; mTLS stays off until the server sends a CA signed by a trusted key`);
        this.d.store.remove(MTLS_FILE);
        this.cert = null;
      }
    }
    if (use) this.apply();
  }

  /**
   * Why the CA the server sent is not to be adopted, or null. Only with the server's keys
   * pinned and no ca_cert_path: then it must carry the server's signature over its
   * thumbprint, by a key this host trusts.
   */
  private async caRefusal(ca: string, signature: string | undefined): Promise<string | null> {
    if (this.d.pinnedCa || !this.d.jwks?.pinned) return null;
    if (!signature) return 'it carries no signature (ca_certificate_signature) and the server keys are pinned';
    try {
      const header = decodeProtectedHeader(signature);
      if (header.typ !== CA_SIGNATURE_TYP) return `its signature is not a CA signature (typ ${String(header.typ)})`;
      const claims = await this.d.jwks.verify(signature, { fetch: false });
      if (claims.aud !== AUD_CA_CERTIFICATE) return `its signature has audience ${String(claims.aud)}, not ${AUD_CA_CERTIFICATE}`;
      if (claims['x5t#S256'] !== certificateThumbprint(ca)) return 'the certificate does not match the thumbprint the server signed';
      return null;
    } catch (e) {
      return `its signature does not verify against a trusted server key (${(e as Error).message})`;
    }
  }

  /** Hands a current certificate to the link; an expired one is kept only for renewal by host proof. */
  private apply(): void {
    if (!this.d.link.mtls || !this.cert) return;
    if (Date.parse(this.cert.expires_at) <= Date.now()) {
      this.d.link.dropCertificate();
      return;
    }
    this.d.link.useCertificate(
      { certificate: this.cert.client_certificate, ca: this.d.pinnedCa ?? this.cert.ca_certificate, privateKey: this.d.identity.privateKey },
      this.cert.serial,
    );
  }

  /** Caches and uses the certificate of an activation or refresh answer, if it carries one. */
  async adopt(bundle: TokenBundle): Promise<void> {
    if (!bundle.client_certificate || !bundle.ca_certificate) return;
    const refusal = await this.caRefusal(bundle.ca_certificate, bundle.ca_certificate_signature);
    if (refusal) {
      this.d.log.error(
        `refused the CA certificate in the server's answer: ${refusal}. mTLS is not used with it (the plain link stays in use); pin the CA with ca_cert_path or check what sits between this host and the server`,
        { serial_offered: (await x509()).certificateValidity(bundle.client_certificate)?.serial ?? null },
      );
      return;
    }
    const v = (await x509()).certificateValidity(bundle.client_certificate);
    if (!v) {
      this.d.log.warn('server sent a client certificate that does not parse; ignoring it');
      return;
    }
    this.cert = {
      client_certificate: bundle.client_certificate,
      ca_certificate: bundle.ca_certificate,
      ...(bundle.ca_certificate_signature ? { ca_certificate_signature: bundle.ca_certificate_signature } : {}),
      serial: v.serial,
      received_at: new Date(Math.max(Date.now(), v.notBefore.getTime())).toISOString(),
      expires_at: v.notAfter.toISOString(),
    };
    await this.d.store.write(MTLS_FILE, this.cert);
    this.apply();
    this.d.log.info('client certificate installed', { serial: v.serial, expires_at: this.cert.expires_at });
  }

  /** When a new certificate is due: half its lifetime, now when there is none, never without an agent listener. */
  renewalAt(): number | null {
    if (!this.d.link.mtls) return null;
    if (!this.cert) return Date.now();
    return (Date.parse(this.cert.received_at) + Date.parse(this.cert.expires_at)) / 2;
  }

  /** A certificate request for the host key; undefined (logged) when one cannot be made. */
  async request(): Promise<string | undefined> {
    try {
      return await (await x509()).createHostCsr(this.d.identity.privateKey, this.d.hostname);
    } catch (e) {
      this.d.log.warn('could not create a certificate request', { error: (e as Error).message });
      return undefined;
    }
  }

  /** A certificate request when renewal is due, else undefined. */
  async requestIfDue(): Promise<string | undefined> {
    const at = this.renewalAt();
    return at !== null && at <= Date.now() ? this.request() : undefined;
  }

  /** The seat is gone: forget the certificate, on disk and on the link. */
  drop(): void {
    this.d.store.remove(MTLS_FILE);
    this.cert = null;
    this.d.link.dropCertificate();
  }
}
