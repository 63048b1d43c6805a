/**
 * Throwaway X.509 material for tests that need TLS: a CA and leaf certificates it signs
 * (ECDSA P-256, which Go's TLS in nats-server and Node's both take), written as PEM files.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;

export interface TestCa {
  /** The CA certificate's PEM file. */
  caFile: string;
  /** Issues a leaf certificate; returns its PEM files. */
  issue(opts: { cn: string; dns?: string[]; ips?: string[]; client?: boolean }): Promise<{ certFile: string; keyFile: string }>;
  /** Deletes the files. */
  cleanup(): void;
}

function pemKey(pkcs8: ArrayBuffer): string {
  const b64 = Buffer.from(pkcs8).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN PRIVATE KEY-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END PRIVATE KEY-----\n`;
}

let serial = 1;
function nextSerial(): string {
  return (0x1000 + serial++).toString(16);
}

/** Makes a CA named `name` in a fresh temp directory. */
export async function makeTestCa(name = 'Aegis Test CA'): Promise<TestCa> {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-tls-'));
  const caKeys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: nextSerial(),
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 30 * DAY),
    signingAlgorithm: ALG,
    keys: caKeys,
    extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true)],
  });
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.toString('pem') + '\n');
  let n = 0;
  return {
    caFile,
    async issue(opts) {
      const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      const san = [...(opts.dns ?? []).map((value) => ({ type: 'dns' as const, value })), ...(opts.ips ?? []).map((value) => ({ type: 'ip' as const, value }))];
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: nextSerial(),
        subject: `CN=${opts.cn}`,
        issuer: ca.subject,
        notBefore: new Date(Date.now() - DAY),
        notAfter: new Date(Date.now() + 7 * DAY),
        signingAlgorithm: ALG,
        publicKey: keys.publicKey,
        signingKey: caKeys.privateKey,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
          new x509.ExtendedKeyUsageExtension([opts.client ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth]),
          ...(san.length ? [new x509.SubjectAlternativeNameExtension(san)] : []),
        ],
      });
      n += 1;
      const certFile = join(dir, `leaf-${n}.pem`);
      const keyFile = join(dir, `leaf-${n}.key`);
      writeFileSync(certFile, cert.toString('pem') + '\n');
      writeFileSync(keyFile, pemKey(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), { mode: 0o600 });
      return { certFile, keyFile };
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
