/**
 * The Aegis PKI: an Ed25519 certificate authority (Node's TLS 1.3 accepts Ed25519
 * certificates on both ends), the agent-facing listener's server certificate, and
 * short-lived client certificates for machines, issued from a CSR signed by the host's
 * own Ed25519 key, so the certificate binds the same identity the seat is bound to.
 *
 * Files in the PKI directory (keys 0600, written atomically):
 *   ca.crt ca.key server.crt server.key pki.json ({trust_domain})
 */
import { createHash, createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { AegisError, ValidationError, type Ed25519PublicJwk } from '../../../protocol/src/index.js';
import { writeFileAtomic } from '../../../runtime/src/atomic_file.js';
import type { SecretStore } from '../keys/keyring.js';
import { ED25519, subtle, x509, type CryptoKey, type CryptoKeyPair } from './x509.js';

import { DEFAULT_TRUST_DOMAIN, PKI_CA, PKI_KIND } from './names.js';
export { DEFAULT_TRUST_DOMAIN, PKI_CA, PKI_KIND } from './names.js';
export const CA_VALIDITY_DAYS = 3650;
export const SERVER_CERT_VALIDITY_DAYS = 397;
const TRUST_DOMAIN_PATTERN = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;
const MAX_CSR_LENGTH = 8192;

export interface PkiPaths {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  meta: string;
}

export function pkiPaths(dir: string): PkiPaths {
  return {
    dir,
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    meta: join(dir, 'pki.json'),
  };
}

export interface PkiInitOptions {
  trustDomain?: string;
  /** DNS names for the server certificate (default localhost). */
  dnsNames?: string[];
  /** IP addresses for the server certificate (default 127.0.0.1). */
  ips?: string[];
  /** Replace existing files (otherwise an existing CA is refused). */
  force?: boolean;
}

export interface PkiInitResult {
  paths: PkiPaths;
  trustDomain: string;
  caFingerprint: string;
  serverSans: string[];
}

/** 16 random bytes, top bit clear and first byte non-zero: a positive DER integer that no tool prints with a leading zero. */
function newSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x10;
  return b.toString('hex').toUpperCase();
}

function pemOfPkcs8(der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`;
}

/** base64url(SHA-256(DER)): RFC 8705's x5t#S256 of a certificate. */
export function certThumbprint(der: Uint8Array | ArrayBuffer): string {
  return createHash('sha256').update(Buffer.from(der instanceof ArrayBuffer ? new Uint8Array(der) : der)).digest('base64url');
}

export function spiffeIdOf(trustDomain: string, machineId: string): string {
  return `spiffe://${trustDomain}/machine/${machineId}`;
}

function checkKeyFile(path: string): void {
  const mode = statSync(path).mode;
  if ((mode & 0o077) !== 0) {
    throw new AegisError(
      'INSECURE_KEY_FILE',
      `private key ${path} has mode ${(mode & 0o777).toString(8)}; it must not be readable by group or others (chmod 600 ${path})`,
    );
  }
}

