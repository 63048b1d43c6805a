/**
 * Client certificates for machines, as activation and refresh hand them out: verify the
 * CSR against the machine's host key, issue a short-lived certificate (never past the
 * license's expiry), and record it so the agent listener can check its serial. The CA
 * goes out with a signature by the server's signing key over its thumbprint.
 */
import type { CertificateFields, Ed25519PublicJwk } from '../../../protocol/src/index.js';
import type { Clock } from '../clock.js';
import type { CertificateAuthority } from './authority.js';
import type { MachineCertificates } from './machine_certs.js';
import type { TokenService } from '../tokens.js';
import type { CryptoKey } from './x509.js';

/** A public key a CSR proved, ready to certify. */
export type CertifiableKey = CryptoKey;

export const DEFAULT_CLIENT_CERT_TTL_SECONDS = 24 * 3600;

export class CertificateIssuer {
  constructor(
    readonly ca: CertificateAuthority,
    readonly records: MachineCertificates,
    private readonly clock: Clock,
    readonly ttlSeconds = DEFAULT_CLIENT_CERT_TTL_SECONDS,
    /** Signs the CA handed out, so agents that pin the server's keys can check it. */
    private readonly tokens: TokenService | null = null,
  ) {}

  /** Checks a CSR before any state changes (so a bad CSR never half-activates a machine). */
  verify(csr: unknown, hostKey: Ed25519PublicJwk): Promise<CryptoKey> {
    return this.ca.verifyCsr(csr, hostKey);
  }

  /** Issues and records a certificate for `machineId`; without a key, only the CA is returned. */
  async issue(machineId: string, key: CryptoKey | null, licenseExpiresAt: string | null): Promise<CertificateFields> {
    const base: CertificateFields = {
      ca_certificate: this.ca.caPem,
      ...(this.tokens ? { ca_certificate_signature: await this.tokens.signCaCertificate(this.ca.caPem, this.ca.trustDomain) } : {}),
      trust_domain: this.ca.trustDomain,
    };
    if (!key) return base;
    const now = this.clock.now();
    let notAfter = now.getTime() + this.ttlSeconds * 1000;
    if (licenseExpiresAt !== null) notAfter = Math.min(notAfter, Date.parse(licenseExpiresAt));
    const cert = await this.ca.issueForMachine(key, machineId, new Date(notAfter), now);
    await this.records.record(machineId, cert);
    return {
      ...base,
      client_certificate: cert.pem,
      client_certificate_serial: cert.serial,
      client_certificate_expires_at: cert.notAfter.toISOString(),
      spiffe_id: cert.spiffeId,
    };
  }
}
