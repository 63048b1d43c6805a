/**
 * The one module that loads @peculiar/x509 (which needs reflect-metadata first) and
 * points it at Node's WebCrypto. Everything else in pki/ imports x509 from here.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
export const subtle = webcrypto.subtle;
export const ED25519 = { name: 'Ed25519' } as const;
export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;