async function cryptoKeyPair(): Promise<CryptoKeyPair> {
  return (await subtle.generateKey(ED25519, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function importPrivate(pem: string): Promise<CryptoKey> {
  const der = createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' });
  return subtle.importKey('pkcs8', der, ED25519, false, ['sign']) as Promise<CryptoKey>;
}

/** Creates the CA and the server certificate. Refuses to overwrite an existing CA unless `force`. */
export async function initPki(dir: string, opts: PkiInitOptions = {}): Promise<PkiInitResult> {
  const trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  if (!TRUST_DOMAIN_PATTERN.test(trustDomain)) {
    throw new AegisError('BAD_REQUEST', `trust domain ${JSON.stringify(trustDomain)} must be a lower-case DNS-like name (e.g. aegis.local)`);
  }
  const ips = opts.ips ?? ['127.0.0.1'];
  for (const ip of ips) if (isIP(ip) === 0) throw new AegisError('BAD_REQUEST', `${JSON.stringify(ip)} is not an IP address`);
  const dnsNames = opts.dnsNames ?? ['localhost'];
  const paths = pkiPaths(dir);
  if (existsSync(paths.caKey) && !opts.force) {
    throw new AegisError('CONFLICT', `a CA already exists in ${dir}; use --force to replace it (every issued certificate stops verifying)`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const now = Date.now();
  const caKeys = await cryptoKeyPair();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: newSerial(),
    name: `CN=Aegis CA (${trustDomain}), O=Aegis`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + CA_VALIDITY_DAYS * 86_400_000),
    keys: caKeys,
    signingAlgorithm: ED25519,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const serverKeys = await cryptoKeyPair();
  const sans: x509.JsonGeneralName[] = [...dnsNames.map((v) => ({ type: 'dns' as const, value: v })), ...ips.map((v) => ({ type: 'ip' as const, value: v }))];
  const server = await x509.X509CertificateGenerator.create({
    serialNumber: newSerial(),
    subject: `CN=${dnsNames[0] ?? ips[0] ?? 'aegis-server'}, O=Aegis`,
    issuer: ca.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + SERVER_CERT_VALIDITY_DAYS * 86_400_000),
    signingKey: caKeys.privateKey,
    publicKey: serverKeys.publicKey,
    signingAlgorithm: ED25519,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension(sans, false),
      await x509.AuthorityKeyIdentifierExtension.create(ca, false),
    ],
  });
  // Keys first, certificates after: a crash in between leaves no certificate without its key.
  writeFileAtomic(paths.caKey, pemOfPkcs8((await subtle.exportKey('pkcs8', caKeys.privateKey)) as ArrayBuffer), 0o600);
  writeFileAtomic(paths.serverKey, pemOfPkcs8((await subtle.exportKey('pkcs8', serverKeys.privateKey)) as ArrayBuffer), 0o600);
  writeFileAtomic(paths.caCert, ca.toString('pem') + '\n', 0o644);
  writeFileAtomic(paths.serverCert, server.toString('pem') + '\n', 0o644);
  writeFileAtomic(paths.meta, JSON.stringify({ trust_domain: trustDomain }, null, 2) + '\n', 0o644);
  return {
    paths,
    trustDomain,
    caFingerprint: certThumbprint(ca.rawData),
    serverSans: sans.map((s) => `${s.type}:${s.value}`),
  };
}

export interface IssuedCertificate {
  serial: string;
  pem: string;
  /** RFC 8705 x5t#S256 of the certificate. */
  thumbprint: string;
  notBefore: Date;
  notAfter: Date;
  spiffeId: string;
}

/** Loaded CA material: signs machine certificates. */
export class CertificateAuthority {
  private constructor(
    readonly paths: PkiPaths,
    readonly trustDomain: string,
    readonly caPem: string,
    private readonly ca: x509.X509Certificate,
    private readonly caKey: CryptoKey,
  ) {}

  /** Opens the CA in `dir`; null when there is none (PKI not initialised). */
  static async open(dir: string, secrets: SecretStore | null = null): Promise<CertificateAuthority | null> {
    const paths = pkiPaths(dir);
    // With a database keyring the CA key (and its certificate) live sealed in it; a CA
    // still in files is imported once (then remove ca.key: see docs/operations.md).
    let stored = secrets ? await secrets.get(PKI_KIND, PKI_CA) : null;
    if (!stored) {
      if (!existsSync(paths.caKey) || !existsSync(paths.caCert)) return null;
      checkKeyFile(paths.caKey);
      if (secrets) stored = await secrets.putIfAbsent(PKI_KIND, PKI_CA, readFileSync(paths.caKey), readFileSync(paths.caCert, 'utf8'));
    }
    let trustDomain = DEFAULT_TRUST_DOMAIN;
    if (existsSync(paths.meta)) {
      const meta = JSON.parse(readFileSync(paths.meta, 'utf8')) as { trust_domain?: unknown };
      if (typeof meta.trust_domain === 'string' && TRUST_DOMAIN_PATTERN.test(meta.trust_domain)) trustDomain = meta.trust_domain;
    }
    const caPem = stored?.public ?? readFileSync(paths.caCert, 'utf8');
    const ca = new x509.X509Certificate(caPem);
    const caKey = await importPrivate(stored ? stored.secret.toString('utf8') : readFileSync(paths.caKey, 'utf8'));
    return new CertificateAuthority(paths, trustDomain, caPem.trim() + '\n', ca, caKey);
  }

  /**
   * Checks a PKCS#10 request: its own signature, and that its key is the machine's host
   * key. Returns the key to certify.
   */
  async verifyCsr(csrPem: unknown, hostKey: Ed25519PublicJwk): Promise<CryptoKey> {
    const bad = (message: string) => new ValidationError([{ path: '/csr', message }], `csr rejected: ${message}`);
    if (typeof csrPem !== 'string' || csrPem.length > MAX_CSR_LENGTH) throw bad('must be a PEM PKCS#10 request');
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(csrPem);
    } catch {
      throw bad('not a PEM PKCS#10 certificate request');
    }
    let verified = false;
    try {
      verified = await csr.verify();
    } catch {
      verified = false;
    }
    if (!verified) throw bad('its signature does not verify (it must be signed by the host key)');
    let csrKey: KeyObject;
    try {
      csrKey = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
    } catch {
      throw bad('its public key cannot be read');
    }
    if (csrKey.asymmetricKeyType !== 'ed25519' || !sameKey(csrKey, hostKey)) throw bad("its public key is not this machine's host key");
    return (await subtle.importKey('spki', Buffer.from(csr.publicKey.rawData), ED25519, true, ['verify'])) as CryptoKey;
  }

  /** A client certificate naming the machine by its SPIFFE id (URI SAN), for clientAuth only. */
  async issueForMachine(publicKey: CryptoKey, machineId: string, notAfter: Date, now = new Date()): Promise<IssuedCertificate> {
    const spiffeId = spiffeIdOf(this.trustDomain, machineId);
    const serial = newSerial();
    const notBefore = new Date(now.getTime() - 60_000);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: `CN=${machineId}, O=Aegis`,
      issuer: this.ca.subject,
      notBefore,
      notAfter,
      signingKey: this.caKey,
      publicKey,
      signingAlgorithm: ED25519,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true),
        await x509.AuthorityKeyIdentifierExtension.create(this.ca, false),
      ],
    });
    return { serial, pem: cert.toString('pem') + '\n', thumbprint: certThumbprint(cert.rawData), notBefore, notAfter, spiffeId };
  }
}

function sameKey(key: KeyObject, jwk: Ed25519PublicJwk): boolean {
  const x = (key.export({ format: 'jwk' }) as { x?: string }).x;
  return typeof x === 'string' && x === jwk.x;
}

/** The machine id in a SPIFFE id of this trust domain, or null. */
export function machineIdOfSpiffe(spiffeId: string, trustDomain: string): string | null {
  const prefix = `spiffe://${trustDomain}/machine/`;
  if (!spiffeId.startsWith(prefix)) return null;
  const id = spiffeId.slice(prefix.length);
  return /^[A-Za-z0-9-]{1,64}$/.test(id) ? id : null;
}
