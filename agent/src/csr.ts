/**
 * The agent's certificate requests: a PKCS#10 CSR signed by the host's own Ed25519 key,
 * so the client certificate the server issues binds the identity the seat is bound to.
 * The only agent module that loads @peculiar/x509 (which needs reflect-metadata first).
 */
import 'reflect-metadata';
import { createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
const ED25519 = { name: 'Ed25519' } as const;

/** A PEM CSR for `privateKey` (Ed25519), subject CN=`commonName`. */
export async function createHostCsr(privateKey: KeyObject, commonName: string): Promise<string> {
  const priv = await webcrypto.subtle.importKey('pkcs8', privateKey.export({ type: 'pkcs8', format: 'der' }), ED25519, false, ['sign']);
  const pub = await webcrypto.subtle.importKey('spki', createPublicKey(privateKey).export({ type: 'spki', format: 'der' }), ED25519, true, ['verify']);
  const cn = commonName.replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 64) || 'aegis-host';
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${cn}`, keys: { privateKey: priv, publicKey: pub }, signingAlgorithm: ED25519 });
  return csr.toString('pem');
}

/** notBefore/notAfter of a PEM certificate, or null when it does not parse. */
export function certificateValidity(pem: string): { notBefore: Date; notAfter: Date; serial: string } | null {
  try {
    const c = new x509.X509Certificate(pem);
    return { notBefore: c.notBefore, notAfter: c.notAfter, serial: c.serialNumber.toUpperCase() };
  } catch {
    return null;
  }
}
